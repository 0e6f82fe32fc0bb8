"""GET /cameras: the state of every ingest camera (connected, FPS in/out, drops, last error, last NG), the
database as the circuit breaker sees it, the journal and the storage (per camera and the data folder);
answers while the database is away."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.schemas import IngestStatusPublic
from app.storage_health import HEALTH

router = APIRouter(tags=["cameras"])


@router.get("/cameras", response_model=IngestStatusPublic, response_model_exclude_unset=True,
            summary="Camera ingest state, one entry per camera, with its storage")
def list_cameras(service: ServiceDep) -> IngestStatusPublic:
    storage = HEALTH.snapshot(service.settings.data_dir)
    mqtt = {} if service.mqtt is None else {"mqtt": service.mqtt.view()}
    if service.pipeline is None:
        writer = service.writer
        journal = None if writer is None else {"pending": writer.journal.pending,
                                               "bytes": writer.journal.bytes, "replayed": writer.replayed}
        return IngestStatusPublic.model_validate({"running": False, "reason": service.ingest_error,
                                                  "cameras": [], "database": service.db.breaker.view(),
                                                  "journal": journal, "storage": storage} | mqtt)
    snapshot = service.pipeline.snapshot()
    usage = service.pruner.usage if service.pruner is not None else {}
    for cam in snapshot["cameras"]:
        cam["storage"] = camera_storage(usage.get(cam["id"]), HEALTH.skipped[cam["id"]])
    return IngestStatusPublic.model_validate({"running": True, "reason": None, "storage": storage} | snapshot
                                             | mqtt)


def camera_storage(usage: dict[str, dict[str, int]] | None, skipped: int) -> dict[str, int]:
    """A camera's files and bytes per kind (the pruner's last count) and its skipped images."""
    frame, crop = (usage or {}).get("frame", {}), (usage or {}).get("crop", {})
    return {"frames": frame.get("files", 0), "frame_bytes": frame.get("bytes", 0),
            "crops": crop.get("files", 0), "crop_bytes": crop.get("bytes", 0), "images_skipped": skipped}
