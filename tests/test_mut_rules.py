"""Camera rules, verdict and the result of one frame, pinned at each boundary (cases found by mutation
testing of app/inspection/rules.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from app.detections import Detections
from app.inspection.rules import (
    CameraContext,
    Timings,
    apply_camera_rules,
    decide_verdict,
    inspect_frame,
    roi_mask,
)

# box centres: (5, 5), (10, 10), (20, 5), (5, 20)
BOXES = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [15, 0, 25, 10], [0, 15, 10, 25]], np.float32)


def test_a_rectangle_roi_includes_its_edges() -> None:
    assert roi_mask(BOXES, (5, 5, 10, 10)).tolist() == [True, True, False, False]
    assert roi_mask(BOXES, (5.5, 0, 30, 30)).tolist() == [False, True, True, False]
    assert roi_mask(BOXES, (0, 5.5, 30, 30)).tolist() == [False, True, False, True]
    assert roi_mask(BOXES, (0, 0, 9.5, 30)).tolist() == [True, False, False, True]
    assert roi_mask(BOXES, (0, 0, 30, 9.5)).tolist() == [True, False, True, False]


def test_a_polygon_roi_includes_its_border() -> None:
    triangle = [(0, 0), (20, 0), (0, 20)]  # (10, 10) lies on the hypotenuse
    assert roi_mask(BOXES, triangle).tolist() == [True, True, False, False]
    assert roi_mask(BOXES, triangle).dtype == bool


def test_no_roi_or_no_boxes_keeps_everything() -> None:
    assert roi_mask(BOXES, None).tolist() == [True] * 4
    empty = roi_mask(np.zeros((0, 4), np.float32), (0, 0, 1, 1))
    assert empty.dtype == bool and empty.shape == (0,)


@pytest.mark.parametrize(
    ("roi", "message"),
    [
        ((0, 0, 1), r"^a rectangle ROI needs 4 numbers \(x1, y1, x2, y2\), got 3"),
        ([(0, 0), (1, 1)], r"^a polygon ROI needs at least 3 \(x, y\) points$"),
        ([(0, 0, 0), (1, 1, 1), (2, 2, 2)], "a polygon ROI needs at least 3"),
        ([[[0, 0]], [[1, 1]], [[2, 2]]], "a polygon ROI needs at least 3"),
    ],
)
def test_a_malformed_roi_is_refused(roi: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        roi_mask(BOXES, roi)  # type: ignore[arg-type]


def dets(confidence: list[float], class_id: list[int]) -> Detections:
    return Detections(BOXES[: len(confidence)], confidence, class_id, ("crazing", "scratches"))


def test_class_thresholds_are_inclusive_and_unlisted_classes_keep_all() -> None:
    d = dets([0.5, 0.49, 0.1, 0.9], [0, 0, 1, 2])
    kept = apply_camera_rules(d, CameraContext(class_thresholds={"crazing": 0.5, "2": 0.95}))
    assert kept.confidence.tolist() == pytest.approx([0.5, 0.1])
    assert kept.class_id.tolist() == [0, 1]
    assert kept.names == ("crazing", "scratches")


def test_roi_and_thresholds_combine() -> None:
    d = dets([0.9, 0.2, 0.9, 0.9], [0, 0, 1, 1])
    kept = apply_camera_rules(d, CameraContext(roi=(0, 0, 12, 12), class_thresholds={"crazing": 0.5}))
    assert kept.confidence.tolist() == pytest.approx([0.9])


def test_no_context_or_no_detections_pass_through_unchanged() -> None:
    d = dets([0.1], [0])
    assert apply_camera_rules(d, None) is d
    empty = Detections.empty(("crazing",))
    assert apply_camera_rules(empty, CameraContext(roi=(0, 0, 1, 1))) is empty
    assert apply_camera_rules(d, CameraContext()).confidence.tolist() == pytest.approx([0.1])


def test_verdict() -> None:
    assert decide_verdict(Detections.empty()) == "OK"
    assert decide_verdict(dets([0.1], [0])) == "NG"


def test_timings_to_dict_rounds_each_field_under_its_name() -> None:
    t = Timings(decode_ms=1.23456, inference_ms=2.5, postprocess_ms=3.0, total_ms=6.73456)
    assert t.to_dict() == {"decode": 1.235, "inference": 2.5, "postprocess": 3.0, "total": 6.735}
    assert Timings().to_dict() == {"decode": 0.0, "inference": 0.0, "postprocess": 0.0, "total": 0.0}


FRAME = np.zeros((30, 40, 3), np.uint8)


def test_inspect_frame_fills_the_result_from_the_context_and_the_frame() -> None:
    captured = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    received = captured + timedelta(seconds=1)
    timings = Timings(total_ms=5.0)
    ctx = CameraContext(camera_id="cam-1", line="L1", station="S1", roi=(0, 0, 8, 8))
    r = inspect_frame(FRAME, dets([0.9, 0.9], [0, 1]), model_version="m1", context=ctx, part_id="P-7",
                      captured_at=captured, received_at=received, timings=timings, frame_uid="f1",
                      source="camera", image_bytes=b"png", image_ext=".png")
    assert (r.frame_uid, r.camera_id, r.line, r.station, r.part_id) == ("f1", "cam-1", "L1", "S1", "P-7")
    assert (r.captured_at, r.received_at, r.timings) == (captured, received, timings)
    assert (r.width, r.height, r.model_version, r.source) == (40, 30, "m1", "camera")
    assert (r.image_bytes, r.image_ext, r.image_path) == (b"png", ".png", None)
    assert r.image is FRAME
    assert len(r.detections) == 1 and r.verdict == "NG"


def test_inspect_frame_defaults() -> None:
    before = datetime.now(UTC)
    r = inspect_frame(FRAME, Detections.empty(), model_version="m1")
    after = datetime.now(UTC)
    assert len(r.frame_uid) == 32 and int(r.frame_uid, 16) >= 0
    assert inspect_frame(FRAME, Detections.empty(), model_version="m1").frame_uid != r.frame_uid
    assert (r.camera_id, r.line, r.station, r.part_id) == (None, None, None, None)
    assert before <= r.captured_at <= after and r.received_at == r.captured_at
    assert r.captured_at.tzinfo is not None
    assert r.timings == Timings() and (r.source, r.image_ext, r.image_bytes) == ("api", ".jpg", None)
    assert r.verdict == "OK"


def test_captured_at_falls_back_to_received_at() -> None:
    received = datetime(2026, 1, 2, tzinfo=UTC)
    r = inspect_frame(FRAME, Detections.empty(), model_version="m1", received_at=received)
    assert r.captured_at == received and r.received_at == received
    captured = datetime(2026, 1, 1, tzinfo=UTC)
    r = inspect_frame(FRAME, Detections.empty(), model_version="m1", captured_at=captured)
    assert r.captured_at == captured and r.received_at > captured


def test_a_single_box_outside_the_roi_is_dropped() -> None:
    assert roi_mask(BOXES[:1], (20, 20, 30, 30)).tolist() == [False]
    assert roi_mask(BOXES[:1], [(20, 20), (30, 20), (30, 30)]).tolist() == [False]


def test_a_polygon_roi_with_fractional_corners() -> None:
    assert roi_mask(BOXES, [(0.5, 0.5), (12.5, 0.5), (12.5, 12.5), (0.5, 12.5)]).tolist() == [
        True, True, False, False]


def test_a_confidence_equal_to_its_class_threshold_stays_whatever_the_float_rounding() -> None:
    # float32(0.7) < 0.7: the comparison has to happen in the confidences' own precision
    kept = apply_camera_rules(dets([0.7], [0]), CameraContext(class_thresholds={"crazing": 0.7}))
    assert len(kept) == 1
