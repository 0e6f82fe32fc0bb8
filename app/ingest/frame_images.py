"""What of a camera's frame travels to the writer: the frame as JPEG when the camera's image policy
(``images: always | ng | never``) keeps it, and one JPEG crop per defect of a kept NG frame (``crops``).
JPEG bytes are small to queue and to journal; the decoded frame is dropped here either way."""

from __future__ import annotations

import numpy as np

from app import images
from app.ingest.config import CameraConfig
from app.inspection import InspectionResult
from app.vocabulary import NG


def prepare_images(result: InspectionResult, cfg: CameraConfig) -> list[bytes]:
    """Put the kept frame's JPEG into ``result.image_bytes`` and return its crops' JPEGs."""
    frame = result.image
    result.image = None
    if frame is None:
        return []
    if not images.should_store(cfg.images, result.verdict):  # the camera's image policy
        return []
    result.image_bytes = images.encode_jpeg(frame)
    result.image_ext = ".jpg"
    return defect_crops(frame, result) if cfg.crops and result.verdict == NG else []


def defect_crops(frame: np.ndarray, result: InspectionResult) -> list[bytes]:
    """One JPEG per detected box, clipped to the frame (empty boxes are skipped)."""
    h, w = frame.shape[:2]
    crops: list[bytes] = []
    for box in np.asarray(result.detections.xyxy):
        x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
        x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
        if x2 > x1 and y2 > y1:
            crops.append(images.encode_jpeg(frame[y1:y2, x1:x2]))
    return crops
