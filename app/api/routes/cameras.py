"""GET /cameras: the state of every ingest camera (connected, FPS in/out, drops, last error, last NG)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import ServiceDep

router = APIRouter(tags=["cameras"])


@router.get("/cameras", summary="Camera ingest state, one entry per camera")
def list_cameras(service: ServiceDep) -> dict[str, Any]:
    if service.pipeline is None:
        return {"running": False, "reason": service.ingest_error, "cameras": []}
    return {"running": True, "reason": None} | service.pipeline.snapshot()
