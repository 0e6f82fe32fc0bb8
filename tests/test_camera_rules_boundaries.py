"""The camera rules on their boundaries: a per-class threshold keeps a score equal to it (``>=``) and
drops the next float32 below it; a rectangle ROI is inclusive on all four sides; a polygon ROI keeps a
box centre on an edge or a vertex; a class without its own threshold is not filtered by the rules (the
engine's global threshold, applied before, is the only one it meets)."""

from __future__ import annotations

import numpy as np
import pytest

from app.detections import Detections
from app.inspection import CameraContext, apply_camera_rules

NAMES = ("crazing", "patches", "scratches")


def below(x: float) -> np.float32:
    """The float32 right below ``x`` (one ulp)."""
    return np.nextafter(np.float32(x), np.float32(-np.inf))


def above(x: float) -> np.float32:
    return np.nextafter(np.float32(x), np.float32(np.inf))


def points(centres: list[tuple[float, float]], class_id: int = 0, confidence: float = 0.9) -> Detections:
    """Point-sized boxes (x1 == x2, y1 == y2), so each centre is exactly the float32 given."""
    xy = np.array(centres, np.float32).reshape(-1, 2)
    n = len(xy)
    return Detections(np.concatenate([xy, xy], axis=1), np.full(n, confidence, np.float32),
                      np.full(n, class_id), NAMES)


def scored(confidences: list[float], class_ids: list[int]) -> Detections:
    n = len(confidences)
    boxes = np.tile(np.array([[10, 10, 30, 30]], np.float32), (n, 1))
    return Detections(boxes, np.array(confidences, np.float32), np.array(class_ids), NAMES)


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.7])
def test_class_threshold_keeps_a_score_equal_to_it_and_drops_one_ulp_below(threshold):
    confidences = [below(threshold), np.float32(threshold), above(threshold)]
    kept = apply_camera_rules(scored(confidences, [1, 1, 1]),
                              CameraContext(class_thresholds={"patches": threshold}))
    assert kept.confidence.tolist() == [np.float32(threshold), above(threshold)]


def test_classes_without_a_threshold_are_not_filtered_by_the_rules():
    # 'patches' has its own threshold; 'crazing' and 'scratches' keep what the engine let through
    dets = scored([0.01, 0.01, 0.6, 0.6, 0.01], [0, 1, 1, 2, 2])
    kept = apply_camera_rules(dets, CameraContext(class_thresholds={"patches": 0.5}))
    assert kept.class_id.tolist() == [0, 1, 2, 2]
    assert kept.confidence.tolist() == pytest.approx([0.01, 0.6, 0.6, 0.01])


RECT = (10.0, 20.0, 50.0, 60.0)  # x1, y1, x2, y2


@pytest.mark.parametrize(("centre", "side"), [
    ((10.0, 40.0), "x1"), ((50.0, 40.0), "x2"), ((30.0, 20.0), "y1"), ((30.0, 60.0), "y2"),
    ((10.0, 20.0), "corner x1 y1"), ((50.0, 60.0), "corner x2 y2"),
])
def test_rectangle_roi_keeps_a_centre_on_its_border(centre, side):
    assert len(apply_camera_rules(points([centre]), CameraContext(roi=RECT))) == 1, side


@pytest.mark.parametrize(("centre", "side"), [
    ((below(10.0), 40.0), "x1"), ((above(50.0), 40.0), "x2"),
    ((30.0, below(20.0)), "y1"), ((30.0, above(60.0)), "y2"),
])
def test_rectangle_roi_drops_a_centre_one_ulp_outside(centre, side):
    assert len(apply_camera_rules(points([centre]), CameraContext(roi=RECT))) == 0, side


def test_rectangle_roi_uses_the_box_centre():
    # a box hanging over the left edge whose centre is exactly on it counts; one ulp further it does not
    boxes = np.array([[0, 30, 20, 50], [0, 30, below(20.0), 50]], np.float32)
    dets = Detections(boxes, np.array([0.9, 0.9], np.float32), np.array([0, 1]), NAMES)
    assert apply_camera_rules(dets, CameraContext(roi=RECT)).class_id.tolist() == [0]


TRIANGLE = [(0.0, 0.0), (40.0, 0.0), (0.0, 40.0)]  # inside: x >= 0, y >= 0, x + y <= 40


@pytest.mark.parametrize(("centre", "where"), [
    ((20.0, 20.0), "on the slanted edge"), ((20.0, 0.0), "on the bottom edge"),
    ((0.0, 20.0), "on the left edge"), ((0.0, 0.0), "on a vertex"), ((40.0, 0.0), "on another vertex"),
    ((10.0, 10.0), "inside"),
])
def test_polygon_roi_keeps_a_centre_on_its_edges_and_vertices(centre, where):
    assert len(apply_camera_rules(points([centre]), CameraContext(roi=TRIANGLE))) == 1, where


@pytest.mark.parametrize(("centre", "where"), [
    ((20.01, 20.0), "just past the slanted edge"), ((20.0, -0.01), "just below the bottom edge"),
    ((-0.01, 20.0), "just left of the left edge"), ((40.01, 0.0), "just past a vertex"),
])
def test_polygon_roi_drops_a_centre_just_outside(centre, where):
    assert len(apply_camera_rules(points([centre]), CameraContext(roi=TRIANGLE))) == 0, where


def test_roi_and_class_threshold_both_apply():
    dets = points([(10.0, 20.0), (10.0, 20.0), (below(10.0), 20.0)], class_id=1)
    dets.confidence[:] = [0.5, below(0.5), 0.9]
    kept = apply_camera_rules(dets, CameraContext(roi=RECT, class_thresholds={"patches": 0.5}))
    assert kept.confidence.tolist() == [0.5]
