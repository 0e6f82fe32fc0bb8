"""Cameras file validation: unknown keys and bad values stop start-up with the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.ingest.config import CamerasConfigError, load_cameras, parse_cameras
from app.ingest.sources import FFmpegSource, FolderSource, OpenCVSource, SimulatorSource, make_source
from app.ingest.startup import DEMO_CAMERAS

GOOD = """\
pipeline:
  workers: 2
  max_batch: 4
cameras:
  - id: line1-top
    line: line1
    station: top
    source: rtsp://user:secret@10.0.0.5:554/stream1
    fps_cap: 15
    roi: [10, 0, 600, 480]
    thresholds: {default: 0.3, scratches: 0.5}
    buffer: drop-oldest
    queue_size: 4
    images: ng
  - id: sim
    simulator: {fps: 10, width: 320, height: 240, realtime: false, seconds: 1}
"""


def test_good_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "cameras.yaml"
    path.write_text(GOOD)
    cfg = load_cameras(path)
    top, sim = cfg.cameras
    assert top.buffer == "drop-oldest" and top.queue_size == 4 and top.roi == (10, 0, 600, 480)
    assert top.threshold_for("scratches", 0.25) == 0.5
    assert top.threshold_for("crazing", 0.25) == 0.3  # the camera's default
    assert sim.simulator is not None and sim.simulator.width == 320
    assert cfg.pipeline.workers == 2 and cfg.pipeline.writer.batch_rows == 64


@pytest.mark.parametrize(("text", "expected"), [
    ("cameras:\n  - id: a\n    source: 0\n    colour: red\n",
     r"cameras.yaml:4: cameras\[0\]\.colour: unknown key"),
    ("cameras:\n  - id: a\n    source: 0\n    buffer: newest\n",
     r"cameras.yaml:4: cameras\[0\]\.buffer: Input should be 'block' or 'drop-oldest'"),
    ("pipeline:\n  workers: 0\ncameras:\n  - id: a\n    source: 0\n",
     r"cameras.yaml:2: pipeline\.workers: Input should be greater than or equal to 1"),
    ("pipeline:\n  writer: {batch_rowz: 3}\ncameras:\n  - id: a\n    source: 0\n",
     r"cameras.yaml:2: pipeline\.writer\.batch_rowz: unknown key"),
    ("cameras:\n  - id: a\n    source: 0\n  - id: b\n    simulator: {fps: -1}\n",
     r"cameras.yaml:5: cameras\[1\]\.simulator\.fps: Input should be greater than 0"),
    ("cameras:\n  - id: a\n    source: 0\n    thresholds: {scratches: 1.5}\n",
     r"cameras\[0\]\.thresholds\.scratches: Input should be less than or equal to 1"),
    ("cameras:\n  - id: a\n    source: 0\n    roi: [100, 0, 50, 10]\n",
     r"cameras\[0\]\.roi: Value error, roi must be"),
    ("cameras:\n  - id: a\n    source: 0\n    decode_threads: -1\n",
     r"cameras.yaml:4: cameras\[0\]\.decode_threads: Input should be greater than or equal to 0"),
    ("cameras:\n  - id: a\n", r"cameras\[0\]: Value error, give exactly one of 'source' or 'simulator'"),
    ("cameras:\n  - {id: a, source: 0}\n  - {id: a, source: 1}\n", r"camera id 'a' appears twice"),
    ("cameras: []\n", r"cameras: List should have at least 1 item"),
    ("cameras:\n  - id: a\n    source: 0\n   bad: indent\n", r"cameras.yaml:\d+: not valid YAML"),
    ("- just a list\n", r"expected a mapping"),
])
def test_bad_files_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    with pytest.raises(CamerasConfigError, match=expected):
        load_cameras(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CamerasConfigError, match="nope.yaml: cannot read"):
        load_cameras(tmp_path / "nope.yaml")


def test_sources_from_config(tmp_path: Path, neu_sample: Path) -> None:
    (tmp_path / "frames").mkdir()
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    cfg = parse_cameras(
        "cameras:\n"
        "  - {id: a, source: 'rtsp://u:pw@host/s'}\n"
        "  - {id: b, source: 2}\n"
        "  - {id: c, source: frames}\n"
        "  - {id: d, source: v.mp4, decode_threads: 0}\n"
        "  - {id: e, source: 'sim://neu-det?fps=12&width=320&height=240"
        f"&images={neu_sample / 'images'}'}}\n"
        "  - {id: f, source: missing.mp4}\n"
        "  - {id: g, source: 'sim://neu-det?fps=abc'}\n")
    a, b, c, d, e, f, g = cfg.cameras
    src = make_source(a, tmp_path)
    assert isinstance(src, FFmpegSource) and src.live and src.describe() == "rtsp://u:***@host/s"
    assert isinstance(make_source(b, tmp_path), FFmpegSource)
    assert isinstance(make_source(c, tmp_path), FolderSource)
    file_src = make_source(d, tmp_path)
    assert isinstance(file_src, OpenCVSource) and not file_src.live and file_src.decode_threads == 0
    assert src.decode_threads == 1  # the default: least decoder CPU
    sim = make_source(e, tmp_path)
    assert isinstance(sim, SimulatorSource) and sim.cfg.fps == 12 and sim.cfg.width == 320
    with pytest.raises(CamerasConfigError, match="cameras\\[5\\].source: video file not found"):
        make_source(f, tmp_path, "cameras[5].")
    with pytest.raises(CamerasConfigError, match="source: bad simulator parameter: fps"):
        make_source(g, tmp_path)


def test_shipped_camera_files_validate() -> None:
    root = Path(__file__).resolve().parents[1]
    for path in (DEMO_CAMERAS, root / "deploy" / "cameras.example.yaml"):
        cfg = load_cameras(path)
        assert cfg.cameras
