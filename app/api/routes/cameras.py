"""GET /cameras: the state of every ingest camera (connected, FPS in/out, drops, last error, last NG, the
part under it), the database as the circuit breaker sees it, the journal and the storage (per camera
and the data folder); answers while the database is away. PUT and DELETE /cameras/{id}/part: the line
says which part is under a camera, and when it ended (app.ingest.parts)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.api.openapi import problem_responses
from app.api.params import NamePath
from app.api.security import PrincipalDep
from app.errors import NotFound
from app.ingest.parts import PartBoard
from app.schemas import IngestStatusPublic
from app.schemas.ingest import CameraPartSet, CameraPartState
from app.service import Service
from app.storage_health import HEALTH

router = APIRouter(tags=["cameras"])
part_router = APIRouter(tags=["cameras"])
PART_PROBLEMS = problem_responses(404, 422, s404="no such camera runs in this process",
                                  s422="not a part id (1 to 128 characters, no control characters)")


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


def part_board(service: Service) -> PartBoard:
    if service.pipeline is None:
        raise NotFound("no cameras run in this process" + (f": {service.ingest_error}"
                                                           if service.ingest_error else ""))
    return service.pipeline.parts


@part_router.put("/cameras/{camera_id}/part", response_model=CameraPartState, responses=PART_PROBLEMS,
                 summary="The part now under a camera: its frames carry it, its defects are placed from its "
                         "start")
def set_camera_part(camera_id: NamePath, body: CameraPartSet, service: ServiceDep,
                    principal: PrincipalDep) -> CameraPartState:
    view = part_board(service).set(camera_id, body.part_id, by=f"api:{principal.name}", via="api")
    return CameraPartState.model_validate({"camera_id": camera_id,
                                           "part": None if view is None else view.to_dict()})


@part_router.delete("/cameras/{camera_id}/part", response_model=CameraPartState, responses=PART_PROBLEMS,
                    summary="The camera's part ended: its next frames carry no part")
def end_camera_part(camera_id: NamePath, service: ServiceDep, principal: PrincipalDep) -> CameraPartState:
    part_board(service).set(camera_id, None, by=f"api:{principal.name}", via="api")
    return CameraPartState(camera_id=camera_id, part=None)
