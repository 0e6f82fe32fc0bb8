"""The operator dashboard: static files from ``app/dashboard`` served by the app itself (no CDN, no
build step). ``/`` is the page; its assets live under ``/dashboard/``. The page holds no data: every
API call it makes carries the key the operator typed in (kept in the browser's localStorage)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "dashboard"


def mount_dashboard(app: FastAPI) -> None:
    index = DASHBOARD_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    def dashboard_index() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/dashboard", include_in_schema=False)
    def dashboard_redirect() -> RedirectResponse:
        return RedirectResponse("/")

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD_DIR), name="dashboard")
