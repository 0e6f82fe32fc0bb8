"""What of a camera's frame travels to the writer: the camera's image policy (``images: always | ng |
never``) applied once, here, through the store's ``apply_image_policy`` (the frame as JPEG when kept),
and one JPEG crop per defect of a kept frame (``crops``). JPEG bytes are small to queue and to journal;
the decoded frame is dropped here either way."""

from __future__ import annotations

from app import images
from app.ingest.config import CameraConfig
from app.inspection import InspectionResult
from app.inspection.store import apply_image_policy


def prepare_images(result: InspectionResult, cfg: CameraConfig) -> list[bytes]:
    """Apply the camera's image policy to ``result`` and return its defect crops' JPEGs."""
    frame = result.image
    apply_image_policy(result, cfg.images)  # the camera's image policy
    keep_crops = cfg.crops and frame is not None and result.image_bytes is not None
    return images.crop_jpegs(frame, result.detections.xyxy) if keep_crops else []
