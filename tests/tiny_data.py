"""A tiny generated defect data set (YOLO format) whose classes and box shapes are unlike NEU-DET's:
grey textured plates with dark wide "scuff" bars, bright round "dent" spots and tall "crack" lines."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

TINY_NAMES = ["scuff", "dent", "crack", "burr", "stain", "chip"]  # six, like NEU-DET: names decide


Box = tuple[int, float, float, float, float]  # class, cx, cy, w, h (normalised)


def _plate(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[Box]]:
    img = (rng.normal(128, 12, (size, size, 1)) * np.ones((1, 1, 3))).clip(0, 255).astype(np.uint8)
    boxes = []
    for k in range(4):
        cls = int(rng.integers(0, 3))
        if cls == 0:  # wide bar
            w, h = rng.integers(size // 2, size * 3 // 4), rng.integers(size // 16, size // 10)
        elif cls == 1:  # round spot
            w = h = rng.integers(size // 10, size // 6)
        else:  # tall line
            w, h = rng.integers(size // 20, size // 12), rng.integers(size // 2, size * 3 // 4)
        x0 = int(rng.integers(0, size - w))
        y0 = int(rng.integers(0, size - h))
        colour = (40, 40, 40) if cls != 1 else (230, 230, 230)
        cv2.rectangle(img, (x0, y0), (x0 + int(w) - 1, y0 + int(h) - 1), colour, -1)
        boxes.append((cls, (x0 + w / 2) / size, (y0 + h / 2) / size, w / size, h / size))
        if k >= 2 and rng.random() < 0.5:
            break
    return img, boxes


def make_tiny_dataset(root: Path, train: int = 8, val: int = 4, size: int = 96, seed: int = 0,
                      names: list[str] | None = None) -> Path:
    """Write ``root/{images,labels}``, ``train.txt``, ``val.txt`` and ``data.yaml``; returns data.yaml."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for i in range(train + val):
        split = "train" if i < train else "val"
        img, boxes = _plate(rng, size)
        cv2.imwrite(str(root / "images" / f"plate_{i}.jpg"), img)
        (root / "labels" / f"plate_{i}.txt").write_text(
            "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes))
        lists[split].append(f"images/plate_{i}.jpg")
    for split, entries in lists.items():
        (root / f"{split}.txt").write_text("\n".join(entries) + "\n")
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "train.txt", "val": "val.txt",
                                    "names": list(names or TINY_NAMES)}))
    return data
