"""A camera's ``imgsz``: whole frames at a larger model input (free-size models), the other way besides
tiling to show the model defects at the scale it learned them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHIPPED_INT8, strip_recall
from sqlalchemy import func, select

from app.cli import main as cli_main
from app.db.models import Defect, Inspection
from app.db.session import Database
from app.inference import Engine
from app.ingest.config import CamerasConfigError, parse_cameras
from app.ingest.pipeline import Pipeline


@pytest.fixture(scope="module")
def shipped() -> Engine:
    return Engine(SHIPPED_INT8, intra_op_threads=1)


def test_free_size_model_takes_a_larger_input_per_call(shipped: Engine) -> None:
    frame = np.full((480, 640, 3), 90, np.uint8)
    assert shipped.input_size([frame]) == (192, 256)  # the model's own 256
    assert shipped.input_size([frame], 640) == (480, 640)  # the frame as it is
    assert shipped.input_size([frame], 512) == (384, 512)
    assert shipped.input_size([np.zeros((400, 640, 3), np.uint8)], 640) == (416, 640)  # stride 32
    batch, params = shipped.preprocess([frame], 512)
    assert batch.shape == (1, 3, 384, 512) and params[0].scale_x == pytest.approx(0.8)
    assert shipped.fit_size(None) == shipped.fit_size(256) == (256, 256)
    with pytest.raises(ValueError, match="multiple of the model's largest stride"):
        shipped.fit_size(500)


def test_fixed_size_model_refuses_another_input(tiny_model_path: Path) -> None:
    engine = Engine(tiny_model_path, intra_op_threads=1)
    assert engine.fit_size(64) == (64, 64)
    with pytest.raises(ValueError, match="fixed at 64x64; export it with --dynamic"):
        engine.fit_size(128)


def test_whole_frame_at_its_own_scale_finds_what_shrinking_loses(shipped: Engine, neu_sample: Path) -> None:
    from app.ingest.simulator import StripSimulator

    sim = StripSimulator(neu_sample / "images", 640, 480, 30.0, 120.0, 0)
    frames = [sim.frame(i) for i in (0, 37, 74, 111, 148, 185)]
    shrunk = strip_recall(frames, lambda image: shipped.detect([image])[0])
    native = strip_recall(frames, lambda image: shipped.detect([image], imgsz=640)[0])
    # measured on 200 frames (docs/benchmarks.md "Camera scale"): recall 0.09 shrunk, 0.64 at 640;
    # on these six frames of the shipped sample: 0.14 shrunk, 0.63 at 640
    assert native >= 0.5 and native >= 3 * shrunk, (shrunk, native)
    for d in (shipped.detect([image], imgsz=640)[0] for image, _ in frames):
        assert (d.xyxy[:, [0, 2]] <= 640).all() and (d.xyxy[:, [1, 3]] <= 480).all()


def test_cameras_file_takes_either_tiles_or_imgsz() -> None:
    cfg = parse_cameras("cameras:\n  - id: c\n    source: 0\n    imgsz: 640\n")
    assert cfg.cameras[0].imgsz == 640
    with pytest.raises(CamerasConfigError, match="either tile_size .* or imgsz"):
        parse_cameras("cameras:\n  - id: c\n    source: 0\n    imgsz: 640\n    tile_size: 256\n")
    with pytest.raises(CamerasConfigError, match=r"cameras\[0\]\.imgsz"):
        parse_cameras("cameras:\n  - id: c\n    source: 0\n    imgsz: 16\n")


def test_pipeline_checks_imgsz_against_the_model(tiny_model_path: Path, tmp_path: Path) -> None:
    cfg = parse_cameras("cameras:\n  - id: c\n    source: 0\n    imgsz: 640\n")
    with pytest.raises(CamerasConfigError,
                       match=r"cameras\[0\]\.imgsz: imgsz 640: this model's input is fixed"):
        Pipeline(cfg, Engine(tiny_model_path, intra_op_threads=1), Database("sqlite://"), tmp_path / "data")


class InputSizes:
    """ONNX Runtime's session of an engine, passed through, noting the size of every input it runs."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.runs: list[tuple[int, ...]] = []

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        [batch] = feeds.values()
        self.runs.append(tuple(batch.shape))
        return self.session.run(outputs, feeds)

    def frames_at(self) -> dict[tuple[int, int], int]:
        """How many frames the model saw at each (h, w) input size."""
        seen: dict[tuple[int, int], int] = {}
        for n, _c, h, w in self.runs:
            seen[h, w] = seen.get((h, w), 0) + n
        return seen


