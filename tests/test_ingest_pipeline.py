"""End to end: simulator camera -> pipeline -> the real Engine (tiny ONNX model) -> the shared
inspection step -> rows in SQLite and PostgreSQL; in the service (lifespan, /api/v1/cameras, --demo),
alone (`defect-inspect ingest`) and under `defect-inspect bench pipeline`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app import metrics
from app.api.deps import service_of
from app.cli import main as cli_main
from app.db.models import Camera, Defect, Inspection
from app.db.session import Database
from app.inference import Engine
from app.ingest.config import CamerasConfigError, parse_cameras
from app.ingest.pipeline import Pipeline


def sim(neu_sample: Path, **kw) -> str:
    params = {"images": str(neu_sample / "images"), "fps": 30, "width": 160, "height": 120,
              "realtime": "false"} | kw
    return "sim://neu-det?" + "&".join(f"{k}={v}" for k, v in params.items())


def counts(db: Database) -> dict:
    with db.session() as s:
        rows = s.execute(select(Inspection.camera_id, Inspection.verdict, func.count())
                         .group_by(Inspection.camera_id, Inspection.verdict)).all()
        uids = s.scalar(select(func.count(func.distinct(Inspection.frame_uid))))
        total = s.scalar(select(func.count()).select_from(Inspection))
        defects = s.scalar(select(func.count()).select_from(Defect))
        cameras = {c.id: (c.line, c.station) for c in s.scalars(select(Camera))}
    return {"by": {(c, v): n for c, v, n in rows}, "uids": uids, "total": total, "defects": defects,
            "cameras": cameras}


def frames_total(camera: str, stage: str) -> float:
    value = metrics.REGISTRY.get_sample_value("inspect_frames_total", {"camera": camera, "stage": stage})
    return value or 0.0


def test_simulator_to_rows_exactly_once(database_url: str, tiny_model_path: Path, neu_sample: Path,
                                        tmp_path: Path) -> None:
    cfg = parse_cameras(f"""
pipeline: {{workers: 2, max_batch: 4, max_wait_ms: 5, writer: {{batch_rows: 16, batch_ms: 50}}}}
cameras:
  - id: e2e-a
    line: line-1
    station: top
    source: "{sim(neu_sample, seconds=1)}"
    images: ng
  - id: e2e-b
    line: line-1
    station: bottom
    source: "{sim(neu_sample, seconds=0.5, seed=2)}"
    thresholds: {{patches: 0.99}}
    images: never
""")
    engine = Engine(tiny_model_path, intra_op_threads=1)
    db = Database(database_url)
    before = frames_total("e2e-a", "committed")
    with Pipeline(cfg, engine, db, tmp_path / "data") as pipeline:
        assert pipeline.wait_finished(60)
        snap = pipeline.snapshot()
    a, b = snap["cameras"]
    assert (a["captured"], a["inspected"], a["committed"], a["dropped"]) == (30, 30, 30, 0)
    assert (b["captured"], b["committed"]) == (15, 15)
    assert a["buffer"] == "block" and a["finished"]  # a finite source: every frame inspected
    c = counts(db)
    assert c["total"] == c["uids"] == 45
    # the strip is bright enough for the tiny model's 'patches' box: NG on camera a; camera b's
    # own threshold for 'patches' (0.99) makes the same frames OK
    assert c["by"] == {("e2e-a", "NG"): 30, ("e2e-b", "OK"): 15} and c["defects"] == 30
    assert c["cameras"] == {"e2e-a": ("line-1", "top"), "e2e-b": ("line-1", "bottom")}
    with db.session() as s:
        last_ng = s.get(Inspection, a["last_ng_inspection_id"])
        assert last_ng.verdict == "NG" and last_ng.camera_id == "e2e-a" and last_ng.source == "stream"
        stored = s.scalars(select(Inspection.image_path).where(Inspection.camera_id == "e2e-a")).all()
        assert all(stored) and all((tmp_path / "data" / p).is_file() for p in stored)
        assert not any(s.scalars(select(Inspection.image_path).where(Inspection.camera_id == "e2e-b")))
    crops = list((tmp_path / "data" / "images").rglob("*-crop0.jpg"))
    assert len(crops) == 30
    assert frames_total("e2e-a", "committed") - before == 30
    assert (metrics.REGISTRY.get_sample_value("inspect_batch_size_sum") or 0) > 0
    db.dispose()


def test_unknown_threshold_class_is_refused(tiny_model_path: Path, neu_sample: Path, tmp_path: Path) -> None:
    cfg = parse_cameras(
        f'cameras:\n  - id: x\n    source: "{sim(neu_sample)}"\n    thresholds: {{rust: 0.5}}\n')
    with pytest.raises(CamerasConfigError, match=r"cameras\[0\]\.thresholds: unknown class 'rust'"):
        Pipeline(cfg, Engine(tiny_model_path), Database(f"sqlite:///{tmp_path / 'x.db'}"), tmp_path)


def test_pipeline_survives_camera_dropouts(database_url: str, tiny_model_path: Path, neu_sample: Path,
                                           tmp_path: Path) -> None:
    cfg = parse_cameras(f"""
