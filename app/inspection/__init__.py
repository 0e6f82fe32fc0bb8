"""The inspection step both doors share (REST upload and camera stream): detections of one frame +
camera rules (ROI, per-class thresholds) -> verdict -> ``InspectionResult`` -> stored rows.

``rules``: the pure rules and the result type; ``detector``: the timed detector call; ``store``:
which image is stored and where, rows, files and webhook events; ``codec``: the journal record."""

from app.inspection.detector import run_detector
from app.inspection.rules import (
    CameraContext,
    InspectionResult,
    Timings,
    apply_camera_rules,
    decide_verdict,
    default_thresholds,
    image_digest,
    inspect_frame,
    new_frame_uid,
    roi_mask,
)
from app.inspection.store import (
    FrameUidConflict,
    Stored,
    apply_image_policy,
    apply_upload_image_policy,
    persist_results,
)

__all__ = [
    "CameraContext",
    "FrameUidConflict",
    "InspectionResult",
    "Stored",
    "Timings",
    "apply_camera_rules",
    "apply_image_policy",
    "apply_upload_image_policy",
    "decide_verdict",
    "default_thresholds",
    "image_digest",
    "inspect_frame",
    "new_frame_uid",
    "persist_results",
    "roi_mask",
    "run_detector",
]
