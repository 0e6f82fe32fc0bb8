"""GET /cameras: the state of every ingest camera (connected, FPS in/out, drops, last error, last NG)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.schemas import IngestStatusPublic

router = APIRouter(tags=["cameras"])


@router.get("/cameras", response_model=IngestStatusPublic, response_model_exclude_unset=True,
            summary="Camera ingest state, one entry per camera")
def list_cameras(request: Request) -> IngestStatusPublic:
    pipeline = getattr(request.app.state, "ingest", None)
    if pipeline is None:
        return IngestStatusPublic(running=False, reason=getattr(request.app.state, "ingest_error", None),
                                  cameras=[])
    return IngestStatusPublic.model_validate({"running": True, "reason": None} | pipeline.snapshot())
