"""app.inspection: camera rules (ROI, per-class thresholds), verdict, batch persistence."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest
from db_helpers import allow, refuse
from sqlalchemy import select

from app.db import repository
from app.db.models import Camera, Defect, Inspection
from app.db.session import Database
from app.detections import Detections
from app.inspection import (
    CameraContext,
    InspectionResult,
    apply_camera_rules,
    inspect_frame,
    persist_results,
)

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


@pytest.mark.parametrize("refusal", ["delivery", "deferred-fk"])
def test_failed_commit_removes_the_images_it_wrote(database_url, tmp_path, refusal):
    """The batch fails at commit, after its image file was written: the file is removed again, no row
    stays, and the same results can be stored once the database takes them."""
    from sqlalchemy.exc import IntegrityError

    from app.db.models import Webhook

    db = Database(database_url)
    data_dir = tmp_path / "data"
    with db.session() as s:
        s.add(Webhook(url="http://127.0.0.1:9/ng", events=["inspection.ng"], secret="s" * 32))
        s.commit()
    refuse(db, refusal)
    frame = np.full((40, 60, 3), 200, np.uint8)
    when = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    results = [inspect_frame(frame, dets(), model_version="v", captured_at=when, frame_uid=f"uid-{i}")
               for i in range(2)]
    with db.session() as s, pytest.raises(IntegrityError):
        persist_results(s, results, data_dir=data_dir, image_policy="always")
    assert [p for p in data_dir.rglob("*") if p.is_file()] == []
    assert [r.image_path for r in results] == [None, None]
    with db.session() as s:
        assert repository.count_rows(s, Inspection) == 0 and repository.count_rows(s, Defect) == 0
    allow(db, refusal)
    with db.session() as s:
        stored = persist_results(s, results, data_dir=data_dir)
    paths = ["images/2026/11/27/uid-0.jpg", "images/2026/11/27/uid-1.jpg"]
    assert [x.row.image_path for x in stored] == paths
    assert sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file()) == paths
    db.dispose()


def test_concurrent_same_frame_with_new_camera_is_stored_once(database_url, tmp_path):
    """Two writers store the same frame_uid on a camera that a third writer is creating at that moment
    (two service instances behind one PostgreSQL): both succeed, one creates the row, the other gets
    it back as a replay. Forced order: X creates the camera and holds it uncommitted until A and B wait
    on it in PostgreSQL; then A and B insert the frame at the same time."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import event, text

    db = Database(database_url, pool_size=4)
    if db.backend != "postgresql":
        db.dispose()
        pytest.skip("the race needs concurrent writers on PostgreSQL (SQLite writers take turns)")
    monitor = Database(database_url)
    role = threading.local()
    x_has_camera = threading.Event()
    frame_barrier = threading.Barrier(2, timeout=30)

    def lock_waiters() -> int:
        with monitor.engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar_one())

    def hook(_conn, _cursor, statement, _params, _context, _many) -> None:
        sql = " ".join(statement.split()).upper()
        who = getattr(role, "name", None)
        if who == "X" and sql.startswith("INSERT INTO INSPECTIONS"):
            x_has_camera.set()  # the camera row is inserted, not committed
            deadline = time.monotonic() + 30
            while lock_waiters() < 2:  # A and B both blocked on that camera row
                assert time.monotonic() < deadline, "A and B never waited on the camera row"
                time.sleep(0.02)
        elif who in ("A", "B") and sql.startswith("INSERT INTO CAMERAS"):
            assert x_has_camera.wait(30), "X never inserted the camera"
        elif who in ("A", "B") and sql.startswith("INSERT INTO INSPECTIONS"):
            frame_barrier.wait()  # both insert the same frame_uid together

    event.listen(db.engine, "before_cursor_execute", hook)
    frame = np.full((40, 60, 3), 200, np.uint8)
    ctx = CameraContext("cam-race", line="L9", station="S9")

    def work(name: str, uid: str):
        role.name = name
        result = inspect_frame(frame, dets(), model_version="v", context=ctx, frame_uid=uid)
        with db.session() as s:
            [stored] = persist_results(s, [result], data_dir=tmp_path / name, image_policy="always")
            return stored.created, stored.row.id, len(stored.row.defects)

    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = {n: pool.submit(work, n, uid) for n, uid in
                       (("X", "race-other"), ("A", "race-same"), ("B", "race-same"))}
            out = {n: f.result(timeout=120) for n, f in futures.items()}
    finally:
        event.remove(db.engine, "before_cursor_execute", hook)
    assert out["X"][0] is True
    assert sorted([out["A"][0], out["B"][0]]) == [False, True], "the frame is created exactly once"
    assert out["A"][1:] == out["B"][1:] == (out["A"][1], 3), "the replay returns the stored row"
    with db.session() as s:
        assert repository.count_rows(s, Camera) == 1 and repository.count_rows(s, Inspection) == 2
        assert repository.count_rows(s, Defect) == 6
        assert s.get(Camera, "cam-race").line == "L9"
    # the winner's image is stored, and the replay removed nothing
    winner = "A" if out["A"][0] else "B"
    assert len(list((tmp_path / winner).rglob("race-same.jpg"))) == 1
    assert list((tmp_path / ("B" if winner == "A" else "A")).rglob("*.jpg")) == []
    monitor.dispose()
    db.dispose()


