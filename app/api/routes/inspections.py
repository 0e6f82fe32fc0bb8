"""POST /inspections (a frame in, a stored verdict out; 202 and journaled while the database is away),
GET /inspections/by-frame/{frame_uid} (the result of a posted frame, also once a journaled one is
stored) and GET /inspections/{id}[/image]."""

from __future__ import annotations

import time
from pathlib import Path as FsPath
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from app import images
from app.api.deps import EngineDep, ServiceDep, SessionDep, SettingsDep, UploadGateDep
from app.api.openapi import field_schemas, problem_responses
from app.api.params import FrameUidPath, RowId
from app.api.problems import Problem
from app.db import repository
from app.db.models import Inspection
from app.errors import DatabaseUnavailable
from app.inspection import (
    CameraContext,
    InspectionResult,
    Timings,
    default_thresholds,
    inspect_frame,
    run_detector,
)
from app.schemas import InspectionAccepted, InspectionCreate, InspectionCreated, InspectionDetail
from app.service import Service
from app.vocabulary import utcnow

upload_router = APIRouter(tags=["inspections"])
read_router = APIRouter(tags=["inspections"])
result_router = APIRouter(tags=["inspections"])  # the poster (camera role) and readers alike
PENDING_RETRY_AFTER_S = 2  # a journaled frame: when to ask for its result again

RAW_TYPES = {"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/pjpeg": "jpeg", "image/png": "png"}
MULTIPART_SLACK = 64 * 1024  # boundaries and form fields around the file
FIELDS = tuple(InspectionCreate.model_fields)  # form fields (multipart) or query parameters (raw body)
FIELD_SCHEMAS = field_schemas(InspectionCreate)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _too_large(limit: int) -> Problem:
    return Problem(413, f"the upload is larger than INSPECT_MAX_UPLOAD_MB ({limit / 1048576:g} MiB)",
                   reason="too_large")


