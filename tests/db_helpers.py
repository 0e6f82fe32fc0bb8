"""Frames stored straight through ``app.inspection.persist_results`` (no HTTP, no model), for the
direct tests of queries, stats, reviews and the reviewed export."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from app.db.session import Database
from app.detections import Detections
from app.image_policy import ImagePolicy
from app.inspection import CameraContext, Stored, inspect_frame, persist_results

NAMES = ("crazing", "patches", "scratches")
NO_IMAGES = Path("/nonexistent")  # the data dir of frames stored with image_policy="never"


@dataclass
class Frame:
    """One frame to store: ``defects`` as (class name, confidence, (x1, y1, x2, y2)) in pixels."""

    uid: str
    captured_at: datetime
    defects: list[tuple[str, float, tuple[float, float, float, float]]] = field(default_factory=list)
    line: str | None = None
    station: str | None = None
    width: int = 100
    height: int = 80

    def detections(self) -> Detections:
        boxes = np.array([box for _, _, box in self.defects], np.float32).reshape(-1, 4)
        return Detections(boxes, np.array([c for _, c, _ in self.defects], np.float32),
                          np.array([NAMES.index(n) for n, _, _ in self.defects], int), NAMES)


def store_frames(db: Database, frames: list[Frame], *, data_dir: Path = NO_IMAGES,
                 image_policy: ImagePolicy = "never") -> list[Stored]:
    """Store ``frames`` in one batch (ids follow frame_uid order); the rows come back with their defects."""
    results = []
    for f in frames:
        ctx = CameraContext(camera_id=f"cam-{f.line}-{f.station}" if f.line else None, line=f.line,
                            station=f.station)
        image = np.full((f.height, f.width, 3), 90, np.uint8)
        results.append(inspect_frame(image, f.detections(), model_version="v", context=ctx, frame_uid=f.uid,
                                     captured_at=f.captured_at, source="stream"))
    with db.session() as s:
        stored = persist_results(s, results, data_dir=data_dir, image_policy=image_policy)
        for x in stored:
            list(x.row.defects)  # loaded while the session is open
    return stored
