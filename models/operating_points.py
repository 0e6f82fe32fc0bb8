"""Operating points: a confidence threshold per class, chosen on held-out images from the service's own
boxes (its NMS, one class per box), matched to the truth at IoU 0.5 by ``greedy_match`` (the matching of
``evaluate``), then stored in the model's metadata (``operating_points``) where the service takes each
class's default threshold from.

The boxes of a class above a threshold are a prefix of its boxes sorted by confidence, and greedy
matching best-first matches that prefix as it would match it alone; so one pass at a low threshold gives
precision and recall at every threshold: the PR curve of the class, point by point."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from app.detections import Detections
from app.inference.metadata import OPERATING_POINTS_KEY
from models.evaluate import SERVE_IOU, greedy_match

MATCH_IOU = 0.5


@dataclass(frozen=True)
class ClassBoxes:
    """One class's boxes over a set of images, best first: their confidence and whether each is true
    (matched to a true box of the class); ``instances``: the true boxes of the class."""

    confidence: np.ndarray
    true: np.ndarray
    instances: int


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall when the boxes down to ``confidence[k]`` are kept (k = 0 ... n-1)."""

    confidence: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    @property
    def f1(self) -> np.ndarray:
        total = self.precision + self.recall
        return np.divide(2 * self.precision * self.recall, total, out=np.zeros_like(total), where=total > 0)


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    precision: float
    recall: float
    f1: float
    instances: int
    true_positives: int
    false_positives: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("threshold", "precision", "recall", "f1"):
            d[key] = round(float(d[key]), 4)
        return d


def class_boxes(scored: Sequence[tuple[Detections, np.ndarray, np.ndarray]], nc: int,
                iou: float = MATCH_IOU) -> list[ClassBoxes]:
    """Per class: every box of that class in ``scored`` ((boxes, true xyxy, true classes) per image),
    matched against the true boxes of the same class of its image."""
    confidence: list[list[np.ndarray]] = [[] for _ in range(nc)]
    true: list[list[np.ndarray]] = [[] for _ in range(nc)]
    instances = [0] * nc
    for dets, gt_xyxy, gt_cls in scored:
        for c in range(nc):
            mine = dets.class_id == c
            truth = gt_xyxy[gt_cls == c]
            instances[c] += len(truth)
            taken = greedy_match(dets.xyxy[mine], dets.confidence[mine], truth, iou)
            confidence[c].append(dets.confidence[mine])
            true[c].append(taken >= 0)
    out = []
    for c in range(nc):
        conf = np.concatenate(confidence[c]) if confidence[c] else np.zeros(0, np.float32)
        hit = np.concatenate(true[c]) if true[c] else np.zeros(0, bool)
        order = np.argsort(-conf, kind="stable")
        out.append(ClassBoxes(conf[order].astype(np.float64), hit[order], instances[c]))
    return out


def pr_curve(boxes: ClassBoxes) -> PRCurve:
    tp = np.cumsum(boxes.true)
    kept = np.arange(1, len(boxes.true) + 1)
    return PRCurve(boxes.confidence, tp / kept, tp / max(boxes.instances, 1))


def _cut_points(confidence: np.ndarray) -> np.ndarray:
    """Indexes k where a threshold can fall between box k and box k+1 (not inside a run of equal
    confidences): the last box of each run."""
    n = len(confidence)
    return np.array([k for k in range(n) if k == n - 1 or confidence[k + 1] < confidence[k]], dtype=np.int64)


def _threshold_at(confidence: np.ndarray, k: int, floor: float) -> float:
    """A threshold that keeps boxes 0..k and drops the next: half-way between their confidences (the
    engine keeps a score above its threshold, the camera rules one equal to it: half-way is safe for
    both), rounded to 4 decimals where that stays in between."""
    below = float(confidence[k + 1]) if k + 1 < len(confidence) else floor
    above = float(confidence[k])
    middle = (above + below) / 2
    rounded = round(middle, 4)
    return rounded if below < rounded < above else middle


