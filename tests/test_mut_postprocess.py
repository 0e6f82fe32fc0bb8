"""Decoding, IoU, matching and NMS pinned value by value (cases found by mutation testing of
app/inference/postprocess.py: each one fails for a mutant that the boundary tests let through)."""

from __future__ import annotations

import numpy as np
import pytest

from app.inference.postprocess import (
    batched_nms,
    box_iou,
    candidates,
    detect_layout,
    match_detections,
    nms,
    num_classes_of,
    postprocess,
    xywh_to_xyxy,
)
from app.inference.preprocess import Letterbox

NAMES = ["a", "b"]
IDENTITY = Letterbox(scale_x=1.0, scale_y=1.0, pad_x=0, pad_y=0, width=1000, height=1000)


@pytest.mark.parametrize(
    ("shape", "num_classes", "layout"),
    [
        ((1, 25200, 11), 6, "yolov5"),
        ((1, 10, 8400), 6, "ultralytics"),
        ((1, 10, 11), 6, "ultralytics"),  # both readings fit: channels < anchors decides
        ((1, 11, 10), 6, "yolov5"),  # neither fits exactly: the larger axis holds the anchors
        ((1, 30, 20), 6, "yolov5"),
        ((1, 20, 30), 6, "ultralytics"),
        ((1, 10, 10), None, "yolov5"),
        ((1, 10, 11), None, "ultralytics"),
        ((1, 10, 11), 0, "ultralytics"),
        ((1, 6, 3), 2, "ultralytics"),  # 6 == 4 + 2 and 3 != 5 + 2, although 6 > 3
    ],
)
def test_detect_layout_reads_the_shape(shape: tuple[int, int, int], num_classes: int | None,
                                       layout: str) -> None:
    assert detect_layout(shape, num_classes) == layout


def test_a_known_class_count_overrides_the_anchor_heuristic() -> None:
    assert detect_layout((1, 5, 7), 2) == "yolov5"  # 7 == 5 + 2, although 5 < 7 reads as ultralytics
    assert detect_layout((1, 6, 5), 2) == "ultralytics"  # 6 == 4 + 2, although 6 > 5 reads as yolov5


def test_detect_layout_rejects_a_shape_that_is_not_3d() -> None:
    with pytest.raises(ValueError, match=r"must be 3-D, got shape \(1, 2, 3, 4\)"):
        detect_layout((1, 2, 3, 4))


def test_num_classes_of_each_layout() -> None:
    assert num_classes_of((1, 25200, 11), "yolov5") == 6
    assert num_classes_of((1, 10, 8400), "ultralytics") == 6


def test_xywh_to_xyxy_halves_the_size_around_the_centre() -> None:
    out = xywh_to_xyxy(np.array([[10, 20, 4, 6], [0, 0, 2, 8]], np.float32))
    assert out.dtype == np.float32
    assert out.tolist() == [[8, 17, 12, 23], [-1, -4, 1, 4]]


