"""A production-line simulator: a steel strip tiled from dataset images scrolls past a camera.

The strip is an endless band of ``rows`` tiles (rows = ceil(height / tile)), columns chosen by a seeded
shuffle of the image folder. Frame ``i`` shows the strip shifted by ``speed * i / fps`` pixels; the
ground truth of that frame is every YOLO label box of the visible tiles, moved into frame
coordinates and clipped, with the fraction of the box that is visible and the id of the physical
defect it belongs to (the same id in every frame that shows that defect).

What real lines do, on request: ``profile="varied"`` changes the speed every 1-4 s between a stop and
``speed`` (seeded), ``jitter`` shakes the picture by up to that many pixels along the strip per frame,
and ``drift`` sways the strip sideways by up to that many pixels (a slow sine).

A plant's strip is mostly clean: with ``defect_rate`` below 1 only that share of the tiles (seeded) is a
dataset image with its labelled defects; the others are clean strip (``CleanTexture``), steel texture
cut from the dataset images outside their labelled boxes (NEU-DET has no defect-free image), at the
images' own scale. The default, 1, is a strip of dataset images only: every frame shows defects.
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
CLEAN_MARGIN = 12  # px kept clear around a labelled box when clean texture is cut
CLEAN_MIN_SIDE = 64  # px: the smallest clean patch a clean tile is grown from
# NEU-DET classes whose defect covers the whole picture, the boxes marking only parts of it: no part of
# such an image is clean strip
SURFACE_CLASSES = frozenset({"crazing", "pitted_surface"})
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


def largest_free_rect(free: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest axis-aligned rectangle of True cells in a 2-D mask: (row0, col0, rows, cols), or
    None when there is no True cell (the histogram-and-stack method, one pass per row)."""
    heights = np.zeros(free.shape[1] + 1, dtype=np.int64)  # the last column stays 0: it empties the stack
    best: tuple[int, int, int, int] | None = None
    best_area = 0
    for r in range(free.shape[0]):
        heights[:-1] = np.where(free[r], heights[:-1] + 1, 0)
        stack: list[int] = []
        for c in range(len(heights)):
            while stack and heights[stack[-1]] >= heights[c]:
                h = int(heights[stack.pop()])
                left = stack[-1] + 1 if stack else 0
                if h * (c - left) > best_area:
                    best_area, best = h * (c - left), (r - h + 1, left, h, c - left)
            stack.append(c)
    return best


