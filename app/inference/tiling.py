"""Tiled detection for frames much larger than the model's input.

Letterboxing a 640x480 frame into a 256 px model shrinks every defect 2.5x; a model trained on 200 px
NEU-DET images then misses most of them (docs/benchmarks.md, "Camera scale and tiling"). Tiling cuts
the frame into overlapping ``size`` x ``size`` windows that the model sees at their own scale, detects
on all windows as one batch, shifts the boxes back into frame pixels and joins the pieces of a defect
that a window border cut in two.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.detections import Detections


def _starts(length: int, size: int, overlap: int) -> list[int]:
    if length <= size:
        return [0]
    stride = size - overlap
    starts = list(range(0, length - size, stride))
    starts.append(length - size)  # the last window ends at the edge
    return starts


def tile_windows(width: int, height: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) windows covering the frame: ``size`` square (or the whole side when the frame is
    smaller), neighbours overlapping by at least ``overlap`` pixels, row by row."""
    if size <= overlap or size < 1 or overlap < 0:
        raise ValueError(f"tile size {size} must exceed the overlap {overlap}")
    w, h = min(size, width), min(size, height)
    return [(x, y, w, h) for y in _starts(height, size, overlap) for x in _starts(width, size, overlap)]


def split(image: np.ndarray, size: int, overlap: int) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """The windows of ``image`` (views, no copies) and their (x, y) offsets."""
    height, width = image.shape[:2]
    windows = tile_windows(width, height, size, overlap)
    return [image[y:y + h, x:x + w] for x, y, w, h in windows], [(x, y) for x, y, _, _ in windows]


def _intersection_over_smaller(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(np.minimum(area, areas), 1e-9)


def merge(parts: Sequence[Detections], offsets: Sequence[tuple[int, int]], names: Sequence[str],
          overlap_threshold: float = 0.5, max_det: int = 300) -> Detections:
    """One frame's detections from its windows' detections.

    Boxes are shifted by their window's offset. Going by confidence, a box of the same class as an
    already kept box **from another window**, with intersection over the smaller box >= the threshold,
    is the same defect seen twice (the overlap) or in two pieces (a window border): the kept box grows
    to the union of both and keeps the higher confidence. Boxes of one window were already separated by
    that window's NMS and are left as they are."""
    if len(parts) != len(offsets):
        raise ValueError(f"{len(parts)} windows' detections for {len(offsets)} offsets")
    xyxy = [d.xyxy + np.array([x, y, x, y], np.float32) for d, (x, y) in zip(parts, offsets, strict=True)]
    if not xyxy or sum(len(b) for b in xyxy) == 0:
        return Detections.empty(names)
    boxes = np.concatenate(xyxy)
    scores = np.concatenate([d.confidence for d in parts])
    classes = np.concatenate([d.class_id for d in parts])
    window = np.concatenate([np.full(len(d), k) for k, d in enumerate(parts)])
    kept: list[int] = []
    out_boxes: list[np.ndarray] = []
    kept_windows: list[set[int]] = []
    for i in np.argsort(-scores, kind="stable"):
        joined = False
        if kept:
            same = np.array([classes[k] == classes[i] and window[i] not in kept_windows[n]
                             for n, k in enumerate(kept)])
            if same.any():
                candidates = np.flatnonzero(same)
                ios = _intersection_over_smaller(boxes[i], np.stack([out_boxes[n] for n in candidates]))
                best = int(np.argmax(ios))
                if ios[best] >= overlap_threshold:
                    n = int(candidates[best])
                    b = out_boxes[n]
                    out_boxes[n] = np.array([min(b[0], boxes[i][0]), min(b[1], boxes[i][1]),
                                             max(b[2], boxes[i][2]), max(b[3], boxes[i][3])], np.float32)
                    kept_windows[n].add(int(window[i]))
                    joined = True
        if not joined:
            kept.append(int(i))
            out_boxes.append(boxes[i].copy())
            kept_windows.append({int(window[i])})
    kept, out_boxes = kept[:max_det], out_boxes[:max_det]  # kept is in confidence order
    return Detections(np.stack(out_boxes), scores[kept], classes[kept], names)