def yolov5(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def test_yolov5_candidates_multiply_objectness_by_the_best_class() -> None:
    pred = yolov5([[50, 50, 10, 20, 0.8, 0.5, 0.75], [10, 10, 2, 2, 0.9, 0.9, 0.1]])
    xyxy, scores, cls = candidates(pred, "yolov5", 0.3)
    assert xyxy.tolist() == [[45, 40, 55, 60], [9, 9, 11, 11]]
    assert scores.tolist() == pytest.approx([0.6, 0.81])
    assert cls.tolist() == [1, 0]
    assert (xyxy.dtype, scores.dtype, cls.dtype) == (np.float32, np.float32, np.int64)


def test_yolov5_multi_label_keeps_every_class_above_the_threshold() -> None:
    pred = yolov5([[50, 50, 10, 20, 1.0, 0.5, 0.75], [10, 10, 2, 2, 1.0, 0.9, 0.1]])
    xyxy, scores, cls = candidates(pred, "yolov5", 0.3, multi_label=True)
    assert cls.tolist() == [0, 1, 0]
    assert scores.tolist() == pytest.approx([0.5, 0.75, 0.9])
    assert xyxy.tolist() == [[45, 40, 55, 60], [45, 40, 55, 60], [9, 9, 11, 11]]
    assert (xyxy.dtype, scores.dtype, cls.dtype) == (np.float32, np.float32, np.int64)


def ultralytics(rows: list[list[float]]) -> np.ndarray:
    """Rows as cx, cy, w, h, class scores; the model emits them transposed."""
    return np.asarray(rows, dtype=np.float32).T


def test_ultralytics_candidates_take_the_best_class_without_objectness() -> None:
    pred = ultralytics([[50, 50, 10, 20, 0.2, 0.7], [10, 10, 2, 2, 0.1, 0.2], [5, 5, 2, 2, 0.6, 0.4]])
    xyxy, scores, cls = candidates(pred, "ultralytics", 0.3)
    assert xyxy.tolist() == [[45, 40, 55, 60], [4, 4, 6, 6]]
    assert scores.tolist() == pytest.approx([0.7, 0.6])
    assert cls.tolist() == [1, 0]


def test_ultralytics_multi_label_keeps_every_class_above_the_threshold() -> None:
    pred = ultralytics([[50, 50, 10, 20, 0.5, 0.7], [10, 10, 2, 2, 0.1, 0.2]])
    xyxy, scores, cls = candidates(pred, "ultralytics", 0.3, multi_label=True)
    assert cls.tolist() == [0, 1]
    assert scores.tolist() == pytest.approx([0.5, 0.7])
    assert xyxy.tolist() == [[45, 40, 55, 60], [45, 40, 55, 60]]


@pytest.mark.parametrize(("layout", "width", "multi_label"), [("yolov5", 5, False), ("ultralytics", 4, True)])
def test_an_output_without_classes_gives_typed_empty_candidates(layout: str, width: int,
                                                                 multi_label: bool) -> None:
    pred = np.full((3, width), 0.9, np.float32)
    xyxy, scores, cls = candidates(pred if layout == "yolov5" else pred.T, layout, 0.1, multi_label)
    assert (xyxy.shape, scores.shape, cls.shape) == ((0, 4), (0,), (0,))
    assert (xyxy.dtype, scores.dtype, cls.dtype) == (np.float32, np.float32, np.int64)


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown output layout 'yolov8'"):
        candidates(np.zeros((2, 7), np.float32), "yolov8", 0.1)


def test_box_iou_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], float)
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])
    assert iou[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # zero-area boxes: 0, never NaN


def test_box_iou_of_partial_overlap_in_both_axes() -> None:
    iou = box_iou(np.array([[0, 0, 4, 4]], float), np.array([[2, 1, 6, 3]], float))
    assert iou[0, 0] == pytest.approx(4 / (16 + 8 - 4))


REF = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)


def test_match_detections_counts_same_class_boxes_at_the_iou() -> None:
    assert match_detections(REF, np.array([0, 1]), REF, np.array([0, 1])) == 2
    assert match_detections(REF, np.array([0, 1]), REF, np.array([1, 0])) == 0
    assert match_detections(REF, np.array([0, 1]), REF[:0], np.array([], int)) == 0
    assert match_detections(REF[:0], np.array([], int), REF, np.array([0, 1])) == 0


def test_match_detections_threshold_is_inclusive() -> None:
    shifted = np.array([[0, 0, 10, 8]], float)  # IoU 0.8 with the first reference box
    assert match_detections(REF[:1], np.array([0]), shifted, np.array([0]), iou=0.8) == 1
    assert match_detections(REF[:1], np.array([0]), shifted, np.array([0]), iou=0.81) == 0
    assert match_detections(REF[:1], np.array([0]), shifted, np.array([0])) == 0  # default 0.9


def test_match_detections_uses_each_box_once_and_takes_the_best() -> None:
    ref = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    one = np.array([[0, 0, 10, 10]], float)
    assert match_detections(ref, np.array([0, 0]), one, np.array([0])) == 1
    # the best box is already used by the first reference: the second falls back to the next one
    two = np.array([[0, 0, 10, 10], [0, 0, 10, 9.5]], float)
    assert match_detections(ref, np.array([0, 0]), two, np.array([0, 0])) == 2
    # with the next one below the IoU the second reference stays unmatched
    assert match_detections(ref, np.array([0, 0]), two, np.array([0, 0]), iou=0.96) == 1