class CleanTexture:
    """Clean strip from labelled dataset images: each image's largest rectangle outside its labelled
    boxes (``CLEAN_MARGIN`` px clear of them, at least ``CLEAN_MIN_SIDE`` px a side) is the texture a
    clean tile is grown from, by mirroring it until it fills the tile (no seams, the image's own scale),
    flipped and shifted per tile (seeded)."""

    def __init__(self, tile: int, cache_size: int = 256) -> None:
        self.tile = tile
        self._patches: dict[int, np.ndarray | None] = {}
        self._tiles: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def patch(self, idx: int, image: np.ndarray, labels: list[tuple[int, float, float, float, float]]
              ) -> np.ndarray | None:
        """The largest clean rectangle of image ``idx``, or None when none is ``CLEAN_MIN_SIDE`` px a
        side (cached per image)."""
        if idx not in self._patches:
            self._patches[idx] = self._cut(image, labels)
        return self._patches[idx]

    @staticmethod
    def _cut(image: np.ndarray, labels: list[tuple[int, float, float, float, float]]) -> np.ndarray | None:
        h, w = image.shape[:2]
        cell = 4  # search on a 4-px grid: exact enough, 16 times less work
        free = np.ones((h // cell, w // cell), dtype=bool)
        for _c, x, y, bw, bh in labels:
            x1 = int(((x - bw / 2) * w - CLEAN_MARGIN) // cell)
            y1 = int(((y - bh / 2) * h - CLEAN_MARGIN) // cell)
            x2 = int(-(-((x + bw / 2) * w + CLEAN_MARGIN) // cell))
            y2 = int(-(-((y + bh / 2) * h + CLEAN_MARGIN) // cell))
            free[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = False
        rect = largest_free_rect(free)
        if rect is None or min(rect[2], rect[3]) * cell < CLEAN_MIN_SIDE:
            return None
        r0, c0, rows, cols = (v * cell for v in rect)
        return image[r0:r0 + rows, c0:c0 + cols].copy()

    def tile_from(self, key: tuple[int, int], patch: np.ndarray, rng: random.Random) -> np.ndarray:
        """A clean tile for strip position ``key`` grown from ``patch`` (cached)."""
        found = self._tiles.get(key)
        if found is not None:
            self._tiles.move_to_end(key)
            return found
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        t = self.tile
        ph, pw = patch.shape[:2]
        dy, dx = rng.randrange(ph), rng.randrange(pw)  # where in the mirrored texture the tile starts
        grown = np.pad(patch, ((dy, t), (dx, t), (0, 0)), mode="symmetric")
        out = np.ascontiguousarray(grown[:t, :t])
        self._tiles[key] = out
        if len(self._tiles) > self._cache_size:
            self._tiles.popitem(last=False)
        return out


class StripSimulator:
    """Deterministic frames of a moving strip: ``frame(i)`` -> (BGR image, truth boxes)."""

    def __init__(self, images_dir: str | Path | None = None, width: int = 640, height: int = 480,
                 fps: float = 30.0, speed: float = 120.0, seed: int = 0, cache_size: int = 256, *,
                 profile: str = "constant", jitter: float = 0.0, drift: float = 0.0,
                 defect_rate: float = 1.0) -> None:
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
        if not 0.0 <= defect_rate <= 1.0:
            raise ValueError(f"defect_rate {defect_rate} must be between 0 and 1")
        self.defect_rate = float(defect_rate)
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
        self.clean = CleanTexture(self.tile, cache_size)
        # the images clean strip is cut from, found here (a second or more per thousand images) rather
        # than in the first frame that needs one, so a camera's first frames come at its pace
        self.clean_sources: list[int] = self._find_clean_sources() if self.defect_rate < 1.0 else []

    def image_index(self, col: int, row: int) -> int:
        return self._order[(col * self.rows + row) % len(self._order)]

    def is_defective(self, col: int, row: int) -> bool:
        """Whether the strip's tile at (col, row) is a dataset image with its defects (seeded)."""
        if self.defect_rate >= 1.0:
            return True
        return random.Random(f"{self.seed}:tile:{col}:{row}").random() < self.defect_rate

    def _surface_defect(self, idx: int) -> bool:
        names = self.names
        return any(0 <= c < len(names) and names[c] in SURFACE_CLASSES for c, *_ in self._label(idx))

    def _find_clean_sources(self) -> list[int]:
        sources = [i for i in self._order if not self._surface_defect(i)
                   and self.clean.patch(i, self._image(i), self._label(i)) is not None]
        if not sources:
            raise ValueError(f"no image in {self.images_dir} has a clean area of {CLEAN_MIN_SIDE} px outside "
                             "its labelled boxes")
        return sources

    def _clean_tile(self, col: int, row: int) -> np.ndarray:
        rng = random.Random(f"{self.seed}:clean:{col}:{row}")
        idx = self.clean_sources[rng.randrange(len(self.clean_sources))]
        patch = self.clean.patch(idx, self._image(idx), self._label(idx))
        assert patch is not None
        return self.clean.tile_from((col, row), patch, rng)

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
                cx0 = (col - col0) * t
                if not self.is_defective(col, row):
                    canvas[row * t:(row + 1) * t, cx0:cx0 + t] = self._clean_tile(col, row)
                    continue
                idx = self.image_index(col, row)
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