cameras:
  - id: flaky
    source: "{sim(neu_sample, fps=100, realtime='true', dropout_every=8, dropout_s=0.1)}"
    buffer: block
    reconnect: {{initial_s: 0.05, max_s: 0.1}}
""")
    db = Database(database_url)
    pipeline = Pipeline(cfg, Engine(tiny_model_path, intra_op_threads=1), db, tmp_path / "data").start()
    cam = pipeline.cameras[0]
    end = time.monotonic() + 30
    while cam.state.reconnects < 2 or cam.state.committed < 20:
        assert time.monotonic() < end
        time.sleep(0.05)
    pipeline.stop()  # graceful: what was captured is committed
    st = cam.state.snapshot()
    assert st["committed"] == st["captured"] and st["dropped"] == 0 and st["reconnects"] >= 2
    assert counts(db)["total"] == st["captured"]
    db.dispose()


def test_service_runs_cameras_and_reports_them(app_settings, neu_sample: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    cams = tmp_path / "cameras.yaml"
    source = sim(neu_sample, realtime="true")
    cams.write_text(f'cameras:\n  - id: svc-cam\n    line: l9\n    source: "{source}"\n')
    settings = app_settings.model_copy(update={"cameras_file": cams})
    with TestClient(create_app(settings)) as client:
        end = time.monotonic() + 30
        while True:
            body = client.get("/api/v1/cameras").json()
            cam = body["cameras"][0]
            if cam["committed"] >= 5:
                break
            assert time.monotonic() < end, body
            time.sleep(0.1)
        assert body["running"] and cam["id"] == "svc-cam" and cam["connected"]
        assert cam["buffer"] == "drop-oldest"
        assert cam["last_ng_inspection_id"] is not None
        row = client.get(f"/api/v1/inspections/{cam['last_ng_inspection_id']}").json()
        assert row["verdict"] == "NG"
        text = client.get("/metrics").text
        assert 'inspect_camera_up{camera="svc-cam"} 1.0' in text and "inspect_db_up 1.0" in text
        for name in ("inspect_pipeline_latency_seconds_bucket", "inspect_queue_depth", "inspect_batch_size",
                     "inspect_db_write_seconds", "inspect_journal_pending", "inspect_frames_dropped_total"):
            assert name in text
        pipeline = service_of(client.app).pipeline
    st = pipeline.cameras[0].state
    assert st.committed == st.inspected == st.captured - st.dropped  # shutdown drained everything


def test_ingest_app_serves_health_and_cameras_of_its_pipeline(app_settings, neu_det_dir: Path,
                                                              tmp_path: Path) -> None:
    """`defect-inspect ingest` over HTTP: the same service assembly in the ingest role; its detector is
    the pipeline's, and there is no upload door."""
    from fastapi.testclient import TestClient

    from app.main import create_ingest_app

    cams = tmp_path / "cameras.yaml"
    cams.write_text(f'cameras:\n  - id: ing-cam\n    source: "{sim(neu_det_dir, seconds=0.2)}"\n')
    with TestClient(create_ingest_app(app_settings, cams)) as client:
        service = service_of(client.app)
        assert service.pipeline is not None and service.engine is service.pipeline.engine
        assert service.webhooks is None
        assert service.pipeline.wait_finished(60)
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["model_version"] == service.engine.version
        body = client.get("/api/v1/cameras").json()
        assert body["running"] and body["cameras"][0]["id"] == "ing-cam"
        assert body["cameras"][0]["committed"] == 6
        assert client.post("/api/v1/inspections", content=b"x").status_code == 404


