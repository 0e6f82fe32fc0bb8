"""What of a camera's frame travels to the writer: the camera's image policy (``images: always | ng |
never``) applied once, here, through the store's ``apply_image_policy`` (the frame as JPEG when kept),
and one JPEG crop per defect of a kept frame (``crops``), the frame itself dropped when the camera (or
INSPECT_STORE_FRAMES) keeps crops only. JPEG bytes are small to queue and to journal;
the decoded frame is dropped here either way.

A camera with tracking keeps one crop per physical defect, of its track's best box (the box of the
defect row, on the best frame, which retention keeps as long as the row): its frames carry none, and
the crop of a track's best sighting (``crop_jpeg``, kept by app.ingest.camera_tracking while the track
runs) travels with the ended track and is stored with it."""

from __future__ import annotations

import numpy as np

from app import images
from app.image_policy import should_store
from app.ingest.camera_tracking import Cropper
from app.ingest.config import CameraConfig
from app.ingest.tracking import Box
from app.inspection import InspectionResult
from app.inspection.store import apply_image_policy, skip_image
from app.storage_health import HEALTH
from app.vocabulary import NG


def prepare_images(result: InspectionResult, cfg: CameraConfig, may_hold_defect: bool = False) -> list[bytes]:
    """Apply the camera's image policy to ``result`` and return its defect crops' JPEGs.
    ``may_hold_defect``: an OK frame with a box a track took (``tracking.weak_share``) may become a
    track's best frame, so its image is kept as an NG frame's would be."""
    frame = result.image
    apply_image_policy(result, cfg.images, as_verdict=NG if may_hold_defect else None)  # the camera's policy
    keep_crops = cfg.crops and not result.tracked and frame is not None and result.image_bytes is not None
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


def crop_jpeg(frame: np.ndarray, box: Box) -> bytes | None:
    """The JPEG of one box of a frame (None for a box with no pixels inside the frame)."""
    crops = images.crop_jpegs(frame, np.array([box]), HEALTH.options.jpeg_quality)
    return crops[0] if crops else None


def track_crops(cfg: CameraConfig) -> Cropper | None:
    """How a camera with tracking crops its tracks' best boxes: ``crop_jpeg`` where it keeps crops of
    the frames it stores (a best frame has a defect, so it is NG), else None."""
    return crop_jpeg if cfg.crops and should_store(cfg.images, NG) else None
