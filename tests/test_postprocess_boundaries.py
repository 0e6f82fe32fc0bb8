"""Every boundary of decoding and NMS pinned by a case that sits on it: the IoU threshold, the
confidence threshold, the candidate cap and ``max_det`` (a one-character change to any of them fails
here)."""

from __future__ import annotations

import numpy as np
import pytest

from app.inference.postprocess import batched_nms, candidates, nms, postprocess_one
from app.inference.preprocess import Letterbox

NAMES = ["a", "b"]
IDENTITY = Letterbox(scale_x=1.0, scale_y=1.0, pad_x=0, pad_y=0, width=1000, height=1000)


def yolov5_rows(rows: list[tuple[float, float, float, float, float, float, float]]) -> np.ndarray:
    """cx, cy, w, h, objectness, class a, class b per candidate."""
    return np.asarray(rows, dtype=np.float32)


# two boxes whose IoU is exactly 0.5 in binary floating point: intersection 50, union 100
TOP = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], dtype=np.float32)


def test_nms_keeps_a_box_whose_iou_equals_the_threshold() -> None:
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(TOP, scores, iou_threshold=0.5, max_det=10).tolist() == [0, 1]


def test_nms_suppresses_a_box_just_above_the_threshold() -> None:
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(TOP, scores, iou_threshold=0.4999, max_det=10).tolist() == [0]


def test_nms_keeps_the_better_scored_box_of_an_overlapping_pair() -> None:
    scores = np.array([0.3, 0.8], np.float32)
    assert nms(TOP, scores, iou_threshold=0.1, max_det=10).tolist() == [1]


def test_nms_returns_exactly_max_det_boxes_best_first() -> None:
    xyxy = np.array([[20 * k, 0, 20 * k + 10, 10] for k in range(6)], np.float32)  # disjoint
    scores = np.array([0.1, 0.6, 0.3, 0.9, 0.5, 0.2], np.float32)
    assert nms(xyxy, scores, 0.5, max_det=3).tolist() == [3, 1, 4]
    assert nms(xyxy, scores, 0.5, max_det=6).tolist() == [3, 1, 4, 2, 5, 0]


def test_boxes_of_different_classes_never_suppress_each_other() -> None:
    xyxy = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert sorted(batched_nms(xyxy, scores, np.array([0, 1]), 0.5, 10).tolist()) == [0, 1]
    assert batched_nms(xyxy, scores, np.array([1, 1]), 0.5, 10).tolist() == [0]


@pytest.mark.parametrize(("threshold", "kept"), [(0.5, 0), (0.4999, 1)])
def test_a_score_equal_to_the_confidence_threshold_is_dropped(threshold: float, kept: int) -> None:
    # objectness 1.0 x class score 0.5 = 0.5 exactly
    pred = yolov5_rows([(50, 50, 10, 10, 1.0, 0.5, 0.0)])
    xyxy, scores, class_ids = candidates(pred, "yolov5", threshold)
    assert len(scores) == kept


@pytest.mark.parametrize(("threshold", "kept"), [(0.5, 0), (0.4999, 1)])
def test_the_objectness_prefilter_uses_the_same_strict_bound(threshold: float, kept: int) -> None:
    pred = yolov5_rows([(50, 50, 10, 10, 0.5, 1.0, 0.0)])  # objectness alone sits on the threshold
    assert len(candidates(pred, "yolov5", threshold)[1]) == kept


@pytest.mark.parametrize(("threshold", "kept"), [(0.5, 0), (0.4999, 1)])
def test_the_ultralytics_layout_uses_the_same_strict_bound(threshold: float, kept: int) -> None:
    pred = np.array([[50, 50, 10, 10, 0.5, 0.0]], np.float32).T  # [4+nc, A]
    assert len(candidates(pred, "ultralytics", threshold)[1]) == kept


def test_the_candidate_cap_keeps_the_best_scores() -> None:
    scores = [0.31, 0.95, 0.52, 0.77, 0.4]
    pred = yolov5_rows([(30 * k + 5, 5, 10, 10, 1.0, s, 0.0) for k, s in enumerate(scores)])  # disjoint
    dets = postprocess_one(pred, IDENTITY, "yolov5", NAMES, conf_threshold=0.1, iou_threshold=0.5,
                           max_det=10, max_candidates=2)
    assert sorted(dets.confidence.tolist(), reverse=True) == pytest.approx([0.95, 0.77])
    assert sorted(dets.xyxy[:, 0].tolist()) == [30.0, 90.0]


def test_a_cap_at_the_number_of_candidates_keeps_them_all() -> None:
    pred = yolov5_rows([(30 * k + 5, 5, 10, 10, 1.0, 0.5 + 0.1 * k, 0.0) for k in range(3)])
    dets = postprocess_one(pred, IDENTITY, "yolov5", NAMES, 0.1, 0.5, 10, max_candidates=3)
    assert len(dets) == 3


def test_boxes_map_back_through_the_letterbox_and_clip_to_the_frame() -> None:
    lb = Letterbox(scale_x=0.5, scale_y=0.5, pad_x=0, pad_y=16, width=100, height=60)
    pred = yolov5_rows([(20, 36, 20, 20, 1.0, 0.9, 0.0), (48, 40, 8, 60, 1.0, 0.0, 0.9)])
    dets = postprocess_one(pred, lb, "yolov5", NAMES, 0.25, 0.45, 10)
    by_class = {int(c): box.tolist() for c, box in zip(dets.class_id, dets.xyxy, strict=True)}
    assert by_class[0] == [20.0, 20.0, 60.0, 60.0]  # (10..30, 26..46) input -> original pixels
    assert by_class[1] == [88.0, 0.0, 100.0, 60.0]  # beyond the frame on three sides: clipped