def test_bad_cameras_file_stops_service_start(app_settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    cams = tmp_path / "cameras.yaml"
    cams.write_text("cameras:\n  - id: a\n    source: 0\n    fps_cap: fast\n")
    with pytest.raises(CamerasConfigError, match=r"cameras.yaml:4: cameras\[0\]\.fps_cap"), \
            TestClient(create_app(app_settings.model_copy(update={"cameras_file": cams}))):
        pass


def test_demo_starts_one_simulator_camera(app_settings, monkeypatch) -> None:
    from conftest import SHIPPED_INT8
    from fastapi.testclient import TestClient

    from app.main import create_app

    monkeypatch.delenv("INSPECT_SIM_IMAGES", raising=False)  # the shipped sample, as on a fresh clone
    demo = app_settings.model_copy(update={"demo": True, "model_path": SHIPPED_INT8})
    with TestClient(create_app(demo)) as client:
        body = client.get("/api/v1/cameras").json()
        assert body["running"] and [c["id"] for c in body["cameras"]] == ["demo-sim"]
    # the demo camera sees whole frames at imgsz 640: a fixed-size model leaves it off, saying why
    with TestClient(create_app(app_settings.model_copy(update={"demo": True}))) as client:
        body = client.get("/api/v1/cameras").json()
        assert not body["running"] and "imgsz 640: this model's input is fixed" in body["reason"]
    with TestClient(create_app(app_settings)) as client:
        body = client.get("/api/v1/cameras").json()
        assert body.pop("storage")["low_disk"] is False  # the data disk's state, with or without cameras
        assert body == {
            "running": False, "reason": "no cameras file (INSPECT_CAMERAS_FILE)", "cameras": [],
            "database": {"up": True, "last_error": None, "down_for_s": None},
            "journal": {"pending": 0, "bytes": 0, "replayed": 0}}


def test_ingest_and_bench_commands(database_url: str, tiny_model_path: Path, neu_sample: Path,
                                   tmp_path: Path, monkeypatch, capsys) -> None:
    frames = tmp_path / "frames"
    assert cli_main(["simulate", "--out", str(frames), "--seconds", "0.4", "--width", "96", "--height", "96",
                     "--images", str(neu_sample / "images")]) == 0
    cams = tmp_path / "cameras.yaml"
    cams.write_text("cameras:\n  - id: cli-cam\n    source: frames\n")  # relative to the cameras file
    monkeypatch.setenv("INSPECT_DATABASE_URL", database_url)
    monkeypatch.setenv("INSPECT_MODEL_PATH", str(tiny_model_path))
    monkeypatch.setenv("INSPECT_DATA_DIR", str(tmp_path / "data"))
    capsys.readouterr()
    assert cli_main(["ingest", "--cameras", str(cams), "--no-http"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cameras"][0]["committed"] == 12 and out["cameras"][0]["finished"]
    db = Database(database_url)
    assert counts(db)["total"] == 12
    db.dispose()

    assert cli_main(["bench", "pipeline", "--model", str(tiny_model_path), "--source", str(frames),
                     "--seconds", "5", "--engine-seconds", "0.3"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["frames"] == 12 and bench["dropped"] == 0 and bench["per_camera_fps"][0] == bench["fps"]
    for key in ("fps", "latency_ms_p50", "latency_ms_p99", "engine_fps", "ratio", "machine", "cpu_ratio"):
        assert bench[key] is not None
    # engine_fps is the mean of the slices before and after the pipeline run
    assert bench["engine_fps"] == pytest.approx((bench["engine_fps_before"] + bench["engine_fps_after"]) / 2,
                                                abs=0.01)
    assert bench["cpu_ms_per_frame"] > 0 and bench["engine_cpu_ms_per_frame"] > 0
    # from /proc/self/task in clock ticks (10 ms): the workers and the writer are alive to the end
    by_role = bench["cpu_ms_per_frame_by_role"]
    assert {"workers", "writer"} <= set(by_role) <= {"capture", "workers", "writer"}
    assert all(v >= 0 for v in by_role.values())
    assert cli_main(["bench", "engine", "--model", str(tiny_model_path), "--seconds", "0.2",
                     "--batch-sizes", "1,2", "--source", str(frames)]) == 0
    eng = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in eng["results"]] == [1, 2] and all(r["fps"] > 0 for r in eng["results"])

    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras:\n  - id: x\n    source: frames\n    queue: 3\n")
    assert cli_main(["ingest", "--cameras", str(bad), "--check"]) == 2
    assert "bad.yaml:4: cameras[0].queue: unknown key" in capsys.readouterr().err


def test_tiled_camera_detects_per_window_and_stores_frame_coordinates(
        database_url: str, tiny_model_path: Path, neu_sample: Path, tmp_path: Path) -> None:
    # the tiny model puts one 'patches' box in the middle of every bright input: whole frames give one
    # box each, a tiled camera one per window (64 px windows of a 160x120 frame: 3 x 2, no overlap)
    cfg = parse_cameras(f"""
pipeline: {{workers: 1, max_batch: 4, max_wait_ms: 5, writer: {{batch_rows: 16, batch_ms: 50}}}}
cameras:
  - id: tiled
    source: "{sim(neu_sample, seconds=0.2)}"
    tile_size: 64
    tile_overlap: 0
    images: never
  - id: whole
    source: "{sim(neu_sample, seconds=0.2)}"
    images: never
""")
    engine = Engine(tiny_model_path, intra_op_threads=1)
    db = Database(database_url)
    with Pipeline(cfg, engine, db, tmp_path / "data") as pipeline:
        assert pipeline.wait_finished(60)
    with db.session() as s:
        per_frame = {cam: [len(i.defects) for i in
                           s.scalars(select(Inspection).where(Inspection.camera_id == cam))]
                     for cam in ("tiled", "whole")}
        boxes = s.execute(select(Defect.x1, Defect.y1, Defect.x2, Defect.y2).join(Inspection)
                          .where(Inspection.camera_id == "tiled")).all()
    assert per_frame["whole"] == [1] * 6
    assert per_frame["tiled"] == [6] * 6
    assert all(0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 120 for x1, y1, x2, y2 in boxes)
    assert len({(round(x1), round(y1)) for x1, y1, _, _ in boxes}) == 6  # one place per window


@pytest.mark.parametrize("command", ["serve", "ingest"])
def test_start_up_problems_are_one_line_before_anything_starts(command: str, tiny_model_path: Path,
                                                               tmp_path: Path, monkeypatch, capsys) -> None:
    """A bad cameras file or a data folder another process journals into: exit 2 with one line naming
    the file and key (or the folder), not a traceback from inside the server."""
    from app.ingest.journal import Journal

    cams = tmp_path / "cameras.yaml"
    cams.write_text("cameras:\n  - id: a\n    source: 0\n    fps_cap: fast\n")
    monkeypatch.setenv("INSPECT_CAMERAS_FILE", str(cams))
    monkeypatch.setenv("INSPECT_MODEL_PATH", str(tiny_model_path))
    monkeypatch.setenv("INSPECT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INSPECT_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    assert cli_main([command, "--port", "8125"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"defect-inspect {command}: error: ") and "\n" not in err
    assert "cameras.yaml:4: cameras[0].fps_cap" in err

    # what only the model can judge, before the server starts too (the tiny model: fixed 64x64 input)
    model_checks = [("    imgsz: 640\n", "cameras[0].imgsz: imgsz 640: this model's input is fixed"),
                    ("    thresholds: {cracks: 0.5}\n", "cameras[0].thresholds: unknown class 'cracks'")]
    for body, expected in model_checks:
        cams.write_text("cameras:\n  - id: a\n    source: 0\n" + body)
        assert cli_main([command, "--port", "8125"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and expected in err, err

    cams.write_text("cameras:\n  - id: a\n    source: 0\n")
    held = Journal(tmp_path / "data" / "journal")  # as if another service ran on this data folder
    try:
        assert cli_main([command, "--port", "8125"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "is in use by another process" in err and "INSPECT_DATA_DIR" in err
    finally:
        held.close()


def test_a_second_demo_service_on_the_same_data_folder_stops_with_one_line(tmp_path, tiny_model_path,
                                                                          monkeypatch, capsys) -> None:
    monkeypatch.delenv("INSPECT_CAMERAS_FILE", raising=False)
    monkeypatch.setenv("INSPECT_MODEL_PATH", str(tiny_model_path))
    monkeypatch.setenv("INSPECT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INSPECT_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    from app.ingest.journal import Journal

    held = Journal(tmp_path / "data" / "journal")  # the first `serve --demo` on this data folder
    try:
        assert cli_main(["serve", "--demo", "--port", "8126"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "is in use by another process" in err, err
        # without cameras too: uploads journal there while the database is away
        assert cli_main(["serve", "--port", "8126"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "is in use by another process" in err, err
    finally:
        held.close()