def choose_point(boxes: ClassBoxes, min_precision: float | None = None,
                 floor: float = 0.0) -> OperatingPoint | None:
    """The threshold of best F1 (ties: the higher threshold), or with ``min_precision`` the lowest one
    whose precision reaches it (the most recall at that precision; best F1 where none does). None for a
    class with no boxes or no true boxes. ``floor``: the confidence the boxes were collected down to."""
    if not len(boxes.confidence) or boxes.instances == 0:
        return None
    curve = pr_curve(boxes)
    cuts = _cut_points(boxes.confidence)
    f1 = curve.f1[cuts]
    k = int(cuts[int(np.argmax(f1))])  # argmax: the first, i.e. the highest threshold, of equal F1
    if min_precision is not None:
        reaching = cuts[curve.precision[cuts] >= min_precision]
        if len(reaching):
            k = int(reaching[-1])
    tp = int(np.sum(boxes.true[: k + 1]))
    return OperatingPoint(
        threshold=_threshold_at(boxes.confidence, k, floor), precision=float(curve.precision[k]),
        recall=float(curve.recall[k]), f1=float(curve.f1[k]), instances=boxes.instances,
        true_positives=tp, false_positives=k + 1 - tp,
    )


def operating_points(scored: Sequence[tuple[Detections, np.ndarray, np.ndarray]], names: Sequence[str], *,
                     min_precision: float | None = None, floor: float = 0.0, split: str = "val"
                     ) -> tuple[dict[str, Any], list[ClassBoxes]]:
    """The metadata record (see ``app.inference.metadata``) and the per-class boxes it was chosen from."""
    per_class = class_boxes(scored, len(names))
    classes = {}
    for name, boxes in zip(names, per_class, strict=True):
        point = choose_point(boxes, min_precision, floor)
        if point is not None:
            classes[name] = point.to_dict()
    record = {
        "method": "best_f1" if min_precision is None else "min_precision",
        "min_precision": min_precision,
        "split": split,
        "images": len(scored),
        "match_iou": MATCH_IOU,
        "nms_iou": SERVE_IOU,
        "classes": classes,
    }
    return record, per_class


def point_at(boxes: ClassBoxes, threshold: float) -> OperatingPoint | None:
    """What a given threshold keeps of one class's boxes (those at or above it, as a camera keeps
    them): its precision, recall and F1. None for a class without true boxes."""
    if boxes.instances == 0:
        return None
    kept = int(np.sum(boxes.confidence >= threshold))
    if kept == 0:
        return OperatingPoint(threshold=threshold, precision=0.0, recall=0.0, f1=0.0,
                              instances=boxes.instances, true_positives=0, false_positives=0)
    curve, k = pr_curve(boxes), kept - 1
    tp = int(np.sum(boxes.true[:kept]))
    return OperatingPoint(threshold=threshold, precision=float(curve.precision[k]),
                          recall=float(curve.recall[k]), f1=float(curve.f1[k]), instances=boxes.instances,
                          true_positives=tp, false_positives=kept - tp)


def carried_record(source: dict[str, Any], source_version: str, names: Sequence[str]) -> dict[str, Any]:
    """The record to store in a model that takes over the points ``source`` (another model's record)
    chose: the same thresholds and the figures of where they were chosen, for the classes this model
    has, with ``carried_from``: the version of the model that chose them (kept through further
    carries). The way to give a model fitted on all the data points chosen on held-out images."""
    classes = {name: point for name, point in source.get("classes", {}).items() if name in names}
    return {**source, "classes": classes, "carried_from": source.get("carried_from") or source_version}


def measured_at(per_class: Sequence[ClassBoxes], names: Sequence[str], record: dict[str, Any],
                split: str, images: int) -> dict[str, Any]:
    """This model's precision and recall on ``split`` at each class's threshold of ``record``."""
    classes = {}
    for name, boxes in zip(names, per_class, strict=True):
        point = record["classes"].get(name)
        measured = None if point is None else point_at(boxes, float(point["threshold"]))
        if measured is not None:
            classes[name] = measured.to_dict()
    return {"method": "carried", "carried_from": record.get("carried_from"), "split": split, "images": images,
            "match_iou": MATCH_IOU, "nms_iou": SERVE_IOU, "classes": classes}


def metadata_props(record: dict[str, Any]) -> dict[str, str]:
    """The record as the ``metadata_props`` entry the service reads."""
    return {OPERATING_POINTS_KEY: json.dumps(record)}
