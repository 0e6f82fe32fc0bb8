"""A frame_uid names one image: posted again with the same image it is a replay (200, the stored row),
with another image it is a 409 problem and nothing is written; a camera frame whose derived uid is
stored with another image is kept under a uid of its own. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import cv2
import numpy as np
from conftest import NEU_NAMES
from sqlalchemy import select, update

from app.api.deps import service_of
from app.db import migrate
from app.db.models import Inspection
from app.db.session import Database
from app.detections import Detections
from app.ingest.journal import Journal
from app.ingest.writer import DbWriter, Item, other_image_uid
from app.inspection import CameraContext, FrameUidConflict, image_digest, inspect_frame, persist_results

PROBLEM = "application/problem+json"
RAW = {"content-type": "image/jpeg"}


def jpeg(value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((100, 300, 3), value, np.uint8))[1].tobytes()


def rows(client) -> list[Inspection]:
    with service_of(client.app).db.session() as s:
        return list(s.scalars(select(Inspection).order_by(Inspection.id)))


def files(data_dir: Path) -> list[Path]:
    images = data_dir / "images"  # beside it: journal/ (its lock file), checkpoints/
    return sorted(p for p in images.rglob("*") if p.is_file()) if images.exists() else []


def test_same_uid_and_same_image_is_a_replay(client):
    first = client.post("/api/v1/inspections?frame_uid=press-7-0001", content=jpeg(255), headers=RAW)
    again = client.post("/api/v1/inspections?frame_uid=press-7-0001", content=jpeg(255), headers=RAW)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    [row] = rows(client)
    assert row.image_sha256 == hashlib.sha256(jpeg(255)).hexdigest()  # the digest of the posted bytes


def test_same_uid_with_another_image_is_a_409_problem_and_writes_nothing(client, app_settings):
    first = client.post("/api/v1/inspections?frame_uid=press-7-0002&part_id=P-1", content=jpeg(255),
                        headers=RAW)
    assert first.status_code == 201
    before, stored_files = rows(client), files(app_settings.data_dir)
    assert len(stored_files) == 1  # the NG frame's image (image policy "ng")

    other = client.post("/api/v1/inspections?frame_uid=press-7-0002&part_id=P-2", content=jpeg(240),
                        headers=RAW)
    assert other.status_code == 409, other.text
    assert other.headers["content-type"].startswith(PROBLEM)
    body = other.json()
    assert body["status"] == 409 and body["type"].endswith("/frame-uid-conflict")
    assert "press-7-0002" in body["detail"] and f"inspection {first.json()['id']}" in body["detail"]
    after = rows(client)
    assert [(r.id, r.part_id, r.image_sha256) for r in after] == [(r.id, r.part_id, r.image_sha256)
                                                                  for r in before]
    assert files(app_settings.data_dir) == stored_files
    assert stored_files[0].read_bytes() == jpeg(255)  # the stored image is untouched

    # the first image is still a replay
    assert client.post("/api/v1/inspections?frame_uid=press-7-0002", content=jpeg(255),
                       headers=RAW).status_code == 200


def test_posts_without_a_uid_are_new_inspections_even_with_the_same_image(client):
    a = client.post("/api/v1/inspections", content=jpeg(255), headers=RAW)
    b = client.post("/api/v1/inspections", content=jpeg(255), headers=RAW)
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["frame_uid"] != b.json()["frame_uid"] and len(rows(client)) == 2


def test_a_row_stored_before_digests_were_kept_answers_a_replay(client):
    first = client.post("/api/v1/inspections?frame_uid=old-row", content=jpeg(255), headers=RAW)
    with service_of(client.app).db.session() as s:  # as a row written before migration 0002
        s.execute(update(Inspection).values(image_sha256=None))
        s.commit()
    again = client.post("/api/v1/inspections?frame_uid=old-row", content=jpeg(200), headers=RAW)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


def test_migration_0002_keeps_existing_rows_with_no_digest(empty_database_url):
    url = empty_database_url
    migrate.upgrade(url, "0001")
    db = Database(url)
    try:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO inspections (frame_uid, source, captured_at, received_at, verdict, "
                "defect_count, model_version, width, height, decode_ms, inference_ms, postprocess_ms, "
                "total_ms) VALUES ('before-0002', 'api', '2026-01-01T00:00:00+00:00', "
                "'2026-01-01T00:00:00+00:00', 'OK', 0, 'm', 1, 1, 0, 0, 0, 0)")
        migrate.upgrade(url)
        with db.session() as s:
            row = s.scalars(select(Inspection)).one()
        assert row.frame_uid == "before-0002" and row.image_sha256 is None
        migrate.downgrade(url, "0001")
        migrate.upgrade(url)
    finally:
        db.dispose()


# -- camera frames ---------------------------------------------------------------------------------
CTX = CameraContext(camera_id="cam-1", line="line-1")


def camera_item(uid: str, value: int) -> Item:
    dets = Detections([[1, 2, 30, 40]], [0.9], [2], NEU_NAMES)
    frame = np.full((48, 64, 3), value, np.uint8)
    result = inspect_frame(frame, dets, model_version="test-1", context=CTX, source="stream",
                           frame_uid=uid)
    result.image, result.image_bytes = None, cv2.imencode(".jpg", frame)[1].tobytes()
    return Item(result, time.perf_counter())


def run_writer(db: Database, data_dir: Path, items: list[Item]) -> DbWriter:
    writer = DbWriter(db, Journal(data_dir / "journal"), data_dir, batch_rows=8, batch_ms=20)
    writer.start()
    writer.submit_many(items)
    writer.stop(30)
    return writer


def stored_frames(db: Database) -> dict[str, tuple[str | None, str | None]]:
    with db.session() as s:
        return {r.frame_uid: (r.image_sha256, r.image_path) for r in s.scalars(select(Inspection))}


def test_a_camera_frame_whose_uid_is_stored_with_another_image_is_kept_under_its_own_uid(db, tmp_path):
    data = tmp_path / "data"
    run_writer(db, data, [camera_item("derived-1", 100)])
    changed = camera_item("derived-1", 180)  # the same position of a file changed in place
    expected_uid = other_image_uid(changed.result)
    writer = run_writer(db, data, [changed, camera_item("derived-2", 100)])
    assert writer.rekeyed == 1 and writer.rejected == 0
    frames = stored_frames(db)
    assert set(frames) == {"derived-1", "derived-2", expected_uid}
    assert frames["derived-1"][0] != frames[expected_uid][0]
    assert frames["derived-1"][1] != frames[expected_uid][1]  # each image in its own file
    assert all((data / path).is_file() for _, path in frames.values())

    # read again (a restart): the changed frame is a replay of its own row, stored once
    run_writer(db, data, [camera_item("derived-1", 180), camera_item("derived-1", 100)])
    assert set(stored_frames(db)) == {"derived-1", "derived-2", expected_uid}


def test_two_images_under_one_uid_in_one_batch_are_both_kept(db, tmp_path):
    a, b = camera_item("same-batch", 100), camera_item("same-batch", 180)
    run_writer(db, tmp_path / "data", [a, b])
    frames = stored_frames(db)
    assert len(frames) == 2 and "same-batch" in frames
    assert {digest for digest, _ in frames.values()} == {image_digest(np.full((48, 64, 3), v, np.uint8))
                                                          for v in (100, 180)}


def test_two_writers_racing_with_two_images_under_one_uid_store_one_and_refuse_the_other(
        db: Database, tmp_path: Path) -> None:
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def post(value: int) -> None:
        frame = np.full((48, 64, 3), value, np.uint8)
        result = inspect_frame(frame, Detections.empty(NEU_NAMES), model_version="m", frame_uid="raced",
                               image_bytes=cv2.imencode(".png", frame)[1].tobytes(), image_ext=".png")
        result.image = None
        start.wait()
        try:
            with db.session() as session:
                persist_results(session, [result], data_dir=tmp_path / "data")
            outcomes.append("stored")
        except FrameUidConflict as exc:
            assert "'raced'" in str(exc)
            outcomes.append("conflict")

    threads = [threading.Thread(target=post, args=(v,)) for v in (60, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["conflict", "stored"]
    [(digest, path)] = stored_frames(db).values()
    assert (tmp_path / "data" / path).is_file()
    assert hashlib.sha256((tmp_path / "data" / path).read_bytes()).hexdigest() == digest
