"""Storage faults on the real file system: low disk (a floor set above the free space), image writes
that fail, a data folder that refuses writes, and a SQLite file deleted under the running service.
Inspection goes on without images (the row stored, ``image_stored: false``, counted); what cannot be
made durable is refused with 503 + Retry-After; /readyz says so without paths or hosts."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.metrics import REGISTRY
from app.storage_health import HEALTH
from tests.mes_helpers import assert_problem, jpeg_bytes

JPEG = {"content-type": "image/jpeg"}


def skipped(camera: str, reason: str) -> float:
    labels = {"camera": camera, "reason": reason}
    return REGISTRY.get_sample_value("inspect_images_skipped_total", labels) or 0.0


@pytest.fixture
def app_with(app_settings) -> Iterator:
    clients: list[TestClient] = []

    def start(**overrides) -> TestClient:
        client = TestClient(create_app(app_settings.model_copy(update=overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def test_below_the_floor_inspection_goes_on_without_images(app_with, app_settings, caplog):
    client = app_with(disk_floor_mb=1e12)  # a floor above the free space of any disk: low disk, for real
    before = skipped("cam-low", "low_disk")
    with caplog.at_level(logging.WARNING, logger="app.storage_health"):
        resp = client.post("/api/v1/inspections?camera_id=cam-low", content=jpeg_bytes(255), headers=JPEG)
    assert any("without their images: free space is below INSPECT_DISK_FLOOR_MB" in r.getMessage()
               for r in caplog.records)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["verdict"] == "NG" and body["defects"]  # inspected and stored
    assert (body["image_stored"], body["image_skipped"], body["has_image"]) == (False, "low_disk", False)
    assert client.get(f"/api/v1/inspections/{body['id']}").json()["defects"] == body["defects"]
    assert not (app_settings.data_dir / "images").exists()
    assert skipped("cam-low", "low_disk") == before + 1

    ready = client.get("/readyz")
    assert ready.status_code == 200  # low disk is not a fault: the service inspects
    assert ready.json()["storage"]["low_disk"] is True and ready.json()["storage"]["images_skipped"] == 1
    cameras = client.get("/api/v1/cameras").json()
    assert cameras["storage"]["low_disk"] is True and cameras["storage"]["images_skipped"] == 1


def test_above_the_floor_images_are_stored(app_with):
    client = app_with(disk_floor_mb=0)
    body = client.post("/api/v1/inspections", content=jpeg_bytes(255), headers=JPEG).json()
    assert (body["image_stored"], body["image_skipped"]) == (True, None)
    assert client.get("/readyz").json()["storage"]["low_disk"] is False


def test_a_failing_image_write_keeps_the_row_and_says_so(app_with, app_settings):
    client = app_with()
    app_settings.data_dir.mkdir(parents=True, exist_ok=True)
    (app_settings.data_dir / "images").write_text("a file where the image folder should be")
    before = skipped("cam-w", "write_failed")
    resp = client.post("/api/v1/inspections?camera_id=cam-w", content=jpeg_bytes(255), headers=JPEG)
    assert resp.status_code == 201, resp.text
    assert (resp.json()["image_stored"], resp.json()["image_skipped"]) == (False, "write_failed")
    row = client.get(f"/api/v1/inspections/{resp.json()['id']}").json()
    assert row["has_image"] is False and row["image_url"] is None  # no row names a file that is not there
    # writes are held a moment after a failure: the next frame is inspected without trying again
    again = client.post("/api/v1/inspections?camera_id=cam-w", content=jpeg_bytes(255), headers=JPEG)
    assert again.status_code == 201 and again.json()["image_skipped"] == "write_failed"
    assert skipped("cam-w", "write_failed") == before + 2


def _refuse_writes(data_dir: Path, how: str) -> None:
    if how == "replaced-by-a-file":
        shutil.rmtree(data_dir)
        data_dir.write_text("not a folder")
    else:
        data_dir.chmod(0o555)


@pytest.mark.parametrize("how", ["replaced-by-a-file", "read-only"])
def test_a_data_folder_that_refuses_writes_makes_readyz_503_without_paths(app_with, app_settings, how):
    if how == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes to a read-only folder; the 'replaced-by-a-file' case covers the check")
    client = app_with()
    assert client.get("/readyz").status_code == 200
    _refuse_writes(app_settings.data_dir, how)
    try:
        problem = assert_problem(client.get("/readyz"), 503)
        assert problem["reasons"] == ["data folder not writable"]
        assert str(app_settings.data_dir) not in str(problem)
        assert REGISTRY.get_sample_value("inspect_storage_fault", {"kind": "read_only"}) == 1
        posted = client.post("/api/v1/inspections", content=jpeg_bytes(255), headers=JPEG)
        assert posted.status_code == 201 and posted.json()["image_stored"] is False  # the row is kept
    finally:
        if how == "read-only":
            app_settings.data_dir.chmod(0o755)


def test_a_deleted_sqlite_file_is_refused_not_acknowledged(app_with, app_settings, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("a SQLite file only")
    client = app_with()
    assert client.post("/api/v1/inspections", content=jpeg_bytes(255), headers=JPEG).status_code == 201
    db_file = Path(database_url.removeprefix("sqlite:///"))
    for path in (db_file, db_file.with_name(db_file.name + "-wal"), db_file.with_name(db_file.name + "-shm")):
        path.unlink(missing_ok=True)
    resp = client.post("/api/v1/inspections", content=jpeg_bytes(255), headers=JPEG)
    problem = assert_problem(resp, 503)
    assert resp.headers["retry-after"] and problem["type"].endswith("/database_file_gone")
    ready = assert_problem(client.get("/readyz"), 503)
    assert any(r.startswith("database file ") for r in ready["reasons"])
    assert str(db_file) not in str(ready) and str(db_file.parent) not in str(ready)
    assert REGISTRY.get_sample_value("inspect_storage_fault", {"kind": "database_file"}) == 1
    assert HEALTH.database_file_problem(db_file) in ("deleted", "replaced")


def test_a_journaled_camera_frame_below_the_floor_keeps_no_image(tmp_path):
    """The camera path while the database is away: the frame is written before its result is
    journaled, unless free space is below the floor."""
    import numpy as np

    from app.detections import Detections
    from app.inspection import inspect_frame
    from app.inspection.store import apply_image_policy, write_image_now

    frame = np.full((60, 80, 3), 200, np.uint8)
    dets = Detections(np.array([[5, 5, 30, 30]], np.float32), [0.9], [0], ("crazing",))
    HEALTH.configure(jpeg_quality=90, store_frames=True, floor_mb=1e12, watermark_mb=0)
    r = inspect_frame(frame, dets, model_version="m", frame_uid="low1")
    apply_image_policy(r, "ng")
    write_image_now(r, tmp_path)
    assert (r.image_path, r.image_bytes, r.image_skipped) == (None, None, "low_disk")
    assert not (tmp_path / "images").exists()
    HEALTH.configure(jpeg_quality=90, store_frames=True, floor_mb=0, watermark_mb=0)
    r = inspect_frame(frame, dets, model_version="m", frame_uid="ok1")
    apply_image_policy(r, "ng")
    write_image_now(r, tmp_path)
    size = (tmp_path / r.image_path).stat().st_size
    assert r.image_skipped is None and r.image_size == -(-size // 4096) * 4096  # whole blocks on disk


def test_jpeg_quality_and_crops_only_are_settings_of_the_stored_images():
    import numpy as np

    from app.detections import Detections
    from app.ingest.config import CameraConfig
    from app.ingest.frame_images import prepare_images
    from app.inspection import inspect_frame

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (120, 160, 3), np.uint8)
    dets = Detections(np.array([[5, 5, 60, 60]], np.float32), [0.9], [0], ("crazing",))
    cam = CameraConfig(id="c", source="folder:x", images="ng", crops=True)

    def stored(quality: int, frames: bool | None) -> tuple[int, int]:
        HEALTH.configure(jpeg_quality=quality, store_frames=True, floor_mb=0, watermark_mb=0)
        r = inspect_frame(frame, dets, model_version="m")
        crops = prepare_images(r, cam.model_copy(update={"frames": frames}))
        return len(r.image_bytes or b""), sum(map(len, crops))

    high, low = stored(95, None), stored(50, None)
    assert low[0] < high[0] and low[1] < high[1]
    frame_bytes, crop_bytes = stored(90, False)  # the camera keeps its crops only
    assert frame_bytes == 0 and crop_bytes > 0


def test_the_camera_writer_journals_instead_of_committing_into_a_deleted_sqlite_file(tmp_path):
    """Rows that cannot be made durable in the database are journaled (durable on the data disk), never
    counted as committed."""
    import numpy as np

    from app.db.migrate import upgrade
    from app.db.session import Database
    from app.detections import Detections
    from app.ingest.journal import Journal
    from app.ingest.writer import DbWriter, Item
    from app.inspection import inspect_frame

    db_file = tmp_path / "cam.db"
    upgrade(f"sqlite:///{db_file}")
    db = Database(f"sqlite:///{db_file}")
    assert db.ping() is None
    HEALTH.watch_database_file(db_file)
    journaled: list[int] = []
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=2, batch_ms=10,
                      retry_s=60, on_journaled=lambda items: journaled.append(len(items)))
    writer.start()
    db_file.unlink()
    frame = np.full((40, 40, 3), 90, np.uint8)
    for k in range(2):
        r = inspect_frame(frame, Detections.empty(("crazing",)), model_version="m", frame_uid=f"gone-{k}")
        r.image = None
        writer.submit(Item(r))
    writer.stop()
    db.dispose()
    assert (writer.committed, sum(journaled)) == (0, 2)
    assert writer.db_up is False and "database file was deleted" in (writer.last_error or "")


def test_below_the_floor_a_camera_frame_keeps_no_crops_and_a_replay_keeps_its_written_file(db, tmp_path):
    import numpy as np

    from app.detections import Detections
    from app.ingest.config import CameraConfig
    from app.ingest.frame_images import prepare_images
    from app.inspection import inspect_frame, persist_results
    from app.inspection.store import apply_image_policy, write_image_now

    frame = np.full((60, 80, 3), 200, np.uint8)
    dets = Detections(np.array([[5, 5, 30, 30]], np.float32), [0.9], [0], ("crazing",))
    # written while the disk had room (the database away: the frame before its journal record)
    journaled = inspect_frame(frame, dets, model_version="m", frame_uid="replayed")
    apply_image_policy(journaled, "ng")
    write_image_now(journaled, tmp_path)
    assert journaled.image_path and journaled.image_bytes is None

    HEALTH.configure(jpeg_quality=90, store_frames=True, floor_mb=1e12, watermark_mb=0, data_dir=tmp_path)
    live = inspect_frame(frame, dets, model_version="m", frame_uid="live")
    crops = prepare_images(live, CameraConfig(id="c", source="folder:x", images="ng", crops=True))
    assert (crops, live.image_bytes, live.crop_count, live.image_skipped) == ([], None, 0, "low_disk")
    with db.session() as s:  # the replay comes in below the floor: its file is there, its row names it
        stored = persist_results(s, [journaled, live], data_dir=tmp_path)
        assert stored[0].row.image_path == journaled.image_path and stored[1].row.image_path is None
    assert (tmp_path / journaled.image_path).is_file()
