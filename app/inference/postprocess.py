"""Decode raw detector outputs (YOLOv5 and ultralytics layouts), class-aware NMS, map boxes back.

YOLOv5 ``[N, A, 5+nc]``: cx, cy, w, h (input pixels), objectness, class scores; score = obj * cls.
Ultralytics ``[N, 4+nc, A]``: cx, cy, w, h, class scores; no objectness.
The confidence filter runs before NMS, NMS sees at most ``max_candidates`` boxes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.detections import Detections
from app.inference.preprocess import Letterbox

MAX_CANDIDATES = 30_000
MAX_WH = 7680.0  # class offset for class-aware NMS in one pass; larger than any input side


def detect_layout(shape: Sequence[int], num_classes: int | None = None) -> str:
    """``yolov5`` or ``ultralytics`` from a 3-D output shape (and the class count when known)."""
    if len(shape) != 3:
        raise ValueError(f"detector output must be 3-D, got shape {tuple(shape)}")
    _, d1, d2 = shape
    if num_classes:
        if d2 == 5 + num_classes and d1 != 4 + num_classes:
            return "yolov5"
        if d1 == 4 + num_classes and d2 != 5 + num_classes:
            return "ultralytics"
    # anchors outnumber channels in any real detector
    return "ultralytics" if d1 < d2 else "yolov5"


def num_classes_of(shape: Sequence[int], layout: str) -> int:
    return int(shape[2]) - 5 if layout == "yolov5" else int(shape[1]) - 4


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    out = np.empty_like(xywh)
    half = xywh[:, 2:4] / 2
    out[:, 0:2] = xywh[:, 0:2] - half
    out[:, 2:4] = xywh[:, 0:2] + half
    return out


def candidates(pred: np.ndarray, layout: str, conf_threshold: float, multi_label: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw prediction -> (xyxy, score, class_id) above ``conf_threshold``."""
    if layout == "ultralytics":
        pred = pred.T  # [A, 4+nc]
        boxes, cls_scores = pred[:, :4], pred[:, 4:]
        if not multi_label:
            best = cls_scores.max(axis=1)
            keep = best > conf_threshold
            boxes, cls_scores = boxes[keep], cls_scores[keep]
    elif layout == "yolov5":
        keep = pred[:, 4] > conf_threshold  # cheap pre-filter: obj * cls <= obj
        pred = pred[keep]
        boxes, cls_scores = pred[:, :4], pred[:, 5:] * pred[:, 4:5]
    else:
        raise ValueError(f"unknown output layout {layout!r}")
    if cls_scores.shape[1] == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    if multi_label:
        rows, cols = np.nonzero(cls_scores > conf_threshold)
        scores = cls_scores[rows, cols]
        boxes, class_ids = boxes[rows], cols
    else:
        class_ids = cls_scores.argmax(axis=1)
        scores = cls_scores[np.arange(len(class_ids)), class_ids]
        keep = scores > conf_threshold
        boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
    # copy=False only saves a copy; its mutants (copy=True/None) are equivalent (docs/testing.md)
    return (xywh_to_xyxy(boxes.astype(np.float32, copy=False)),  # pragma: no mutate
            scores.astype(np.float32, copy=False),  # pragma: no mutate
            class_ids.astype(np.int64, copy=False),  # pragma: no mutate
            )


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of xyxy boxes ``a`` [n, 4] and ``b`` [m, 4], as an [n, m] matrix."""
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    return np.clip(br - tl, 0, None).prod(axis=2)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes ``a`` [n, 4] and ``b`` [m, 4]."""
    inter = box_intersection(a, b)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_detections(ref_xyxy: np.ndarray, ref_cls: np.ndarray, xyxy: np.ndarray, cls: np.ndarray,
                     iou: float = 0.9) -> int:
    """How many reference boxes have a box of the same class at IoU >= ``iou`` (each used once)."""
    if len(ref_xyxy) == 0 or len(xyxy) == 0:
        return 0
    m = box_iou(np.asarray(ref_xyxy, float), np.asarray(xyxy, float))
    m[np.asarray(ref_cls)[:, None] != np.asarray(cls)[None, :]] = 0
    used: set[int] = set()
    hits = 0
    for r in range(m.shape[0]):
        for c in np.argsort(-m[r]):
            if m[r, c] < iou:
                break
            if int(c) not in used:
                used.add(int(c))
                hits += 1
                break
    return hits


def _greedy_nms(xyxy: np.ndarray, iou_threshold: float, max_det: int) -> np.ndarray:
    """Greedy NMS over boxes already sorted best-first; positions of the kept boxes."""
    x1, y1, x2, y2 = (np.ascontiguousarray(xyxy[:, i]) for i in range(4))
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.arange(len(xyxy))
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float, max_det: int) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, best first, at most ``max_det``.

    Greedy NMS decides a box only from better-scored boxes, so running it on the best ``m`` boxes
    gives exactly the first keeps of the full run; ``m`` doubles until ``max_det`` boxes are kept or
    every box was seen. At low thresholds (mAP evaluation) this skips most of the candidates."""
    order = np.argsort(-scores, kind="stable")
    n = len(order)
    m = min(n, max(4 * max_det, 1024))
    while True:
        kept = _greedy_nms(xyxy[order[:m]], iou_threshold, max_det)
        if len(kept) >= max_det or m >= n:
            return order[kept]
        m = min(n, 4 * m)


def batched_nms(xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float,
                max_det: int) -> np.ndarray:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    offset = class_ids.astype(np.float32)[:, None] * MAX_WH
    return nms(xyxy + offset, scores, iou_threshold, max_det)


def postprocess_one(pred: np.ndarray, lb: Letterbox, layout: str, names: Sequence[str],
                    conf_threshold: float, iou_threshold: float, max_det: int,
                    max_candidates: int = MAX_CANDIDATES, multi_label: bool = False) -> Detections:
    xyxy, scores, class_ids = candidates(pred, layout, conf_threshold, multi_label)
    if len(scores) > max_candidates:
        top = np.argpartition(-scores, max_candidates - 1)[:max_candidates]
        xyxy, scores, class_ids = xyxy[top], scores[top], class_ids[top]
    keep = batched_nms(xyxy, scores, class_ids, iou_threshold, max_det)
    return Detections(lb.to_original(xyxy[keep]), scores[keep], class_ids[keep], names)


def postprocess(raw: np.ndarray, params: Sequence[Letterbox], layout: str, names: Sequence[str],
                conf_threshold: float = 0.25, iou_threshold: float = 0.45, max_det: int = 300,
                max_candidates: int = MAX_CANDIDATES, multi_label: bool = False) -> list[Detections]:
    """A raw batch output ``[N, ...]`` -> one ``Detections`` per image, in original pixels."""
    if raw.shape[0] < len(params):
        raise ValueError(f"output batch {raw.shape[0]} is smaller than the input batch {len(params)}")
    return [postprocess_one(raw[i], lb, layout, names, conf_threshold, iou_threshold, max_det,
                            max_candidates, multi_label)
            for i, lb in enumerate(params)]
