"""Retention: the pruner deletes rows, frames and crops past their limits (reviewed inspections kept
longer), keeps the image store under its cap oldest first, keeps rows and files consistent (also
after a crash between commit and unlink), and an expired image reads as expired in the API. On SQLite
and PostgreSQL."""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from app.api.deps import service_of
from app.commands import prune as prune_command
from app.db.models import Defect, Inspection
from app.db.session import Database
from app.detections import Detections
from app.ingest.config import CameraConfig
from app.inspection import CameraContext, inspect_frame, persist_results
from app.inspection.store import write_crops
from app.metrics import REGISTRY
from app.retention import STALE_PENDING_S, Pruner, RetentionPolicy, files_named_by_rows
from app.settings import Settings
from tests.mes_helpers import assert_problem, jpeg_bytes

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
NAMES = ("crazing", "patches")
FRAME = np.zeros((80, 100, 3), np.uint8)
NG = Detections(np.array([[1, 1, 40, 30], [50, 10, 90, 60]], np.float32), [0.9, 0.8], [0, 1], NAMES)


def store(db: Database, data_dir: Path, uid: str, age_days: float, camera: str = "cam-a",
          crops: int = 2, frame_bytes: int = 5000) -> int:
    """One NG inspection ``age_days`` old, with a frame file and ``crops`` crop files, stored the
    way the ingest writer stores it (persist_results, then its crops)."""
    r = inspect_frame(FRAME, NG, model_version="m", context=CameraContext(camera_id=camera), frame_uid=uid,
                      captured_at=NOW - timedelta(days=age_days),
                      image_bytes=b"\xff\xd8\xff" + bytes(frame_bytes), image_ext=".jpg")
    blobs = [bytes(3000)] * crops
    r.crop_count, r.crop_size = crops, 4096 * crops
    with db.session() as session:
        [stored] = persist_results(session, [r], data_dir=data_dir, image_policy="always", load_rows=False)
    write_crops(r, blobs, data_dir)
    return stored.id


def files_on_disk(data_dir: Path) -> set[str]:
    return {p.relative_to(data_dir).as_posix() for p in (data_dir / "images").rglob("*") if p.is_file()}


def assert_consistent(db: Database, data_dir: Path) -> None:
    """No row names a missing file, no file lacks its row."""
    with db.session() as session:
        assert files_on_disk(data_dir) == files_named_by_rows(session)


def settings(**kw) -> Settings:
    base = dict(retention_frame_days=30, retention_crop_days=10, retention_row_days=100,
                retention_reviewed_days=200, image_store_max_gb=0, disk_low_watermark_mb=0, prune_batch=2)
    return Settings(**(base | kw))


def confirm_a_defect(db: Database, inspection_id: int) -> None:
    with db.session() as s:
        defect = s.scalars(select(Defect).where(Defect.inspection_id == inspection_id)).first()
        defect.review_status = "confirmed"
        s.commit()


def state(db: Database) -> dict[str, tuple[bool, int, bool]]:
    """frame_uid -> (has frame, crop count, image expired)."""
    with db.session() as s:
        rows = s.execute(select(Inspection.frame_uid, Inspection.image_path, Inspection.crop_count,
                                Inspection.image_expired_at))
        return {uid: (path is not None, crops, expired is not None) for uid, path, crops, expired in rows}


def test_age_limits_delete_rows_frames_and_crops_and_reviewed_ones_are_kept_longer(db, tmp_path):
    data = tmp_path / "data"
    for uid, age in (("fresh", 1), ("crop-old", 15), ("frame-old", 40), ("row-old", 150),
                     ("reviewed-old", 150), ("reviewed-ancient", 250)):
        store(db, data, uid, age)
    with db.session() as s:
        ids = dict(s.execute(select(Inspection.frame_uid, Inspection.id)).all())
    confirm_a_defect(db, ids["reviewed-old"])
    confirm_a_defect(db, ids["reviewed-ancient"])

    report = Pruner(db, data, RetentionPolicy.from_settings(settings())).run_once(now=NOW)

    assert state(db) == {
        "fresh": (True, 2, False),
        "crop-old": (True, 0, False),  # crops past 10 days, the frame within 30
        "frame-old": (False, 0, True),  # the frame past 30 days: the row stays, its image expired
        "reviewed-old": (True, 2, False),  # reviewed: kept 200 days, all of it
    }  # row-old (150 > 100 days) and reviewed-ancient (250 > 200) are gone with their defects
    with db.session() as s:
        assert s.scalar(select(Defect.id).where(Defect.inspection_id == ids["row-old"])) is None
    assert report.deleted == {"row:age": 2, "frame:age": 3, "crop:age": 8}
    assert_consistent(db, data)


