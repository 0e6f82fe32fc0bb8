"""Frame uids are derived, not random: the same camera reading the same frame again (a restart after a
crash re-reads a file from the start) gets the same uid, so each frame is stored once; live frames carry
their capture session, so positions that restart after a reconnect never collide."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select

from app.db.models import Inspection
from app.db.session import Database
from app.ingest.config import CameraConfig
from app.ingest.sources import derive_frame_uid, live_origin, make_source

ROOT = Path(__file__).resolve().parents[1]


def frames_of(source) -> list:
    source.open()
    try:
        out = []
        while (frame := source.read()) is not None:
            out.append(frame)
        return out
    finally:
        source.close()


def uids(camera: str, source) -> list[str]:
    return [derive_frame_uid(camera, f.origin) for f in frames_of(source)]


def test_reading_a_folder_again_gives_the_same_uids(image_folder: Path) -> None:
    cam = CameraConfig(id="cam-a", source=str(image_folder))
    first, again = uids("cam-a", make_source(cam)), uids("cam-a", make_source(cam))
    assert first == again and len(set(first)) == 4
    assert all(len(u) == 32 and u.isalnum() for u in first)
    assert set(uids("cam-b", make_source(cam))).isdisjoint(first)  # another camera, other frames


def test_a_changed_file_is_another_frame(image_folder: Path) -> None:
    cam = CameraConfig(id="cam-a", source=str(image_folder))
    before = uids("cam-a", make_source(cam))
    cv2.imwrite(str(image_folder / "001.png"), np.full((32, 48, 3), 200, np.uint8))
    os.utime(image_folder / "001.png", ns=(1, 1))  # a different modification time, whatever the clock
    after = uids("cam-a", make_source(cam))
    assert after[0] == before[0] and after[2:] == before[2:] and after[1] != before[1]


def test_a_finite_simulator_draws_the_same_frames_with_the_same_uids() -> None:
    cam = CameraConfig(id="sim", source="sim://neu-det?fps=30&width=128&height=96&realtime=false&seconds=0.1")
    assert uids("sim", make_source(cam)) == uids("sim", make_source(cam))


def test_live_positions_that_restart_after_a_reconnect_never_collide() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    first, second = live_origin("session-1", 0, at), live_origin("session-2", 0, at)
    assert derive_frame_uid("cam", first) != derive_frame_uid("cam", second)
    later = live_origin("session-1", 0, datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC))
    assert derive_frame_uid("cam", first) != derive_frame_uid("cam", later)


def rows(url: str) -> tuple[int, int]:
    db = Database(url)
    try:
        with db.session() as s:
            total = s.scalar(select(func.count()).select_from(Inspection)) or 0
            distinct = s.scalar(select(func.count(func.distinct(Inspection.frame_uid)))) or 0
            return total, distinct
    except Exception:  # the schema may not exist yet while the first process starts
        return 0, 0
    finally:
        db.dispose()


@pytest.mark.slow
@pytest.mark.drill
def test_kill_9_and_restart_of_ingest_on_a_file_stores_each_frame_once(tmp_path: Path,
                                                                        tiny_model_path: Path) -> None:
    video = tmp_path / "line.avi"
    frames = 120
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, (96, 64))
    for i in range(frames):
        writer.write(np.full((64, 96, 3), (i * 7) % 255, np.uint8))
    writer.release()
    cams = tmp_path / "cameras.yaml"
    cams.write_text("pipeline: {workers: 1, max_batch: 1}\ncameras:\n"
                    f'  - id: line1\n    source: "{video}"\n    images: never\n    fps_cap: 40\n')
    url = f"sqlite:///{tmp_path / 'inspect.db'}"
    env = {**os.environ, "INSPECT_DATABASE_URL": url, "INSPECT_DATA_DIR": str(tmp_path / "data"),
           "INSPECT_MODEL_PATH": str(tiny_model_path), "INSPECT_PROVIDERS": "cpu", "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    first = subprocess.Popen([*cli, "ingest", "--cameras", str(cams), "--no-http"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while rows(url)[0] < 20:  # part of the file is stored ...
            assert first.poll() is None and time.monotonic() < deadline, "ingest ended or stalled"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)  # ... then the process dies without a chance to clean up
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    stored_before = rows(url)[0]
    assert 20 <= stored_before < frames
    done = subprocess.run([*cli, "ingest", "--cameras", str(cams), "--no-http"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert rows(url) == (frames, frames)  # every frame once: the re-read frames were not stored twice
