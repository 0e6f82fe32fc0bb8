"""The inspection step both doors share (REST upload and camera stream): detections of one frame +
camera rules (ROI, per-class thresholds) -> verdict -> ``InspectionResult`` -> stored rows."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy.orm import Session

from app import images, metrics
from app.db import repository
from app.db.models import Inspection
from app.detections import Detections
from app.inference import Engine
from app.webhooks import enqueue_inspection, subscribers

log = logging.getLogger(__name__)

OK, NG = "OK", "NG"


@dataclass(frozen=True)
class CameraContext:
    """Where a frame comes from and the rules for it. ``roi``: a polygon [(x, y), ...] or a rect
    (x1, y1, x2, y2) in image pixels; a box counts when its centre lies inside. ``class_thresholds``:
    class name -> minimum confidence (classes not listed keep the global threshold)."""

    camera_id: str | None = None
    line: str | None = None
    station: str | None = None
    roi: Sequence[Sequence[float]] | Sequence[float] | None = None
    class_thresholds: Mapping[str, float] = field(default_factory=dict)


@dataclass
class Timings:
    decode_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    total_ms: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"decode": round(self.decode_ms, 3), "inference": round(self.inference_ms, 3),
                "postprocess": round(self.postprocess_ms, 3), "total": round(self.total_ms, 3)}


@dataclass
class InspectionResult:
    frame_uid: str
    camera_id: str | None
    line: str | None
    station: str | None
    part_id: str | None
    captured_at: datetime
    received_at: datetime
    detections: Detections
    verdict: str
    timings: Timings
    width: int
    height: int
    model_version: str
    source: str = "api"
    image: np.ndarray | None = None  # the BGR frame (encoded as JPEG when stored)
    image_bytes: bytes | None = None  # the original upload, stored as-is when present
    image_ext: str = ".jpg"
    image_path: str | None = None  # set once the image is stored (relative to the data dir)


def new_frame_uid() -> str:
    return uuid.uuid4().hex


def roi_mask(xyxy: np.ndarray, roi: Sequence[Sequence[float]] | Sequence[float] | None) -> np.ndarray:
    """Boolean mask of boxes whose centre lies in ``roi`` (all True without a ROI)."""
    n = len(xyxy)
    if roi is None or n == 0:
        return np.ones(n, dtype=bool)
    cx = (xyxy[:, 0] + xyxy[:, 2]) / 2
    cy = (xyxy[:, 1] + xyxy[:, 3]) / 2
    pts = np.asarray(roi, dtype=np.float32)
    if pts.ndim == 1:
        if pts.shape[0] != 4:
            raise ValueError(f"a rectangle ROI needs 4 numbers (x1, y1, x2, y2), got {len(pts)}")
        x1, y1, x2, y2 = pts
        return (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
        raise ValueError("a polygon ROI needs at least 3 (x, y) points")
    contour = pts.reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0
                     for x, y in zip(cx, cy, strict=True)], dtype=bool)


def apply_camera_rules(detections: Detections, context: CameraContext | None) -> Detections:
    if context is None or len(detections) == 0:
        return detections
    keep = roi_mask(detections.xyxy, context.roi)
    if context.class_thresholds:
        mins = np.array([context.class_thresholds.get(detections.class_name(int(c)), 0.0)
                         for c in detections.class_id], dtype=np.float32)
        keep &= detections.confidence >= mins
    return detections.filter(keep)


def decide_verdict(detections: Detections) -> str:
    return NG if len(detections) else OK


def run_detector(engine: Engine, frames: Sequence[np.ndarray], conf_threshold: float,
                 iou_threshold: float, max_det: int, imgsz: int | None = None
                 ) -> tuple[list[Detections], float, float]:
    """Detect on a batch; returns (detections, inference ms, postprocess ms) for the whole batch.
    Inference covers letterbox + the ONNX Runtime run; postprocess covers decoding and NMS.
    ``imgsz``: the longer side the model sees the frames at (None: the model's own)."""
    t0 = time.perf_counter()
    batch, params = engine.preprocess(frames, imgsz)
    raw = engine.run(batch)
    t1 = time.perf_counter()
    dets = engine.postprocess(raw, params, conf_threshold, iou_threshold, max_det)
    t2 = time.perf_counter()
    metrics.INFERENCE_SECONDS.labels(provider=engine.provider).observe(t1 - t0)
    return dets, (t1 - t0) * 1000, (t2 - t1) * 1000


def inspect_frame(frame: np.ndarray, detections: Detections, *, model_version: str,
                  context: CameraContext | None = None, part_id: str | None = None,
                  captured_at: datetime | None = None, received_at: datetime | None = None,
                  timings: Timings | None = None, frame_uid: str | None = None, source: str = "api",
                  image_bytes: bytes | None = None, image_ext: str = ".jpg") -> InspectionResult:
    """Camera rules + verdict for one frame, as the one result object every consumer takes."""
    now = datetime.now(UTC)
    kept = apply_camera_rules(detections, context)
    ctx = context or CameraContext()
    return InspectionResult(
        frame_uid=frame_uid or new_frame_uid(), camera_id=ctx.camera_id, line=ctx.line,
        station=ctx.station, part_id=part_id, captured_at=captured_at or received_at or now,
        received_at=received_at or now, detections=kept, verdict=decide_verdict(kept),
        timings=timings or Timings(), width=int(frame.shape[1]), height=int(frame.shape[0]),
        model_version=model_version, source=source, image=frame, image_bytes=image_bytes,
        image_ext=image_ext,
    )


def _row_fields(r: InspectionResult) -> dict:
    return {
        "frame_uid": r.frame_uid, "camera_id": r.camera_id, "line": r.line, "station": r.station,
        "part_id": r.part_id, "source": r.source, "captured_at": r.captured_at,
        "received_at": r.received_at, "verdict": r.verdict, "model_version": r.model_version,
        "image_path": r.image_path, "width": r.width, "height": r.height,
        "decode_ms": r.timings.decode_ms, "inference_ms": r.timings.inference_ms,
        "postprocess_ms": r.timings.postprocess_ms, "total_ms": r.timings.total_ms,
    }


def _defect_rows(dets: Detections) -> list[dict]:
    # tolist() gives the same Python floats/ints as iterating Detection objects, without building them
    return [{"class_id": c, "class_name": dets.class_name(c), "confidence": conf,
             "x1": x1, "y1": y1, "x2": x2, "y2": y2}
            for (x1, y1, x2, y2), conf, c in zip(dets.xyxy.tolist(), dets.confidence.tolist(),
                                                 dets.class_id.tolist(), strict=True)]


def _image_rel(r: InspectionResult) -> str:
    return images.relative_path(r.frame_uid, r.captured_at, r.image_ext if r.image_bytes else ".jpg")


def _write_image(r: InspectionResult, rel: str, data_dir: Path) -> Path:
    path = images.resolve(data_dir, rel)
    data = r.image_bytes if r.image_bytes is not None else images.encode_jpeg(r.image)
    images.write_atomic(path, data)
    return path


@dataclass
class Stored:
    """One stored result: its inspection ``id``, ``created`` (False: the frame_uid was already stored,
    an idempotent replay) and, unless ``persist_results(..., load_rows=False)``, the ``row`` itself
    (with its defects)."""

    id: int
    created: bool
    loaded: Inspection | None = field(default=None, repr=False)

    @property
    def row(self) -> Inspection:
        if self.loaded is None:
            raise LookupError(f"inspection {self.id} was stored without loading its row (load_rows=False)")
        return self.loaded


def persist_results(session: Session, results: Sequence[InspectionResult], *, data_dir: Path,
                    image_policy: str, load_rows: bool = True) -> list[Stored]:
    """Store a batch in one transaction: camera rows on first use, images by policy, inspections and
    defects. Frames whose ``frame_uid`` is already stored are not written again (their existing rows
    come back with ``created=False``), also when a concurrent writer (another service instance) stores
    the same frame or creates the same camera at the same moment: both inserts are
    ``INSERT ... ON CONFLICT DO NOTHING``, so such a race ends in a replay, never in an error. Image
    files of a failed transaction are removed. Returns one ``Stored`` per result, in input order,
    after the commit; with ``load_rows=False`` (callers that need only ids, e.g. the ingest writer)
    the ORM rows are not loaded back (``Stored.row`` raises then)."""
    written: list[Path] = []
    try:
        stored = _persist_once(session, results, data_dir, image_policy, written, load_rows)
        session.commit()
    except BaseException:
        # remove the files while this transaction still holds its rows: a concurrent writer of the
        # same frame_uid waits on them, and writes its own file only after our rollback
        for path in written:
            images.remove_quietly(path)
        for r in results:
            r.image_path = None
        session.rollback()
        raise
    for s, r in zip(stored, results, strict=True):
        if s.created:
            metrics.INSPECTIONS_TOTAL.labels(verdict=r.verdict, camera=r.camera_id or "").inc()
            per_class = Counter(map(r.detections.class_name, r.detections.class_id.tolist()))
            for class_name, n in per_class.items():
                metrics.DEFECTS_TOTAL.labels(class_name=class_name).inc(n)
    return stored


def _persist_once(session: Session, results: Sequence[InspectionResult], data_dir: Path,
                  image_policy: str, written: list[Path], load_rows: bool) -> list[Stored]:
    existing = repository.inspection_ids_by_uid(session, (r.frame_uid for r in results))
    first: dict[str, InspectionResult] = {}  # frame_uid -> its first result in this batch
    for r in results:
        first.setdefault(r.frame_uid, r)
    new = [first[uid] for uid in sorted(first) if uid not in existing]
    # rows are inserted in a fixed order (cameras by id, then frames by frame_uid), so two batches
    # that overlap wait on each other instead of deadlocking
    cameras: dict[str, tuple[str | None, str | None]] = {}
    for r in new:
        if r.camera_id:
            cameras.setdefault(r.camera_id, (r.line, r.station))
    for camera_id in sorted(cameras):
        repository.ensure_camera(session, camera_id, *cameras[camera_id])
    for r in new:
        store = images.should_store(image_policy, r.verdict) and (r.image is not None or r.image_bytes)
        r.image_path = _image_rel(r) if store else None
    created = repository.insert_inspections(
        session, [(_row_fields(r), _defect_rows(r.detections)) for r in new])
    for r in new:
        if r.frame_uid not in created:
            r.image_path = None  # stored meanwhile by a concurrent writer: a replay, its file stays
        elif r.image_path is not None:  # our own row is in: now its file
            written.append(_write_image(r, r.image_path, data_dir))
    # NG results: queue the inspection.ng webhook event in this transaction (hooks asked once a batch,
    # payloads built only when someone listens)
    new_ng = [uid for uid in created if first[uid].verdict == NG]
    hooks = subscribers(session, "inspection.ng") if new_ng else []
    if load_rows:
        rows = repository.get_inspections_by_uid(session, first)
        ids = {uid: row.id for uid, row in rows.items()}
    else:
        rows = repository.get_inspections_by_uid(session, new_ng) if hooks else {}
        ids = {**existing, **created}
        raced = [uid for uid in first if uid not in ids]  # stored meanwhile by a concurrent writer
        ids.update(repository.inspection_ids_by_uid(session, raced))
    out: list[Stored] = []
    for r in results:
        if r.frame_uid not in ids:
            raise RuntimeError(f"inspection {r.frame_uid!r} is missing right after it was stored")
        is_new = r.frame_uid in created and first[r.frame_uid] is r
        out.append(Stored(ids[r.frame_uid], is_new, rows.get(r.frame_uid) if load_rows else None))
        if is_new and hooks and r.verdict == NG:
            enqueue_inspection(session, rows[r.frame_uid], hooks)
    return out