def test_a_camera_keeps_its_own_days(db, tmp_path):
    data = tmp_path / "data"
    store(db, data, "a-40", 40, camera="cam-a")
    store(db, data, "b-40", 40, camera="cam-b")
    cameras = [CameraConfig(id="cam-b", source="folder:x", retention={"frame_days": 60, "crop_days": 60})]
    Pruner(db, data, RetentionPolicy.from_settings(settings(), cameras)).run_once(now=NOW)
    assert state(db) == {"a-40": (False, 0, True), "b-40": (True, 2, False)}
    assert_consistent(db, data)


def test_dry_run_deletes_nothing_and_reports_what_a_pass_deletes(db, tmp_path):
    data = tmp_path / "data"
    for k in range(5):
        store(db, data, f"f{k}", 35 + k)
    before, files = state(db), files_on_disk(data)
    pruner = Pruner(db, data, RetentionPolicy.from_settings(settings()))
    dry = pruner.run_once(dry_run=True, now=NOW)
    assert state(db) == before and files_on_disk(data) == files
    real = pruner.run_once(now=NOW)
    assert dry.deleted == real.deleted == {"frame:age": 5, "crop:age": 10}
    assert dry.bytes == real.bytes > 0


def test_the_cap_deletes_the_oldest_images_first_unreviewed_before_reviewed(db, tmp_path):
    data = tmp_path / "data"
    for k in range(8):  # each: a frame of 8 KiB on disk and two 4 KiB crops = 16 KiB
        store(db, data, f"f{k}", 8 - k, frame_bytes=5000)
    with db.session() as s:
        oldest = s.scalar(select(Inspection.id).where(Inspection.frame_uid == "f0"))
    confirm_a_defect(db, oldest)
    pruner = Pruner(db, data, RetentionPolicy.from_settings(settings(retention_frame_days=0,
                                                                     retention_crop_days=0,
                                                                     image_store_max_gb=16384 * 5 / 1e9)))
    assert pruner.store_bytes() == 8 * 16384
    report = pruner.run_once(now=NOW)
    # the pass keeps 90 % of the cap (73.7 kB): four inspections of 16 KiB, the newest
    assert pruner.store_bytes() == 4 * 16384
    kept = {uid for uid, (frame, _, _) in state(db).items() if frame}
    assert kept == {"f0", "f5", "f6", "f7"}  # the reviewed oldest one stays while unreviewed ones can go
    assert report.deleted == {"frame:cap": 4, "crop:cap": 8}
    assert_consistent(db, data)


def test_the_watermark_prunes_images_while_free_space_is_low(db, tmp_path):
    data = tmp_path / "data"
    for k in range(3):
        store(db, data, f"f{k}", 3 - k)
    # a watermark above the free space of any disk: low disk, on the real file system
    report = Pruner(db, data, RetentionPolicy.from_settings(settings(disk_low_watermark_mb=1e12))).run_once()
    assert report.deleted == {"frame:watermark": 3, "crop:watermark": 6}
    assert set(state(db).values()) == {(False, 0, True)}
    assert files_on_disk(data) == set()


