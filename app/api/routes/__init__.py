"""One module per resource; each exposes APIRouter objects that app.api includes."""
