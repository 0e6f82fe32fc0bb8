"""app.inspection: camera rules (ROI, per-class thresholds), verdict, batch persistence."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from app.db import repository
from app.db.models import Camera, Defect, Inspection
from app.db.session import Database
from app.detections import Detections
from app.inspection import CameraContext, apply_camera_rules, inspect_frame, persist_results

NAMES = ("crazing", "patches", "scratches")


def dets() -> Detections:
    return Detections(
        # centres (20, 20), (120, 110), (65, 10)
        np.array([[10, 10, 30, 30], [100, 100, 140, 120], [60, 5, 70, 15]], np.float32),
        np.array([0.9, 0.4, 0.6], np.float32), np.array([0, 1, 2]), NAMES)


def test_rect_and_polygon_roi_keep_boxes_by_centre():
    rect = apply_camera_rules(dets(), CameraContext(roi=(0, 0, 80, 50)))
    assert rect.class_id.tolist() == [0, 2]
    triangle = apply_camera_rules(dets(), CameraContext(roi=[(0, 0), (200, 0), (0, 200)]))
    assert triangle.class_id.tolist() == [0, 2]  # x + y <= 200
    square = apply_camera_rules(dets(), CameraContext(roi=[(90, 90), (150, 90), (150, 150), (90, 150)]))
    assert square.class_id.tolist() == [1]
    with pytest.raises(ValueError):
        apply_camera_rules(dets(), CameraContext(roi=[(0, 0), (1, 1)]))


def test_per_class_thresholds_and_verdict():
    frame = np.zeros((200, 200, 3), np.uint8)
    strict = inspect_frame(frame, dets(), model_version="v",
                           context=CameraContext("c1", class_thresholds={"patches": 0.5, "scratches": 0.7}))
    assert strict.detections.class_id.tolist() == [0] and strict.verdict == "NG"
    clean = inspect_frame(frame, dets(), model_version="v",
                          context=CameraContext("c1", roi=(150, 150, 200, 200)))
    assert len(clean.detections) == 0 and clean.verdict == "OK"
    assert len(clean.frame_uid) == 32 and (clean.width, clean.height) == (200, 200)


def test_persist_batch_idempotent_and_images_by_policy(database_url, tmp_path):
    db = Database(database_url)
    frame = np.full((40, 60, 3), 200, np.uint8)
    when = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    ctx = CameraContext("cam-b", line="L2", station="S1")
    results = [inspect_frame(frame, dets(), model_version="v", context=ctx, captured_at=when,
                             frame_uid=f"uid-{i}", source="stream") for i in range(3)]
    results[1] = inspect_frame(frame, Detections.empty(NAMES), model_version="v", context=ctx,
                               captured_at=when, frame_uid="uid-1", source="stream")
    with db.session() as s:
        stored = persist_results(s, results, data_dir=tmp_path, image_policy="ng")
    assert [x.created for x in stored] == [True, True, True]
    assert [x.row.verdict for x in stored] == ["NG", "OK", "NG"]
    assert stored[0].row.image_path == "images/2026/11/27/uid-0.jpg" and stored[1].row.image_path is None
    assert (tmp_path / stored[0].row.image_path).stat().st_size > 0
    with db.session() as s:
        assert repository.count_rows(s, Inspection) == 3 and repository.count_rows(s, Defect) == 6
        assert s.get(Camera, "cam-b").line == "L2"
        again = persist_results(s, results[:2], data_dir=tmp_path, image_policy="ng")
        assert [x.created for x in again] == [False, False]
        assert [x.row.id for x in again] == [x.row.id for x in stored[:2]]
        assert repository.count_rows(s, Inspection) == 3
    db.dispose()


def test_failed_transaction_removes_written_images(database_url, tmp_path):
    db = Database(database_url)
    frame = np.full((40, 60, 3), 200, np.uint8)
    bad = inspect_frame(frame, dets(), model_version="v" * 200, frame_uid="too-long-version")  # > String(128)
    bad.detections = dets()
    with db.session() as s:
        if db.backend == "sqlite":  # SQLite does not enforce VARCHAR lengths: force a failure instead
            bad.verdict = None  # NOT NULL
        with pytest.raises(Exception):  # noqa: B017 - the driver's own integrity/data error
            persist_results(s, [bad], data_dir=tmp_path, image_policy="always")
    assert [p for p in tmp_path.rglob("*.jpg")] == []
    with db.session() as s:
        assert repository.count_rows(s, Inspection) == 0
    db.dispose()