def test_a_batch_interrupted_after_its_commit_is_finished_by_the_next_pass(db, tmp_path):
    data = tmp_path / "data"
    store(db, data, "expired", 40)
    store(db, data, "kept", 1)
    expired = {f for f in files_on_disk(data) if "expired" in f}
    # the state a crash leaves between the commit and the deletions: the list of files, rows updated
    pending = [{"path": p, "uid": "expired", "kind": "crop" if "-crop" in p else "frame"} for p in expired]
    pending += [{"path": p, "uid": "kept", "kind": "crop" if "-crop" in p else "frame"}
                for p in files_on_disk(data) - expired]  # a batch that never committed: rows keep files
    listed = data / "prune-pending-0123.json"
    listed.write_text(json.dumps(pending))
    fresh = data / "prune-pending-4567.json"  # a list of a batch in flight in another process
    fresh.write_text(json.dumps(pending))
    old = time.time() - STALE_PENDING_S - 1
    os.utime(listed, (old, old))
    with db.session() as s:
        row = s.scalars(select(Inspection).where(Inspection.frame_uid == "expired")).one()
        row.image_path, row.crop_count, row.image_expired_at = None, 0, NOW
        s.commit()
    Pruner(db, data, RetentionPolicy.from_settings(settings(retention_frame_days=0,
                                                            retention_crop_days=0))).run_once(now=NOW)
    assert not listed.exists() and fresh.exists()
    assert files_on_disk(data) and all("kept" in f for f in files_on_disk(data))
    assert_consistent(db, data)


def test_an_expired_image_reads_as_expired(client, app_settings):
    old = (NOW - timedelta(days=45)).strftime("%Y-%m-%dT%H:%M:%SZ")
    resp = client.post(f"/api/v1/inspections?camera_id=cam-x&captured_at={old}", content=jpeg_bytes(255),
                       headers={"content-type": "image/jpeg"})
    assert resp.status_code == 201, resp.text
    posted = resp.json()
    assert posted["image_stored"] is True and posted["image_expired"] is False
    assert client.get(posted["image_url"]).status_code == 200
    service = service_of(client.app)
    labels = {"kind": "frame", "reason": "age"}
    before = REGISTRY.get_sample_value("inspect_pruned_total", labels) or 0.0
    service.pruner.run_once()
    body = client.get(f"/api/v1/inspections/{posted['id']}").json()
    assert (body["has_image"], body["image_url"], body["image_expired"]) == (False, None, True)
    for url in (posted["image_url"], posted["image_url"] + "/annotated"):
        problem = assert_problem(client.get(url), 410)
        assert problem["type"].endswith("/expired")
    assert REGISTRY.get_sample_value("inspect_pruned_total", labels) == before + 1
    assert "inspect_disk_free_bytes " in client.get("/metrics").text


def test_store_metrics_count_bytes_and_files_per_camera_and_kind(db, tmp_path):
    data = tmp_path / "data"
    store(db, data, "a1", 1, camera="cam-a", crops=2)
    store(db, data, "b1", 1, camera="cam-b", crops=1)
    pruner = Pruner(db, data, RetentionPolicy.from_settings(settings()))
    pruner.run_once(now=NOW)
    assert pruner.usage["cam-a"] == {"frame": {"files": 1, "bytes": 8192},
                                     "crop": {"files": 2, "bytes": 8192}}

    def sample(name: str, camera: str, kind: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"camera": camera, "kind": kind})

    assert sample("inspect_image_store_files", "cam-b", "crop") == 1
    assert sample("inspect_image_store_bytes", "cam-b", "frame") == 8192
    on_disk = sum((data / f).stat().st_size for f in files_on_disk(data))
    assert on_disk <= sum(pruner.usage[c][k]["bytes"] for c in pruner.usage for k in ("frame", "crop"))