async def _read_limited(request: Request, limit: int, shown_limit: int) -> bytes:
    """The body, refusing (413) a declared or actual size above ``limit`` before buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(shown_limit)
        except ValueError:
            raise Problem(400, "invalid Content-Length header", reason="bad_request") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(shown_limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _validate_meta(raw: dict[str, Any], where: str) -> InspectionCreate:
    try:
        return InspectionCreate(**{k: v for k, v in raw.items() if v not in (None, "")})
    except ValidationError as exc:
        errors = [{**e, "loc": (where, *e["loc"])}
                  for e in exc.errors(include_url=False, include_context=False)]
        raise RequestValidationError(errors) from None


async def _read_upload(request: Request, limit: int) -> tuple[bytes, InspectionCreate]:
    media = _media_type(request)
    if media == "multipart/form-data":
        body = await _read_limited(request, limit + MULTIPART_SLACK, limit)
        request._body = body  # starlette's form parser reads the cached body
        try:
            form = await request.form(max_files=1, max_fields=len(FIELDS) + 1)
        except MultiPartException as exc:
            raise Problem(400, f"malformed multipart body: {exc.message}", reason="bad_multipart") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise RequestValidationError([{"loc": ("body", "file"), "msg": "Field required",
                                               "type": "missing", "input": None}])
            part_type = (upload.content_type or "").split(";", 1)[0].strip().lower()
            if part_type and not (part_type.startswith("image/") or part_type == "application/octet-stream"):
                raise Problem(415, f"the file part has type {part_type!r}; send image/jpeg or image/png",
                              reason="unsupported_media_type")
            data = await upload.read()
            meta_raw = {k: v for k in FIELDS if isinstance(v := form.get(k), str) and v}  # blank: unset
        finally:
            await form.close()
        if len(data) > limit:
            raise _too_large(limit)
        return data, _validate_meta({**dict(request.query_params), **meta_raw}, "body")
    if media in RAW_TYPES:
        data = await _read_limited(request, limit, limit)
        return data, _validate_meta(dict(request.query_params), "query")
    shown = media or "no Content-Type"
    raise Problem(415, f"unsupported content type {shown!r}: send multipart/form-data with a 'file' "
                       "field, or a raw image/jpeg or image/png body", reason="unsupported_media_type")


UPLOAD_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"},
                               **FIELD_SCHEMAS}}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "parameters": [
        {"name": f, "in": "query", "required": False, "schema": FIELD_SCHEMAS[f],
         "description": "with a raw image body" + (" (ISO 8601)" if f == "captured_at" else "")
                        + (": the longer side of the model input (free-size models)" if f == "imgsz" else "")}
        for f in FIELDS
    ],
}


@upload_router.post(
    "/inspections", status_code=201, response_model=InspectionCreated, openapi_extra=UPLOAD_OPENAPI,
    summary="Inspect one frame",
    responses={200: {"description": "Replay: this frame_uid is already stored; the stored inspection",
                     "model": InspectionCreated},
               202: {"description": "The database is away: the frame is inspected and journaled on disk, "
                                    "stored once the database is back; GET `result_url` (also in the "
                                    "Location header) for the inspection", "model": InspectionAccepted},
               **problem_responses(400, 409, 413, 415, 422, 503, s400="not an image, corrupt, empty, or "
                                   "a malformed multipart body", s409="this frame_uid is stored with a "
                                   "different image", s422="a bad field, or an imgsz the model cannot "
                                   "take", s503="no model loaded; too many uploads in flight and waiting; "
                                   "the database is away and the journal is full or cannot be written; "
                                   "or the database file was deleted or replaced (with Retry-After)")},
)
async def create_inspection(request: Request, service: ServiceDep, settings: SettingsDep,
                            engine: EngineDep, gate: UploadGateDep) -> Any:
    received_at = utcnow()
    started = time.perf_counter()
    data, meta = await _read_upload(request, settings.max_upload_bytes)

    try:
        fit = engine.fit_size(meta.imgsz)
    except ValueError as exc:
        raise Problem(422, str(exc), reason="unsupported_imgsz") from None

    def inspect() -> InspectionResult:
        t0 = time.perf_counter()
        # ImageError: a 4xx problem; a large image is decoded reduced, its boxes mapped back to its pixels
        frame, info = images.decode(data, settings.max_pixels, fit)
        t1 = time.perf_counter()
        # the model's operating points, else INSPECT_CONF_THRESHOLD; the model call keeps the lowest
        thresholds = default_thresholds(engine.names, settings.conf_threshold,
                                        engine.metadata.class_thresholds)
        [dets], inference_ms, post_ms = run_detector(
            engine, [frame], min([settings.conf_threshold, *thresholds.values()]), settings.iou_threshold,
            settings.max_det, meta.imgsz)
        dets = dets.scaled(info.width / frame.shape[1], info.height / frame.shape[0])
        timings = Timings(decode_ms=(t1 - t0) * 1000, inference_ms=inference_ms, postprocess_ms=post_ms,
                          total_ms=(time.perf_counter() - started) * 1000)
        result = inspect_frame(
            frame, dets, model_version=engine.version,
            context=CameraContext(camera_id=meta.camera_id, line=meta.line, station=meta.station,
                                  class_thresholds=thresholds),
            part_id=meta.part_id, captured_at=meta.captured_at, received_at=received_at, timings=timings,
            frame_uid=meta.frame_uid, source="api", image_bytes=data,
            image_ext=images.EXTENSIONS[info.format], size=(info.width, info.height))
        result.image = None  # the upload's own bytes are stored, never the frame: freed with the slot
        return result

    async with gate.admitted():  # a bounded number decode and infer at once; beyond its queue a 503
        result = await run_in_threadpool(inspect)
    return await run_in_threadpool(store_upload, service, result)


def _accepted(frame_uid: str) -> JSONResponse:
    body = InspectionAccepted.of(frame_uid)
    return JSONResponse(body.model_dump(mode="json"), status_code=202,
                        headers={"Location": body.result_url, "Retry-After": str(PENDING_RETRY_AFTER_S)})


def store_upload(service: Service, result: InspectionResult) -> JSONResponse:
    """201 with the stored inspection (200: its frame_uid was stored before), or 202 when the database
    is away and the frame went to the journal; a 503 problem when the journal cannot take it either."""
    writer = service.writer
    if writer is None:  # only the ingest role runs without one, and it has no upload route
        raise Problem(503, "this process stores no uploads", reason="no_writer")
    stored = writer.store_now(result, service.settings.image_policy)  # JournalUnwritable: a 503
    if stored is None:
        return _accepted(result.frame_uid)
    body = InspectionCreated.of(stored.row, result.image_skipped)
    return JSONResponse(body.model_dump(mode="json"), status_code=201 if stored.created else 200)


@result_router.get(
    "/inspections/by-frame/{frame_uid}", response_model=InspectionDetail,
    summary="The inspection of a posted frame, by its frame_uid (also once a journaled frame is stored)",
    responses={202: {"description": "The frame waits in the journal for the database (Retry-After)",
                     "model": InspectionAccepted},
               **problem_responses(404, 422, 503, s404="no frame with this frame_uid was stored or is "
                                   "waiting", s503="the database is away and the frame is not waiting "
                                   "in this process's journal")})
def read_inspection_by_frame(frame_uid: FrameUidPath, service: ServiceDep) -> Any:
    writer = service.writer
    pending = writer is not None and writer.is_pending(frame_uid)
    if service.db.breaker.available():
        with service.db.session() as session:
            row = repository.get_inspections_by_uid(session, [frame_uid]).get(frame_uid)
            if row is not None:
                return JSONResponse(InspectionDetail.from_row(row).model_dump(mode="json"))
    elif not pending:
        raise DatabaseUnavailable(service.settings.db_probe_s)
    if pending:
        return _accepted(frame_uid)
    raise Problem(404, f"no inspection with frame_uid {frame_uid!r}", reason="not_found")


@read_router.get("/inspections/{inspection_id}", response_model=InspectionDetail, summary="One inspection",
                 responses=problem_responses(404, 422))
def read_inspection(inspection_id: RowId, session: SessionDep) -> InspectionDetail:
    row = repository.get_inspection(session, inspection_id)
    if row is None:
        raise Problem(404, f"inspection {inspection_id} does not exist", reason="not_found")
    return InspectionDetail.from_row(row)


def stored_image(session: Session, data_dir: FsPath, inspection_id: int) -> tuple[Inspection, FsPath]:
    """The inspection and the path of its stored frame, or a 404 problem saying which part is missing."""
    row = repository.get_inspection(session, inspection_id)
    if row is None:
        raise Problem(404, f"inspection {inspection_id} does not exist", reason="not_found")
    if not row.image_path and row.image_expired_at is not None:
        raise Problem(410, f"the image of inspection {inspection_id} expired: the retention policy deleted "
                           "it (INSPECT_RETENTION_FRAME_DAYS, INSPECT_IMAGE_STORE_MAX_GB); the row is kept",
                      reason="expired")
    if not row.image_path:
        raise Problem(404, f"inspection {inspection_id} has no stored image (INSPECT_IMAGE_POLICY)",
                      reason="no_image")
    path = images.resolve(data_dir, row.image_path)
    if not path.is_file():
        raise Problem(404, f"the image of inspection {inspection_id} is gone from the data directory",
                      reason="no_image")
    return row, path


IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}


@read_router.get("/inspections/{inspection_id}/image", summary="The stored frame of an inspection",
                 response_class=FileResponse,
                 responses={200: {"description": "The frame as it was uploaded or captured",
                                  "content": {"image/jpeg": IMAGE_BODY, "image/png": IMAGE_BODY}},
                            **problem_responses(404, 410, 422,
                                                s404="no such inspection, or no stored image")})
def read_inspection_image(inspection_id: RowId, session: SessionDep,
                          settings: SettingsDep) -> FileResponse:
    _, path = stored_image(session, settings.data_dir, inspection_id)
    media = "image/png" if path.suffix == ".png" else "image/jpeg"
    return FileResponse(path, media_type=media)
