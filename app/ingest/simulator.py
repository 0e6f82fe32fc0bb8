"""A production-line simulator: a steel strip tiled from dataset images scrolls past a camera.

The strip is an endless band of ``rows`` tiles (rows = ceil(height / tile)), columns chosen by a seeded
shuffle of the image folder. Frame ``i`` shows the strip shifted by ``speed * i / fps`` pixels; the
ground truth of that frame is every YOLO label box of the visible tiles, moved into frame
coordinates and clipped, with the fraction of the box that is visible and the id of the physical
defect it belongs to (the same id in every frame that shows that defect).

What real lines do, on request: ``profile="varied"`` changes the speed every 1-4 s between a stop and
``speed`` (seeded), ``jitter`` shakes the picture by up to that many pixels along the strip per frame,
and ``drift`` sways the strip sideways by up to that many pixels (a slow sine).
"""

from __future__ import annotations

import math
import os
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

PROFILES = ("constant", "varied")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
MIN_VISIBLE = 0.25  # boxes less visible than this are left out of the truth
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample" / "neu-det"  # 90 NEU-DET images (README there)


@dataclass(frozen=True)
class TruthBox:
    class_id: int
    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float
    visible: float  # fraction of the labelled box inside the frame
    tile: str  # the dataset image it comes from
    defect_id: str = ""  # the physical defect: strip column, row and label line


    def to_dict(self) -> dict:
        return {"class_id": self.class_id, "class_name": self.class_name,
                "box": [round(self.x1, 2), round(self.y1, 2), round(self.x2, 2), round(self.y2, 2)],
                "visible": round(self.visible, 3), "tile": self.tile, "defect_id": self.defect_id}


def default_images_dir() -> Path:
    """INSPECT_SIM_IMAGES, else the NEU-DET sample shipped with the package."""
    env = os.environ.get("INSPECT_SIM_IMAGES")
    return Path(env) if env else SAMPLE_DIR / "images"


def _class_names(images_dir: Path) -> list[str]:
    for data_yaml in (images_dir.parent / "data.yaml", images_dir / "data.yaml"):
        if data_yaml.is_file():
            names = (yaml.safe_load(data_yaml.read_text()) or {}).get("names")
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names)]
            if isinstance(names, list):
                return [str(n) for n in names]
    return []