def reference_nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float, max_det: int) -> list[int]:
    """Plain greedy NMS over all boxes, one box at a time."""
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if len(keep) == max_det:
            break
        if all(box_iou(xyxy[[i]], xyxy[[k]])[0, 0] <= iou_threshold for k in keep):
            keep.append(int(i))
    return keep


def test_nms_over_more_candidates_than_the_first_window_matches_plain_greedy_nms() -> None:
    rng = np.random.default_rng(7)
    n = 6000
    centres = rng.uniform(0, 100, size=(n, 2))
    xyxy = np.concatenate([centres, centres + 100], axis=1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n
    kept = nms(xyxy, scores, iou_threshold=0.3, max_det=50)
    expected = reference_nms(xyxy, scores, 0.3, 50)
    assert len(expected) < 50  # the window has to grow to every box before it stops
    assert kept.tolist() == expected


def test_nms_stops_at_max_det_inside_the_first_window() -> None:
    xyxy = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(2000)], np.float32)
    scores = np.linspace(1, 0.1, 2000).astype(np.float32)
    assert nms(xyxy, scores, 0.5, max_det=3).tolist() == [0, 1, 2]
    assert nms(xyxy, scores, 0.5, max_det=2000).tolist() == list(range(2000))


def test_nms_keeps_degenerate_boxes() -> None:
    xyxy = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [10, 10, 0, 0]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(xyxy, scores, 0.5, max_det=10).tolist() == [0, 1, 2]


