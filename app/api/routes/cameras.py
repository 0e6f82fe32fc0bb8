"""GET /cameras: the state of every ingest camera (connected, FPS in/out, drops, last error, last NG)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.schemas import IngestStatusPublic

router = APIRouter(tags=["cameras"])


@router.get("/cameras", response_model=IngestStatusPublic, response_model_exclude_unset=True,
            summary="Camera ingest state, one entry per camera")
def list_cameras(service: ServiceDep) -> IngestStatusPublic:
    if service.pipeline is None:
        return IngestStatusPublic(running=False, reason=service.ingest_error, cameras=[])
    return IngestStatusPublic.model_validate({"running": True, "reason": None} | service.pipeline.snapshot())