class StripSimulator:
    """Deterministic frames of a moving strip: ``frame(i)`` -> (BGR image, truth boxes)."""

    def __init__(self, images_dir: str | Path | None = None, width: int = 640, height: int = 480,
                 fps: float = 30.0, speed: float = 120.0, seed: int = 0, cache_size: int = 256, *,
                 profile: str = "constant", jitter: float = 0.0, drift: float = 0.0) -> None:
        self.images_dir = Path(images_dir) if images_dir else default_images_dir()
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"simulator images folder not found: {self.images_dir}")
        self.paths = sorted(p for p in self.images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise FileNotFoundError(f"no images in {self.images_dir}")
        self.labels_dir = self.images_dir.parent / "labels"
        self.names = _class_names(self.images_dir)
        self.width, self.height, self.fps, self.speed = int(width), int(height), float(fps), float(speed)
        first = cv2.imread(str(self.paths[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise ValueError(f"cannot read image {self.paths[0]}")
        self.tile = int(first.shape[0])
        if profile not in PROFILES:
            raise ValueError(f"unknown speed profile {profile!r} (one of {', '.join(PROFILES)})")
        self.profile, self.jitter, self.drift = profile, float(jitter), float(drift)
        self.seed = seed
        self._margin = int(math.ceil(self.drift))  # strip rows above and below the view, for the sway
        self.rows = -(-(self.height + 2 * self._margin) // self.tile)
        self._travel: list[float] = [0.0]  # strip travel at frame i, px (varied profile)
        self._speeds: list[float] = []  # px/s of each frame interval (varied profile)
        self._order = list(range(len(self.paths)))
        random.Random(seed).shuffle(self._order)
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()
        self._labels: dict[int, list[tuple[int, float, float, float, float]]] = {}
        self._cache_size = cache_size

    def image_index(self, col: int, row: int) -> int:
        return self._order[(col * self.rows + row) % len(self._order)]

    def _image(self, idx: int) -> np.ndarray:
        img = self._images.get(idx)
        if img is None:
            img = cv2.imread(str(self.paths[idx]), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"cannot read image {self.paths[idx]}")
            if img.shape[:2] != (self.tile, self.tile):
                img = cv2.resize(img, (self.tile, self.tile), interpolation=cv2.INTER_AREA)
            self._images[idx] = img
            if len(self._images) > self._cache_size:
                self._images.popitem(last=False)
        else:
            self._images.move_to_end(idx)
        return img

    def _label(self, idx: int) -> list[tuple[int, float, float, float, float]]:
        if idx not in self._labels:
            rows: list[tuple[int, float, float, float, float]] = []
            path = self.labels_dir / (self.paths[idx].stem + ".txt")
            if path.is_file():
                for line in path.read_text().splitlines():
                    parts = line.split()
                    if len(parts) >= 5:
                        c, x, y, w, h = int(parts[0]), *map(float, parts[1:5])
                        rows.append((c, x, y, w, h))
            self._labels[idx] = rows
        return self._labels[idx]

    def _grow_varied(self, index: int) -> None:
        """Speeds of the varied profile up to frame ``index``: spells of 1-4 s, each a stop (1 in 5) or
        a speed between a tenth of and the full ``speed``; deterministic for a seed."""
        rng = random.Random(f"{self.seed}:speeds:{len(self._speeds)}")
        while len(self._speeds) < index:
            spell = int(rng.uniform(1.0, 4.0) * self.fps)
            v = 0.0 if rng.random() < 0.2 else self.speed * rng.uniform(0.1, 1.0)
            self._speeds.extend([v] * max(spell, 1))
        while len(self._travel) <= index:
            self._travel.append(self._travel[-1] + self._speeds[len(self._travel) - 1] / self.fps)

    def travel(self, index: int) -> float:
        """How far the strip has moved at frame ``index``, px (before jitter)."""
        if self.profile == "constant":
            return self.speed * index / self.fps
        self._grow_varied(index)
        return self._travel[index]

    def speed_at(self, index: int) -> float:
        """The strip's speed between frame ``index`` and the next, px/s."""
        return self.fps * (self.travel(index + 1) - self.travel(index))

    def offset(self, index: int) -> int:
        """The strip's offset along its length in frame ``index``, px (travel plus jitter)."""
        shake = 0.0
        if self.jitter:
            shake = random.Random(f"{self.seed}:jitter:{index}").uniform(-self.jitter, self.jitter)
        return int(round(self.travel(index) + shake))

    def sway(self, index: int) -> int:
        """The strip's sideways drift in frame ``index``, px (a sine of period 7 s)."""
        if not self.drift:
            return 0
        return int(round(self.drift * math.sin(2 * math.pi * index / (7.0 * self.fps))))

    def frame(self, index: int) -> tuple[np.ndarray, list[TruthBox]]:
        off = self.offset(index)
        top = self._margin + self.sway(index)  # strip row in the frame's first line
        t = self.tile
        col0, col1 = off // t, (off + self.width - 1) // t
        canvas = np.empty((self.rows * t, (col1 - col0 + 1) * t, 3), np.uint8)
        truth: list[TruthBox] = []
        for col in range(col0, col1 + 1):
            for row in range(self.rows):
                idx = self.image_index(col, row)
                cx0 = (col - col0) * t
                canvas[row * t:(row + 1) * t, cx0:cx0 + t] = self._image(idx)
                fx, fy = col * t - off, row * t - top  # tile origin in frame pixels
                for k, (c, x, y, w, h) in enumerate(self._label(idx)):
                    bx1, by1 = fx + (x - w / 2) * t, fy + (y - h / 2) * t
                    bx2, by2 = fx + (x + w / 2) * t, fy + (y + h / 2) * t
                    area = max(bx2 - bx1, 0.0) * max(by2 - by1, 0.0)
                    vx1, vy1 = max(bx1, 0.0), max(by1, 0.0)
                    vx2, vy2 = min(bx2, float(self.width)), min(by2, float(self.height))
                    if area <= 0 or vx2 <= vx1 or vy2 <= vy1:
                        continue
                    visible = (vx2 - vx1) * (vy2 - vy1) / area
                    if visible < MIN_VISIBLE:
                        continue
                    name = self.names[c] if 0 <= c < len(self.names) else str(c)
                    truth.append(TruthBox(c, name, vx1, vy1, vx2, vy2, visible, self.paths[idx].name,
                                          f"{col}:{row}:{k}"))
        x0 = off - col0 * t
        image = np.ascontiguousarray(canvas[top:top + self.height, x0:x0 + self.width])
        return image, truth