def test_nms_suppresses_a_contained_box() -> None:
    xyxy = np.array([[0, 0, 10, 10], [1, 1, 9, 9], [0, 0, 4, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    # IoU 0.64 and 0.4: the first goes at 0.5, both stay at 0.7
    assert nms(xyxy, scores, 0.5, max_det=10).tolist() == [0, 2]
    assert nms(xyxy, scores, 0.7, max_det=10).tolist() == [0, 1, 2]


def test_batched_nms_without_boxes_is_an_empty_index() -> None:
    kept = batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5, 10)
    assert kept.dtype == np.int64 and kept.shape == (0,)


def test_batched_nms_separates_classes_far_apart() -> None:
    # identical boxes 7000 px wide: a class offset smaller than MAX_WH would still let them overlap
    xyxy = np.array([[0, 0, 7000, 10], [0, 0, 7000, 10]], np.float32)
    kept = batched_nms(xyxy, np.array([0.9, 0.8], np.float32), np.array([0, 1]), 0.5, 10)
    assert kept.tolist() == [0, 1]


def test_postprocess_defaults_keep_scores_above_a_quarter_and_suppress_above_045() -> None:
    raw = np.array([[
        [100, 100, 20, 20, 1.0, 0.9, 0.0],
        [104, 100, 20, 20, 1.0, 0.8, 0.0],  # IoU 16/24 = 0.67 with the first: suppressed
        [300, 300, 20, 20, 1.0, 0.26, 0.0],
        [500, 500, 20, 20, 1.0, 0.0, 0.25],  # exactly the default threshold: dropped
        [700, 700, 20, 20, 1.0, 0.0, 0.5],
        [711, 700, 20, 20, 1.0, 0.0, 0.4],  # IoU 9/31 = 0.29: kept
    ]], np.float32)
    [dets] = postprocess(raw, [IDENTITY], "yolov5", NAMES)
    assert dets.confidence.tolist() == pytest.approx([0.9, 0.5, 0.4, 0.26])
    assert dets.class_id.tolist() == [0, 1, 1, 0]
    assert dets.xyxy[0].tolist() == [90, 90, 110, 110]


def test_postprocess_defaults_keep_up_to_300_boxes() -> None:
    rows = [[20 * (i % 40) + 10, 20 * (i // 40) + 10, 10, 10, 1.0, 0.9 - i / 1000, 0.0] for i in range(320)]
    [dets] = postprocess(np.array([rows], np.float32), [IDENTITY], "yolov5", NAMES)
    assert len(dets) == 300


def test_postprocess_passes_every_setting_to_each_image() -> None:
    one = [[100, 100, 20, 20, 1.0, 0.6, 0.5], [104, 100, 20, 20, 1.0, 0.7, 0.0],
           [400, 400, 20, 20, 1.0, 0.4, 0.0]]
    raw = np.array([one, one], np.float32)
    half = Letterbox(scale_x=0.5, scale_y=0.5, pad_x=0, pad_y=0, width=1000, height=1000)
    plain, scaled = postprocess(raw, [IDENTITY, half], "yolov5", NAMES, conf_threshold=0.45,
                                iou_threshold=0.7, max_det=10)
    assert plain.confidence.tolist() == pytest.approx([0.7, 0.6])
    assert scaled.xyxy.tolist() == [[188, 180, 228, 220], [180, 180, 220, 220]]
    [capped] = postprocess(raw[:1], [IDENTITY], "yolov5", NAMES, conf_threshold=0.3, max_det=1)
    assert capped.confidence.tolist() == pytest.approx([0.7])
    [few] = postprocess(raw[:1], [IDENTITY], "yolov5", NAMES, conf_threshold=0.3, iou_threshold=0.9,
                        max_candidates=1)
    assert few.confidence.tolist() == pytest.approx([0.7])
    [multi] = postprocess(raw[:1], [IDENTITY], "yolov5", NAMES, conf_threshold=0.45, iou_threshold=0.9,
                          multi_label=True)
    assert sorted(multi.confidence.tolist()) == pytest.approx([0.5, 0.6, 0.7])
    [loose] = postprocess(raw[:1], [IDENTITY], "yolov5", NAMES, conf_threshold=0.3, iou_threshold=0.9)
    assert loose.confidence.tolist() == pytest.approx([0.7, 0.6, 0.4])
    assert loose.names == NAMES


def test_postprocess_refuses_a_batch_smaller_than_its_inputs() -> None:
    raw = np.zeros((1, 3, 7), np.float32)
    with pytest.raises(ValueError, match="output batch 1 is smaller than the input batch 2"):
        postprocess(raw, [IDENTITY, IDENTITY], "yolov5", NAMES)
    assert len(postprocess(np.zeros((2, 3, 7), np.float32), [IDENTITY], "yolov5", NAMES)) == 1


def test_multi_label_keeps_a_class_score_above_but_not_at_the_threshold() -> None:
    pred = yolov5([[50, 50, 10, 20, 1.0, 0.5, 0.25]])
    _, scores, cls = candidates(pred, "yolov5", 0.25, multi_label=True)
    assert (scores.tolist(), cls.tolist()) == ([0.5], [0])


def test_box_iou_of_boxes_smaller_than_a_pixel() -> None:
    tiny = np.array([[0, 0, 0.5, 0.5]], float)
    assert box_iou(tiny, tiny)[0, 0] == pytest.approx(1.0)


def test_match_detections_with_empty_lists_and_all_classes_different() -> None:
    assert match_detections(REF.tolist(), [0, 1], [], []) == 0
    assert match_detections([], [], REF.tolist(), [0, 1]) == 0
    assert match_detections(REF[:1], np.array([0]), REF[:1], np.array([1])) == 0


def test_match_detections_visits_every_reference_box() -> None:
    # more references than candidates: the one candidate matches the last reference
    assert match_detections(REF, np.array([0, 1]), REF[1:], np.array([1])) == 1


def test_nms_of_no_boxes_is_an_empty_index() -> None:
    kept = nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5, 10)
    assert kept.dtype == np.int64 and kept.shape == (0,)


@pytest.mark.parametrize("thin", [[0, 0, 0.5, 10], [0, 0, 10, 0.5], [0, 0, 0.5, 0.5]])
def test_nms_suppresses_a_duplicate_of_a_box_thinner_than_a_pixel(thin: list[float]) -> None:
    xyxy = np.array([thin, thin], np.float32)
    assert nms(xyxy, np.array([0.9, 0.8], np.float32), 0.5, max_det=10).tolist() == [0]


def test_nms_at_iou_zero_keeps_boxes_that_only_share_a_row_or_a_column() -> None:
    xyxy = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30], [10, 10, 20, 20]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    assert nms(xyxy, scores, 0.0, max_det=10).tolist() == [0, 1, 2, 3]


def test_nms_orders_equal_scores_by_position() -> None:
    rng = np.random.default_rng(3)
    n = 300
    xyxy = np.array([[20 * i, 0, 20 * i + 10, 10] for i in range(n)], np.float32)
    scores = rng.choice([0.5, 0.75], size=n).astype(np.float32)
    expected = sorted(range(n), key=lambda i: (-scores[i], i))
    assert nms(xyxy, scores, 0.5, max_det=n).tolist() == expected


def test_batched_nms_computes_in_float32_after_the_class_offset() -> None:
    # IoU of the pair in exact arithmetic equals the threshold; in float32 after the class-1 offset it
    # lies above it, so the second box goes (a float64 offset would keep it)
    xyxy = np.array([[803.31787109375, 864.748291015625, 814.646728515625, 883.5146484375],
                     [805.2130126953125, 861.7647094726562, 816.5418701171875, 880.5310668945312]],
                    np.float32)
    kept = batched_nms(xyxy, np.array([0.9, 0.8], np.float32), np.array([1, 1]), 0.5388471174532085, 10)
    assert kept.tolist() == [0]


def test_batched_nms_offsets_classes_upwards() -> None:
    xyxy = np.array([[928.7021484375, 516.7927856445312, 943.5656127929688, 521.1302490234375],
                     [930.8812255859375, 517.0415649414062, 945.7446899414062, 521.3790283203125]],
                    np.float32)
    kept = batched_nms(xyxy, np.array([0.9, 0.8], np.float32), np.array([1, 1]), 0.6728653631320015, 10)
    assert kept.tolist() == [0, 1]


def test_postprocess_one_is_single_label_by_default() -> None:
    from app.inference.postprocess import postprocess_one

    pred = yolov5([[50, 50, 10, 20, 1.0, 0.5, 0.75]])
    dets = postprocess_one(pred, IDENTITY, "yolov5", NAMES, 0.25, 0.5, 10)
    assert dets.class_id.tolist() == [1]


def test_the_candidate_cap_keeps_exactly_the_best_in_their_order() -> None:
    from app.inference.postprocess import postprocess_one

    rows = [[20 * i + 10, 10, 10, 10, 1.0, s, 0.0] for i, s in enumerate([0.3, 0.9, 0.4, 0.8, 0.5, 0.6])]
    pred = yolov5(rows)
    for cap, best in [(1, [0.9]), (2, [0.9, 0.8]), (3, [0.9, 0.8, 0.6]), (5, [0.9, 0.8, 0.6, 0.5, 0.4])]:
        dets = postprocess_one(pred, IDENTITY, "yolov5", NAMES, 0.1, 0.5, 10, max_candidates=cap)
        assert dets.confidence.tolist() == pytest.approx(best), cap
    # a cap equal to the candidate count keeps the order of equal scores
    tied = yolov5([[20 * i + 10, 10, 10, 10, 1.0, 0.5, 0.0] for i in range(40)])
    dets = postprocess_one(tied, IDENTITY, "yolov5", NAMES, 0.1, 0.5, 100, max_candidates=40)
    assert dets.xyxy[:, 0].tolist() == [20 * i + 5 for i in range(40)]


def test_the_candidate_cap_keeps_the_best_of_many() -> None:
    from app.inference.postprocess import postprocess_one

    n, cap = 400, 200
    scores = (np.random.default_rng(133).permutation(n).astype(np.float32) + 1) / (n + 1)
    rows = [[20 * (i % 40) + 10, 20 * (i // 40) + 10, 10, 10, 1.0, s, 0.0] for i, s in enumerate(scores)]
    dets = postprocess_one(yolov5(rows), IDENTITY, "yolov5", NAMES, 0.0, 0.5, n, max_candidates=cap)
    assert dets.confidence.tolist() == sorted(scores.tolist(), reverse=True)[:cap]


def test_equal_scores_at_the_cap_keep_their_order() -> None:
    from app.inference.postprocess import postprocess_one

    levels = "1121011120011101221222021102122112"  # 34 candidates on three score levels
    scores = [(0.5, 0.6, 0.7)[int(k)] for k in levels]
    rows = [[20 * i + 10, 10, 10, 10, 1.0, s, 0.0] for i, s in enumerate(scores)]
    dets = postprocess_one(yolov5(rows), IDENTITY, "yolov5", NAMES, 0.1, 0.5, 100, max_candidates=len(rows))
    expected = sorted(range(len(rows)), key=lambda i: (-scores[i], i))
    assert dets.xyxy[:, 0].tolist() == [20 * i + 5 for i in expected]