def test_the_prune_command_dry_run_prints_what_it_would_delete(db, database_url, tmp_path, monkeypatch,
                                                                capsys):
    data = tmp_path / "data"
    store(db, data, "old", 40)
    monkeypatch.setenv("INSPECT_DATABASE_URL", database_url)
    monkeypatch.setenv("INSPECT_DATA_DIR", str(data))
    parser = argparse.ArgumentParser()
    prune_command.register(parser.add_subparsers())
    args = parser.parse_args(["prune", "--dry-run"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dry_run"] is True and out["deleted"] == {"crop:age": 2, "frame:age": 1}
    assert out["store"]["cam-a"]["frame"]["files"] == 1  # nothing deleted
    args = parser.parse_args(["prune"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["store"] == {}


@pytest.mark.parametrize("bad", ["-1", "abc"])
def test_retention_settings_refuse_bad_values(bad, monkeypatch):
    from app.settings import SettingsError, load_settings

    monkeypatch.setenv("INSPECT_RETENTION_FRAME_DAYS", bad)
    with pytest.raises(SettingsError, match="INSPECT_RETENTION_FRAME_DAYS"):
        load_settings()


def test_bench_pipeline_reports_stored_bytes_per_frame(tiny_model_path, image_folder):
    from app.bench.pipeline import PipelineBenchOptions, run_pipeline_bench

    def run(**kw) -> dict:
        return run_pipeline_bench(PipelineBenchOptions(model=tiny_model_path, source=str(image_folder),
                                                       seconds=1.0, workers=1, engine_seconds=0.2, **kw))

    nothing = run(images="never")
    frames = run(images="always", crops=True)
    crops_only = run(images="always", crops=True, frames=False)
    assert nothing["stored_bytes"] == nothing["stored_bytes_per_frame"] == 0
    # every frame of the folder on disk in whole 4 KiB blocks; crops (of the NG frames) cost less
    assert frames["stored_bytes_per_frame"] >= 4096 and frames["stored_bytes"] % 4096 == 0
    assert crops_only["stored_bytes_per_frame"] < frames["stored_bytes_per_frame"]


def test_the_cap_leaves_room_for_what_an_interval_writes(db, tmp_path):
    data = tmp_path / "data"
    cap = 16384 * 10
    pruner = Pruner(db, data, RetentionPolicy.from_settings(settings(retention_frame_days=0,
                                                                     retention_crop_days=0,
                                                                     image_store_max_gb=cap / 1e9)))
    assert pruner.cap_target(0) == int(cap * 0.9)  # no pass yet: 10 % of the cap is the room
    for k in range(4):
        store(db, data, f"a{k}", 10 - k)
    pruner.run_once(now=NOW)  # 4 x 16 KiB, under the cap: nothing goes
    for k in range(4):  # an interval writes 64 KiB: more than 10 % of the cap
        store(db, data, f"b{k}", 5 - k)
    assert pruner.cap_target(pruner.store_bytes()) == cap - int(1.5 * 4 * 16384)
    pruner.run_once(now=NOW)
    assert pruner.store_bytes() <= cap - 1.5 * 4 * 16384  # room for another such interval under the cap
    assert_consistent(db, data)


def test_the_pruner_and_the_camera_writer_share_the_database(db, tmp_path):
    """Passes over a store under pressure while the ingest writer commits: every result is committed
    (none journaled: the writer never found the database unusable) and rows and files agree."""
    import threading

    from app.ingest.journal import Journal
    from app.ingest.writer import DbWriter, Item
    from app.inspection.store import apply_image_policy

    data = tmp_path / "data"
    writer = DbWriter(db, Journal(tmp_path / "journal"), data, batch_rows=8, batch_ms=5)
    writer.start()
    pruner = Pruner(db, data, RetentionPolicy.from_settings(settings(image_store_max_gb=16384 * 20 / 1e9)))
    done = threading.Event()

    def prune() -> None:
        while not done.is_set():
            pruner.run_once(now=NOW)

    thread = threading.Thread(target=prune)
    thread.start()
    try:
        for k in range(300):
            r = inspect_frame(FRAME, NG, model_version="m", context=CameraContext(camera_id="cam-w"),
                              frame_uid=f"w{k:04d}", captured_at=NOW - timedelta(seconds=300 - k))
            apply_image_policy(r, "always")
            writer.submit(Item(r))
    finally:
        writer.stop()
        done.set()
        thread.join()
    assert (writer.committed, writer.journaled) == (300, 0)
    pruner.run_once(now=NOW)
    assert pruner.store_bytes() <= 16384 * 20
    assert_consistent(db, data)
