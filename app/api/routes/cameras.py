"""GET /cameras: the state of every ingest camera (connected, FPS in/out, drops, last error, last NG), the
database as the circuit breaker sees it and the journal; answers while the database is away."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.schemas import IngestStatusPublic

router = APIRouter(tags=["cameras"])


@router.get("/cameras", response_model=IngestStatusPublic, response_model_exclude_unset=True,
            summary="Camera ingest state, one entry per camera")
def list_cameras(service: ServiceDep) -> IngestStatusPublic:
    mqtt = {} if service.mqtt is None else {"mqtt": service.mqtt.view()}
    if service.pipeline is None:
        writer = service.writer
        journal = None if writer is None else {"pending": writer.journal.pending,
                                               "bytes": writer.journal.bytes, "replayed": writer.replayed}
        return IngestStatusPublic.model_validate({"running": False, "reason": service.ingest_error,
                                                  "cameras": [], "database": service.db.breaker.view(),
                                                  "journal": journal} | mqtt)
    return IngestStatusPublic.model_validate({"running": True, "reason": None} | service.pipeline.snapshot()
                                             | mqtt)
