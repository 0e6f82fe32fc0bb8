"""The rules of one inspection, without storage or timing: camera rules (ROI, per-class thresholds)
on a frame's detections -> verdict -> the ``InspectionResult`` every consumer takes."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import cv2
import numpy as np

from app.detections import Detections
from app.vocabulary import NG, OK, Verdict, round_ms, utcnow


@dataclass(frozen=True)
class CameraContext:
    """Where a frame comes from and the rules for it. ``roi``: a polygon [(x, y), ...] or a rect
    (x1, y1, x2, y2) in image pixels; a box counts when its centre lies inside. ``class_thresholds``:
    class name -> minimum confidence (classes not listed are not filtered here: the engine's threshold
    is all they meet); see ``default_thresholds`` for how each class gets its threshold."""

    camera_id: str | None = None
    line: str | None = None
    station: str | None = None
    roi: Sequence[Sequence[float]] | Sequence[float] | None = None
    class_thresholds: Mapping[str, float] = field(default_factory=dict)

    def thresholds_times(self, share: float) -> CameraContext:
        """The same rules with every class threshold times ``share`` (the boxes a camera's tracks take
        with ``tracking.weak_share``)."""
        return replace(self, class_thresholds={n: t * share for n, t in self.class_thresholds.items()})


@dataclass
class Timings:
    decode_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    total_ms: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {"decode": round_ms(self.decode_ms), "inference": round_ms(self.inference_ms),
                "postprocess": round_ms(self.postprocess_ms), "total": round_ms(self.total_ms)}


@dataclass
class InspectionResult:
    """One inspected frame. Its image travels in one of three forms: ``image`` (the BGR frame, until
    the image policy decided), ``image_bytes`` + ``image_ext`` (what will be stored: the original
    upload as-is or the frame as JPEG) and ``image_path`` (once the file is written, relative to the
    data dir); see ``app.inspection.store``."""

    frame_uid: str
    camera_id: str | None
    line: str | None
    station: str | None
    part_id: str | None
    captured_at: datetime
    received_at: datetime
    detections: Detections
    verdict: Verdict
    timings: Timings
    width: int
    height: int
    model_version: str
    source: str = "api"
    image: np.ndarray | None = None
    image_bytes: bytes | None = None
    image_ext: str = ".jpg"
    image_path: str | None = None
    image_sha256: str | None = None  # image_digest(): tells a replay of this frame from another image
    image_size: int = 0  # bytes of the stored frame file
    crop_count: int = 0  # defect crops stored next to it (``<frame_uid>-crop<k>.jpg``)
    crop_size: int = 0  # their bytes
    image_skipped: str | None = None  # why an image the policy keeps was not written (low_disk|write_failed)
    # a camera with tracking: the detections are counted on the row, not stored as defects; each
    # physical defect is stored once, when its track ends (app.inspection.tracks)
    tracked: bool = False


def new_frame_uid() -> str:
    return uuid.uuid4().hex


def image_digest(frame: np.ndarray, image_bytes: bytes | None = None) -> str:
    """SHA-256 (hex) of an image as it came in: the bytes of an uploaded file, or the pixels (and
    their shape) of a captured frame. The same frame read or posted again has the same digest."""
    if image_bytes is not None:
        return hashlib.sha256(image_bytes).hexdigest()
    h = hashlib.sha256(f"{frame.shape}:{frame.dtype}:".encode())
    h.update(memoryview(np.ascontiguousarray(frame)).cast("B"))
    return h.hexdigest()


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


def default_thresholds(names: Sequence[str], global_threshold: float,
                       model_thresholds: Mapping[str, float]) -> dict[str, float]:
    """Each class's confidence threshold where a camera sets none: the model's operating point for the
    class (its metadata ``operating_points``), else the global threshold. A camera's ``thresholds``
    (its class, then its ``default``) override these."""
    return {n: float(model_thresholds.get(n, global_threshold)) for n in names}


def apply_camera_rules(detections: Detections, context: CameraContext | None) -> Detections:
    if context is None or len(detections) == 0:
        return detections
    keep = roi_mask(detections.xyxy, context.roi)
    if context.class_thresholds:
        mins = np.array([context.class_thresholds.get(detections.class_name(int(c)), 0.0)
                         for c in detections.class_id], dtype=np.float32)
        keep &= detections.confidence >= mins
    return detections.filter(keep)


def decide_verdict(detections: Detections) -> Verdict:
    return NG if len(detections) else OK


def inspect_frame(frame: np.ndarray, detections: Detections, *, model_version: str,
                  context: CameraContext | None = None, part_id: str | None = None,
                  captured_at: datetime | None = None, received_at: datetime | None = None,
                  timings: Timings | None = None, frame_uid: str | None = None, source: str = "api",
                  image_bytes: bytes | None = None, image_ext: str = ".jpg",
                  size: tuple[int, int] | None = None) -> InspectionResult:
    """Camera rules + verdict for one frame, as the one result object every consumer takes. ``size``:
    (width, height) of the image when ``frame`` is a reduced decode of it (``detections`` in the
    image's pixels); default the frame's."""
    now = utcnow()
    kept = apply_camera_rules(detections, context)
    ctx = context or CameraContext()
    return InspectionResult(
        frame_uid=frame_uid or new_frame_uid(), camera_id=ctx.camera_id, line=ctx.line,
        station=ctx.station, part_id=part_id, captured_at=captured_at or received_at or now,
        received_at=received_at or now, detections=kept, verdict=decide_verdict(kept),
        timings=timings or Timings(), width=int(size[0] if size else frame.shape[1]),
        height=int(size[1] if size else frame.shape[0]),
        model_version=model_version, source=source, image=frame, image_bytes=image_bytes,
        image_ext=image_ext, image_sha256=image_digest(frame, image_bytes),
    )
