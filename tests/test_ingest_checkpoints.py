"""Finite sources go on from their checkpoint: a stopped or restarted ingest reads (decodes, infers) only
the frames after the ones stored; a file that changed is read from the start; a folder's new files are
read; `--from-start` forgets the checkpoints. Every frame is stored once throughout."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select

from app.cli import main as cli_main
from app.db.models import Inspection
from app.db.session import Database
from app.inference import Engine
from app.ingest.checkpoints import CheckpointStore, Progress, checkpoints_dir
from app.ingest.config import parse_cameras
from app.ingest.pipeline import Pipeline

PIPELINE = "pipeline: {workers: 1, max_batch: 2, max_wait_ms: 5, writer: {batch_rows: 4, batch_ms: 20}}"


def stored(db: Database) -> tuple[int, int]:
    with db.session() as s:
        total = s.scalar(select(func.count()).select_from(Inspection)) or 0
        distinct = s.scalar(select(func.count(func.distinct(Inspection.frame_uid)))) or 0
    return int(total), int(distinct)


def run_to_end(cameras_yaml: str, engine: Engine, db: Database, data: Path) -> dict:
    with Pipeline(parse_cameras(cameras_yaml), engine, db, data) as pipeline:
        assert pipeline.wait_finished(60)
    [camera] = pipeline.snapshot()["cameras"]
    return camera


def write_video(path: Path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (96, 64))
    for i in range(frames):
        writer.write(np.full((64, 96, 3), (i * 7) % 255, np.uint8))
    writer.release()


@pytest.fixture
def engine(tiny_model_path: Path) -> Engine:
    return Engine(tiny_model_path, intra_op_threads=1)


def test_progress_advances_over_settled_frames_at_the_head_only() -> None:
    p = Progress(start=10)
    for index in (10, 11, 12):
        p.read(index, after=index + 1)
    p.settle(11)  # a later frame first (another worker): the head is not durable yet
    assert p.position == 10
    p.settle(10)
    assert p.position == 12 and not p.finished
    p.read(14, after=15)  # a skipped file (13) lies between
    p.settle(14)
    assert p.position == 12
    p.settle(12)
    assert p.position == 15
    p.ended(16)  # an unreadable last file: nothing in flight, the end is the position
    assert p.position == 16 and p.finished


def test_a_folder_goes_on_after_its_stored_files_and_starts_over_when_one_changed(
        db: Database, engine: Engine, image_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    cams = f"{PIPELINE}\ncameras:\n  - id: shelf\n    source: \"{image_folder}\"\n    images: never\n"
    first = run_to_end(cams, engine, db, data)
    assert (first["captured"], first["resumed_from"], first["checkpoint"]) == (4, 0, 4)
    saved = json.loads((checkpoints_dir(data) / "shelf.json").read_text())
    assert saved["position"] == 4 and saved["finished"] is True and saved["camera"] == "shelf"

    again = run_to_end(cams, engine, db, data)  # the folder is done: nothing is read again
    assert (again["captured"], again["resumed_from"], again["finished"]) == (0, 4, True)

    cv2.imwrite(str(image_folder / "004.png"), np.full((48, 80, 3), 90, np.uint8))
    more = run_to_end(cams, engine, db, data)  # a new file: only it is read
    assert (more["captured"], more["resumed_from"]) == (1, 4)
    assert stored(db) == (5, 5)

    cv2.imwrite(str(image_folder / "000.png"), np.full((48, 80, 3), 250, np.uint8))
    os.utime(image_folder / "000.png", ns=(1, 1))  # another modification time, whatever the clock
    changed = run_to_end(cams, engine, db, data)  # read from the start: one new frame, four replays
    assert (changed["captured"], changed["resumed_from"]) == (5, 0)
    assert stored(db) == (6, 6)


def test_a_stopped_video_goes_on_where_its_stored_frames_end(db: Database, engine: Engine,
                                                             tmp_path: Path) -> None:
    video, frames, data = tmp_path / "line.avi", 60, tmp_path / "data"
    write_video(video, frames)
    cams = parse_cameras(f"{PIPELINE}\ncameras:\n  - id: line1\n    source: \"{video}\"\n"
                         "    images: never\n    fps_cap: 60\n")
    pipeline = Pipeline(cams, engine, db, data).start()
    try:
        [camera] = pipeline.cameras
        deadline = time.monotonic() + 60
        while camera.state.committed < 12:
            assert time.monotonic() < deadline, "ingest stalled"
            time.sleep(0.02)
    finally:
        pipeline.stop()  # graceful: what was read is stored, and the checkpoint says so
    [stopped] = pipeline.snapshot()["cameras"]
    assert not stopped["finished"] and stopped["checkpoint"] == stopped["captured"] < frames
    assert stored(db) == (stopped["captured"], stopped["captured"])

    rest = run_to_end(f"{PIPELINE}\ncameras:\n  - id: line1\n    source: \"{video}\"\n    images: never\n",
                      engine, db, data)
    assert rest["resumed_from"] == stopped["captured"]
    assert rest["captured"] == frames - stopped["captured"]  # nothing read twice
    assert rest["committed"] == rest["captured"] and rest["finished"]
    assert stored(db) == (frames, frames)

    os.utime(video, ns=(1, 1))  # the file changed: read from the start, every frame a replay
    again = run_to_end(f"{PIPELINE}\ncameras:\n  - id: line1\n    source: \"{video}\"\n    images: never\n",
                       engine, db, data)
    assert (again["resumed_from"], again["captured"]) == (0, frames)
    assert stored(db) == (2 * frames, 2 * frames)  # another file identity: other uids


def test_from_start_forgets_the_checkpoints(database_url: str, tiny_model_path: Path, image_folder: Path,
                                            tmp_path: Path, monkeypatch, capsys) -> None:
    cams = tmp_path / "cameras.yaml"
    cams.write_text(f"cameras:\n  - id: shelf\n    source: \"{image_folder}\"\n")
    monkeypatch.setenv("INSPECT_DATABASE_URL", database_url)
    monkeypatch.setenv("INSPECT_MODEL_PATH", str(tiny_model_path))
    monkeypatch.setenv("INSPECT_DATA_DIR", str(tmp_path / "data"))

    def ingest(*extra: str) -> dict:
        capsys.readouterr()
        assert cli_main(["ingest", "--cameras", str(cams), "--no-http", *extra]) == 0
        [camera] = json.loads(capsys.readouterr().out)["cameras"]
        return camera

    assert ingest()["captured"] == 4
    assert ingest()["captured"] == 0
    assert CheckpointStore(checkpoints_dir(tmp_path / "data")).load("shelf") is not None
    again = ingest("--from-start")
    assert (again["captured"], again["resumed_from"], again["committed"]) == (4, 0, 4)
    db = Database(database_url)
    assert stored(db) == (4, 4)  # the frames read again were replays
    db.dispose()


def test_journaled_frames_advance_the_checkpoint_and_are_replayed_after_a_restart(
        database_url: str, engine: Engine, image_folder: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    cams = f"{PIPELINE}\ncameras:\n  - id: shelf\n    source: \"{image_folder}\"\n    images: never\n"
    away = Database("postgresql+psycopg://postgres@127.0.0.1:1/nothing-listens-here")
    try:
        outage = run_to_end(cams, engine, away, data)
    finally:
        away.dispose()
    assert (outage["journaled"], outage["committed"], outage["checkpoint"]) == (4, 0, 4)

    db = Database(database_url)
    try:
        with Pipeline(parse_cameras(cams), engine, db, data) as pipeline:
            assert pipeline.wait_finished(60)
            deadline = time.monotonic() + 60
            while pipeline.journal.pending:  # the journal is replayed; the folder is not read again
                assert time.monotonic() < deadline, "journal not replayed"
                time.sleep(0.05)
        [camera] = pipeline.snapshot()["cameras"]
        assert (camera["captured"], camera["resumed_from"]) == (0, 4)
        assert stored(db) == (4, 4)
    finally:
        db.dispose()
