"""GET /model: the detector in use."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import EngineDep
from app.api.schemas import ModelOut

router = APIRouter(tags=["model"])


@router.get("/model", response_model=ModelOut, summary="The loaded detector and its providers")
def read_model(engine: EngineDep) -> ModelOut:
    return ModelOut(**engine.info())