def test_persist_batch_keeps_input_order_with_duplicates_and_stored_frames(database_url, tmp_path):
    db = Database(database_url)
    frame = np.full((40, 60, 3), 200, np.uint8)

    def result(uid: str, cam: str) -> InspectionResult:
        return inspect_frame(frame, dets(), model_version="v", context=CameraContext(cam), frame_uid=uid)

    with db.session() as s:
        [old] = persist_results(s, [result("uid-a", "cam-1")], data_dir=tmp_path, image_policy="never")
    batch = [result("uid-z", "cam-2"), result("uid-a", "cam-1"), result("uid-z", "cam-2"),
             result("uid-m", "cam-3")]
    with db.session() as s:
        stored = persist_results(s, batch, data_dir=tmp_path, image_policy="always")
        assert [x.created for x in stored] == [True, False, False, True]
        assert [x.row.frame_uid for x in stored] == ["uid-z", "uid-a", "uid-z", "uid-m"]
        assert stored[1].row.id == old.row.id and stored[2].row.id == stored[0].row.id
        assert [len(x.row.defects) for x in stored] == [3, 3, 3, 3]
        assert repository.count_rows(s, Inspection) == 3 and repository.count_rows(s, Camera) == 3
        assert repository.count_rows(s, Defect) == 9
    assert sorted(p.name for p in tmp_path.rglob("*.jpg")) == ["uid-m.jpg", "uid-z.jpg"]
    db.dispose()


def test_persist_without_loading_rows_gives_the_same_ids_and_events(database_url, tmp_path):
    """The ingest writer's path (``load_rows=False``): ids and ``created`` as the loaded path gives
    them (replays, duplicates inside the batch), and inspection.ng events only for new NG rows, with
    the full payload, queued for the hooks that listen to it."""
    from app.db.models import Webhook, WebhookDelivery

    db = Database(database_url)
    frame = np.full((40, 60, 3), 200, np.uint8)

    def result(uid: str, ng: bool = True) -> InspectionResult:
        found = dets() if ng else Detections.empty(NAMES)
        return inspect_frame(frame, found, model_version="v", context=CameraContext("cam-1"), frame_uid=uid)

    with db.session() as s:
        s.add_all([Webhook(url="http://127.0.0.1:9/ng", events=["inspection.ng"], secret="s" * 32),
                   Webhook(url="http://127.0.0.1:9/rev", events=["defect.reviewed"], secret="s" * 32)])
        s.commit()
        [old] = persist_results(s, [result("uid-a")], data_dir=tmp_path, image_policy="never")
    batch = [result("uid-z"), result("uid-a"), result("uid-z"), result("uid-k", ng=False)]
    with db.session() as s:
        stored = persist_results(s, batch, data_dir=tmp_path, image_policy="never", load_rows=False)
    assert [x.created for x in stored] == [True, False, False, True]
    assert stored[1].id == old.id and stored[2].id == stored[0].id
    with pytest.raises(LookupError):
        _ = stored[0].row
    with db.session() as s:
        rows = repository.get_inspections_by_uid(s, ["uid-z", "uid-k"])
        assert (rows["uid-z"].id, rows["uid-k"].id) == (stored[0].id, stored[3].id)
        assert [d.class_name for d in rows["uid-z"].defects] == list(NAMES)
        events = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        assert [(e.event, e.payload["frame_uid"]) for e in events] == [("inspection.ng", "uid-a"),
                                                                       ("inspection.ng", "uid-z")]
        payload = events[1].payload
        assert payload["id"] == stored[0].id and payload["defect_count"] == 3
        assert [d["id"] for d in payload["defects"]] == [d.id for d in rows["uid-z"].defects]
        assert payload["defects"][0]["box"] == [10.0, 10.0, 30.0, 30.0]
    db.dispose()
