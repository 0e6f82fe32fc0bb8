"""What of a camera's frame travels to the writer: the camera's image policy (``images: always | ng |
never``) applied once, here, through the store's ``apply_image_policy`` (the frame as JPEG when kept),
and one JPEG crop per defect of a kept frame (``crops``), the frame itself dropped when the camera (or
INSPECT_STORE_FRAMES) keeps crops only. JPEG bytes are small to queue and to journal;
the decoded frame is dropped here either way."""

from __future__ import annotations

from app import images
from app.ingest.config import CameraConfig
from app.inspection import InspectionResult
from app.inspection.store import apply_image_policy, skip_image
from app.storage_health import HEALTH


def prepare_images(result: InspectionResult, cfg: CameraConfig) -> list[bytes]:
    """Apply the camera's image policy to ``result`` and return its defect crops' JPEGs."""
    frame = result.image
    apply_image_policy(result, cfg.images)  # the camera's image policy
    keep_crops = cfg.crops and frame is not None and result.image_bytes is not None
    crops = (images.crop_jpegs(frame, result.detections.xyxy, HEALTH.options.jpeg_quality)
             if keep_crops else [])
    if not (HEALTH.options.store_frames if cfg.frames is None else cfg.frames):
        result.image_bytes = None  # crops only
    result.crop_count, result.crop_size = len(crops), sum(images.disk_bytes(len(c)) for c in crops)
    if crops or result.image_bytes is not None:
        reason = HEALTH.image_skip_reason(HEALTH.data_dir)  # low disk, failing writes: no images at all
        if reason is not None:
            skip_image(result, reason)
            return []
    return crops