def test_camera_with_imgsz_runs_in_the_same_batches_as_others(database_url: str, neu_sample: Path,
                                                              tmp_path: Path) -> None:
    engine = Engine(SHIPPED_INT8, intra_op_threads=1)
    sizes = engine.session = InputSizes(engine.session)
    source = (f"sim://neu-det?images={neu_sample / 'images'}&fps=30&width=640&height=480&realtime=false"
              "&seconds=0.2&seed=3")
    cfg = parse_cameras(f"""
pipeline: {{workers: 1, max_batch: 4, max_wait_ms: 5, writer: {{batch_rows: 16, batch_ms: 50}}}}
cameras:
  - {{id: native, source: "{source}", imgsz: 640, images: never}}
  - {{id: shrunk, source: "{source}", images: never}}
""")
    db = Database(database_url)
    with Pipeline(cfg, engine, db, tmp_path / "data") as pipeline:
        assert pipeline.wait_finished(120)
        views = {c["id"]: (c["imgsz"], c["tiles"]) for c in pipeline.snapshot()["cameras"]}
    assert views == {"native": (640, None), "shrunk": (256, None)}  # GET /api/v1/cameras shows it
    with db.session() as s:
        frames = dict(s.execute(select(Inspection.camera_id, func.count())
                                .group_by(Inspection.camera_id)).all())
        found = dict(s.execute(select(Inspection.camera_id, func.count(Defect.id)).join(Defect)
                               .group_by(Inspection.camera_id)).all())
        boxes = s.execute(select(Defect.x1, Defect.y1, Defect.x2, Defect.y2)).all()
        timed = dict(s.execute(select(Inspection.camera_id, func.min(Inspection.inference_ms))
                               .group_by(Inspection.camera_id)).all())
    db.dispose()
    # the model saw every native frame whole at 640x480 and every other one at its own 256 (192x256),
    # one run per input size: a batch mixing the cameras is split by size, never padded to the larger
    assert sizes.frames_at() == {(480, 640): 6, (192, 256): 6}, sizes.runs
    assert timed["native"] > 0 and timed["shrunk"] > 0  # each frame is charged a part of its run
    assert frames == {"native": 6, "shrunk": 6}  # same frames (same seed), each stored once
    assert found["native"] >= 2 * found.get("shrunk", 0) and found["native"] >= 12, found
    assert all(0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480 for x1, y1, x2, y2 in boxes)


@pytest.mark.parametrize("what", ["engine", "pipeline"])
def test_bench_refuses_an_imgsz_the_model_cannot_take(what: str, tiny_model_path: Path, capsys) -> None:
    assert cli_main(["bench", what, "--model", str(tiny_model_path), "--source", "sim://neu-det",
                     "--imgsz", "640", "--seconds", "1"]) == 2
    assert "--imgsz: imgsz 640: this model's input is fixed at 64x64" in capsys.readouterr().err


def test_bench_engine_measures_at_the_camera_input_size(shipped: Engine, neu_sample: Path, capsys) -> None:
    import json

    source = f"sim://neu-det?images={neu_sample / 'images'}&width=640&height=480"
    assert cli_main(["bench", "engine", "--model", str(SHIPPED_INT8), "--source", source, "--imgsz", "640",
                     "--batch-sizes", "1", "--seconds", "0.3", "--intra-op-threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input"] == [480, 640] and out["frame"] == [480, 640] and out["results"][0]["fps"] > 0
