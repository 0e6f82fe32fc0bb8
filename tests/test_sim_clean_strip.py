"""The simulator's plant-like strip (``defect_rate``): clean tiles carry no truth and are real texture
cut from outside the labelled boxes (never flat), defects are sparse, the default keeps the
all-defective strip, and the key is validated like the others (and set by the demo line)."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.ingest.config import CamerasConfigError, load_cameras
from app.ingest.simulator import CLEAN_MIN_SIDE, CleanTexture, StripSimulator, largest_free_rect
from app.ingest.sources import make_source
from app.ingest.startup import DEMO_CAMERAS

TILE = 200  # the NEU-DET images' size


def tiles_of(image: np.ndarray) -> list[np.ndarray]:
    """The 200 px tiles of a frame whose strip has moved a whole number of tiles (no sway)."""
    h, w = image.shape[:2]
    return [image[y:y + TILE, x:x + TILE]
            for y in range(0, h - TILE + 1, TILE) for x in range(0, w - TILE + 1, TILE)]


def test_clean_strip_has_no_truth_and_is_textured_everywhere(neu_sample: Path):
    sim = StripSimulator(neu_sample / "images", 600, 400, fps=1.0, speed=600.0, seed=3, defect_rate=0.0)
    for i in range(8):
        image, truth = sim.frame(i)
        assert truth == []
        for tile in tiles_of(image):
            grey = cv2.cvtColor(tile, cv2.COLOR_BGR2GRAY).astype(np.float32)
            # texture: fine detail everywhere, not a flat or smooth fill (every 50 px block has some)
            detail = np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 3))
            blocks = detail.reshape(4, 50, 4, 50).mean(axis=(1, 3))
            assert blocks.min() > 0.5, blocks.min()
    # each clean tile is grown from one of the sample's images that carries no whole-surface defect
    assert sim.clean_sources and all(not sim._surface_defect(i) for i in sim.clean_sources)


def test_clean_texture_is_cut_outside_the_labelled_boxes():
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, (TILE, TILE, 3), dtype=np.uint8)
    image[:, :120] = 0  # the left 120 px are "defect": a box labelled over them
    labels = [(0, 0.3, 0.5, 0.6, 1.0)]  # cx 60, width 120: x 0..120, the full height
    patch = CleanTexture(TILE).patch(0, image, labels)
    assert patch is not None and patch.min() >= 60  # nothing of the box or its margin
    assert patch.shape[0] == TILE and CLEAN_MIN_SIDE <= patch.shape[1] <= TILE - 120
    # a box over almost all of the image leaves no patch of CLEAN_MIN_SIDE px
    assert CleanTexture(TILE).patch(1, image, [(0, 0.5, 0.5, 0.9, 0.9)]) is None
    tile = CleanTexture(TILE).tile_from((0, 0), patch, random.Random(1))
    assert tile.shape == (TILE, TILE, 3) and tile.min() >= 60  # mirrored patch only


def test_largest_free_rect():
    free = np.ones((6, 8), bool)
    free[2, :] = False  # rows 0-1 (2 x 8) and rows 3-5 (3 x 8)
    assert largest_free_rect(free) == (3, 0, 3, 8)
    assert largest_free_rect(np.zeros((3, 3), bool)) is None


def test_defects_are_sparse_and_the_default_strip_is_all_defects(neu_sample: Path):
    plant = StripSimulator(neu_sample / "images", 640, 400, fps=2.0, speed=80.0, seed=7, defect_rate=0.04)
    truths = [plant.frame(i)[1] for i in range(0, 600, 3)]
    ng = sum(1 for t in truths if t) / len(truths)
    assert 0.1 < ng < 0.5  # most frames are clean strip
    for truth in truths:  # every true box lies on a defective tile
        for box in truth:
            col, row, _ = map(int, box.defect_id.split(":"))
            assert plant.is_defective(col, row)
    every = StripSimulator(neu_sample / "images", 640, 400, fps=2.0, speed=80.0, seed=7)
    assert every.defect_rate == 1.0 and all(every.frame(i)[1] for i in range(0, 600, 30))


def test_defect_rate_is_validated_and_the_demo_line_is_plant_like(tmp_path: Path, neu_sample: Path):
    path = tmp_path / "cameras.yaml"
    path.write_text("cameras:\n  - id: a\n    simulator: {defect_rate: 1.5}\n")
    with pytest.raises(CamerasConfigError, match=r"cameras.yaml:3: cameras\[0\]\.simulator\.defect_rate: "
                                                 r"Input should be less than or equal to 1"):
        load_cameras(path)
    path.write_text(f"cameras:\n  - id: a\n    source: sim://neu-det?images={neu_sample / 'images'}"
                    "&defect_rate=0&realtime=0\n")
    [cam] = load_cameras(path).cameras
    source = make_source(cam)
    source.open()
    assert source.read().truth == []
    demo = load_cameras(DEMO_CAMERAS)
    [cam] = demo.cameras
    assert cam.simulator is not None and 0 < cam.simulator.defect_rate < 0.1
