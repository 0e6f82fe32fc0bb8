"""A standing strip for tests of tracked cameras: frames of one texture whose brightness the tiny
model reads as the confidence of one 'patches' box in the middle, so one physical defect is seen in
every frame, most confidently in the brightest one."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from app.db.session import Database
from app.inference import Engine
from app.ingest.config import CamerasFile, parse_cameras
from app.ingest.pipeline import Pipeline
from app.ingest.sources import derive_frame_uid, file_identity

LEVELS = (150, 170, 190, 220, 200, 180, 160, 150)  # brightness of each frame
BEST = 3  # the brightest


def standing_strip(folder: Path, levels: tuple[int, ...] = LEVELS) -> Path:
    """One PNG per level (``000.png`` ...): a fixed texture at that brightness."""
    folder.mkdir(parents=True, exist_ok=True)
    texture = np.random.default_rng(0).integers(0, 40, (120, 160, 1)).astype(np.int16)
    for i, level in enumerate(levels):
        frame = np.clip(texture + level, 0, 255).astype(np.uint8).repeat(3, axis=2)
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    return folder


def strip_camera(folder: Path, tracking: bool, frames: bool = True) -> CamerasFile:
    """Camera ``strip`` on line L1 reading ``folder``, NG frames stored (or, ``frames=False``, only their
    defect crops), tracking on or off."""
    return parse_cameras(f"""
cameras:
  - id: strip
    line: L1
    source: "folder:{folder}"
    images: ng
    frames: {str(frames).lower()}
    tracking: {{enabled: {str(tracking).lower()}, mm_per_px: 0.5, looks: null}}
""")


def run_to_the_end(cfg: CamerasFile, model: Path, db: Database, data_dir: Path) -> None:
    """The pipeline over the cameras' sources until every frame is stored, then stopped."""
    with Pipeline(cfg, Engine(model, intra_op_threads=1), db, data_dir) as pipeline:
        assert pipeline.wait_finished(60)


GONE = LEVELS + (10, 10)  # the defect, then two frames too dark for a box: its track ends on the first


def ending_strip_cameras(frames: Path, path: Path) -> Path:
    """A cameras file at ``path``: camera ``strip`` on line L1 reading ``frames`` (``GONE``) with
    tracking, where a track ends in the first frame without its defect (the standing strip counts as
    moving: ``stop_px_s: 0``; every track is a defect and only boxes at the threshold are tracked:
    ``min_score: null``), so it is stored while the camera runs."""
    path.write_text(f"""
cameras:
  - id: strip
    line: L1
    source: "folder:{frames}"
    images: ng
    tracking: {{enabled: true, mm_per_px: 0.5, stop_px_s: 0, max_missed: 0, looks: null, min_score: null}}
""")
    return path


def strip_frame_uids(frames: Path) -> list[str]:
    """The frame uids camera ``strip`` gives the strip's frames, in order."""
    return [derive_frame_uid("strip", "file:" + file_identity(p)) for p in sorted(frames.glob("*.png"))]
