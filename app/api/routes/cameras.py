"""GET /cameras: the state of every ingest camera (connected, FPS in/out, drops, last error, last NG)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(tags=["cameras"])


@router.get("/cameras", summary="Camera ingest state, one entry per camera")
def list_cameras(request: Request) -> dict[str, Any]:
    pipeline = getattr(request.app.state, "ingest", None)
    if pipeline is None:
        return {"running": False, "reason": getattr(request.app.state, "ingest_error", None),
                "cameras": []}
    return {"running": True, "reason": None} | pipeline.snapshot()
