"""GET /model: the detector in use."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import EngineDep
from app.api.openapi import problem_responses
from app.schemas import ModelInfoPublic

router = APIRouter(tags=["model"])


@router.get("/model", response_model=ModelInfoPublic, summary="The loaded detector and its providers",
            responses=problem_responses(503, s503="no model loaded"))
def read_model(engine: EngineDep) -> ModelInfoPublic:
    return ModelInfoPublic(**engine.info())
