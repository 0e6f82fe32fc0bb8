"""Sources: the strip simulator (frames and ground truth), folder and video-file sources, and the
capture thread's reconnect (simulated cable pulls) and stall watchdog."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main as cli_main
from app.ingest.capture import CameraRunner
from app.ingest.config import CameraConfig, SimulatorConfig
from app.ingest.queues import FrameHub
from app.ingest.simulator import StripSimulator
from app.ingest.sources import FolderSource, Frame, OpenCVSource, SimulatorSource, Source, SourceError
from app.inspection import CameraContext


def wait_until(cond, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def test_simulator_frames_move_and_truth_comes_from_the_labels(neu_sample: Path) -> None:
    sim = StripSimulator(neu_sample / "images", width=320, height=240, fps=10, speed=50, seed=3)
    a, truth_a = sim.frame(0)
    b, _ = sim.frame(1)
    assert a.shape == (240, 320, 3) and a.dtype == np.uint8
    assert np.array_equal(a[:, 5:], b[:, :-5])  # 50 px/s at 10 FPS: the strip moved 5 px
    again, truth_again = StripSimulator(neu_sample / "images", 320, 240, 10, 50, seed=3).frame(0)
    assert np.array_equal(a, again) and truth_a == truth_again  # deterministic per seed
    # the top-left tile is a dataset image, and its YOLO labels are boxes of this frame
    idx = sim.image_index(0, 0)
    tile = cv2.imread(str(sim.paths[idx]))
    assert np.array_equal(a[:200, :200], tile)
    label = (neu_sample / "labels" / (sim.paths[idx].stem + ".txt")).read_text().split()
    c, x, y, w, h = int(label[0]), *map(float, label[1:5])
    expected = [(x - w / 2) * 200, (y - h / 2) * 200, (x + w / 2) * 200, (y + h / 2) * 200]
    mine = [t for t in truth_a if t.tile == sim.paths[idx].name]
    assert mine and mine[0].class_id == c and mine[0].class_name == sim.names[c]
    assert np.allclose([mine[0].x1, mine[0].y1, mine[0].x2, mine[0].y2], expected, atol=0.01)
    for t in truth_a:
        assert 0 <= t.x1 < t.x2 <= 320 and 0 <= t.y1 < t.y2 <= 240 and 0.25 <= t.visible <= 1


def test_shipped_sample_is_the_default_strip(tmp_path: Path, monkeypatch, capsys) -> None:
    """Without INSPECT_SIM_IMAGES or --images the simulator tiles the NEU-DET sample in the package:
    15 labelled images of each class, with the class names, from any working directory."""
    from conftest import NEU_NAMES

    from app.ingest.simulator import SAMPLE_DIR, default_images_dir

    monkeypatch.delenv("INSPECT_SIM_IMAGES", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_images_dir() == SAMPLE_DIR / "images"
    sim = StripSimulator(width=320, height=240)
    assert sim.names == list(NEU_NAMES) and len(sim.paths) == 90
    for name in NEU_NAMES:
        assert len([p for p in sim.paths if p.stem.rsplit("_", 1)[0] == name]) == 15, name
    assert all((SAMPLE_DIR / "labels" / f"{p.stem}.txt").read_text().strip() for p in sim.paths)
    credit = " ".join((SAMPLE_DIR / "README.md").read_text().split())
    assert "K. Song and Y. Yan, Northeastern University" in credit and "NEU surface defect database" in credit
    assert cli_main(["simulate", "--out", "frames", "--seconds", "0.2", "--width", "96", "--height", "96"
                     ]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == str(SAMPLE_DIR / "images") and summary["frames"] == 6
    assert len(list((tmp_path / "frames").glob("frame_*.jpg"))) == 6


def test_simulate_command_writes_frames_and_truth(tmp_path: Path, neu_sample: Path, capsys) -> None:
    out = tmp_path / "frames"
    rc = cli_main(["simulate", "--out", str(out), "--fps", "10", "--seconds", "0.5", "--width", "160",
                   "--height", "120", "--images", str(neu_sample / "images")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    lines = [json.loads(x) for x in (out / "truth.jsonl").read_text().splitlines()]
    assert summary["frames"] == 5 == len(lines) == len(list(out.glob("frame_*.jpg")))
    assert lines[0]["file"] == "frame_000000.jpg" and lines[1]["offset_px"] == 12
    assert sum(len(x["boxes"]) for x in lines) == summary["truth_boxes"] > 0

    video = tmp_path / "line.mp4"
    assert cli_main(["simulate", "--out", str(video), "--fps", "10", "--seconds", "1", "--width", "160",
                     "--height", "120", "--images", str(neu_sample / "images")]) == 0
    assert len((tmp_path / "line.truth.jsonl").read_text().splitlines()) == 10
    src = OpenCVSource(str(video))
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    src.close()
    assert not src.live and len(frames) == 10 and frames[0].image.shape == (120, 160, 3)
    for threads in (0, 2):  # OpenCV's own choice, and an explicit count: the same frames
        other = OpenCVSource(str(video), decode_threads=threads)
        other.open()
        again = []
        while (f := other.read()) is not None:
            again.append(f)
        other.close()
        assert len(again) == 10
        assert all(np.array_equal(a.image, b.image) for a, b in zip(again, frames, strict=True))
    assert cli_main(["simulate", "--out", str(tmp_path / "x"), "--images", str(tmp_path / "none")]) == 2


def test_folder_source_reads_in_order_and_skips_broken_files(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((8, 8, 3), i * 50, np.uint8))
    (tmp_path / "f1b.jpg").write_bytes(b"not an image")
    src = FolderSource(tmp_path)
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert [f.name for f in frames] == ["f0.png", "f1.png", "f2.png"] and src.skipped == 1
    assert int(frames[2].image[0, 0, 0]) == 100


def test_opencv_source_that_cannot_open_raises() -> None:
    with pytest.raises(SourceError, match="cannot open"):
        OpenCVSource("rtsp://127.0.0.1:9/none", timeout_ms=500).open()


def _runner(source: Source, **cfg) -> tuple[CameraRunner, FrameHub]:
    hub = FrameHub()
    cam = CameraConfig.model_validate({"id": "c", "source": "x", "queue_size": 1000, **cfg})
    return CameraRunner(cam, source, hub, CameraContext(camera_id="c")), hub


def test_capture_reconnects_after_the_camera_dies(neu_sample: Path) -> None:
    sim = SimulatorSource(SimulatorConfig(images=str(neu_sample / "images"), fps=200, width=64, height=64,
                                          realtime=True, dropout_every=10, dropout_s=0.2))
    runner, hub = _runner(sim, buffer="block", reconnect={"initial_s": 0.05, "max_s": 0.2})
    runner.start()
    wait_until(lambda: runner.state.reconnects >= 2 and runner.state.captured >= 25)
    runner.stop()
    runner.thread.join(5)
    snap = runner.state.snapshot()
    assert snap["failures"]["error"] >= 2 and snap["last_error_at"] is not None  # each pull, then recovered
    assert snap["attempts"] > snap["reconnects"]
    frames = hub.get_batch(10_000, 0)
    assert len(frames) == snap["captured"] >= 25  # frames keep coming after each reconnect
    indices = [j.frame.index for j in frames]
    assert indices == sorted(indices) and indices[-1] > 30  # the line moved on while unplugged


class HangingCamera(Source):
    """A camera whose stream freezes after a few frames without an error (until closed)."""

    live = True

    def __init__(self) -> None:
        self.opened = 0
        self.count = 0
        self._closed = threading.Event()

    def open(self) -> None:
        self.opened += 1
        self.count = 0
        self._closed.clear()

    def read(self) -> Frame | None:
        if self.count >= 3:
            self._closed.wait()  # a frozen stream: read() never returns by itself
            raise SourceError("stream closed")
        self.count += 1
        return Frame(np.zeros((8, 8, 3), np.uint8), self.count, None, time.perf_counter())  # type: ignore[arg-type]

    def close(self) -> None:
        self._closed.set()


def test_stall_watchdog_reconnects_a_frozen_stream() -> None:
    cam = HangingCamera()
    runner, hub = _runner(cam, stall_timeout_s=0.2, reconnect={"initial_s": 0.05, "max_s": 0.1})
    runner.start()
    end = time.monotonic() + 20
    while cam.opened < 3:
        assert time.monotonic() < end
        runner.check_stall(time.monotonic())  # what the pipeline's watchdog thread calls
        time.sleep(0.02)
    runner.stop()
    cam.close()
    runner.thread.join(5)
    assert runner.state.reconnects >= 2 and runner.state.failures["stalled"] >= 2
    assert hub.depth() == runner.state.captured >= 6
