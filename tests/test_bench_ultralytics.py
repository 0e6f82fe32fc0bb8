"""`defect-inspect bench ultralytics` without ultralytics: the install hint, the checks made before
ultralytics is needed, the box matching of the sanity check, and that nothing imports ultralytics
eagerly. (The measurement itself needs the optional extra: docs/benchmarks.md has the run.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.bench.ultralytics import INSTALL_HINT
from app.cli import main as cli_main
from app.inference.postprocess import match_detections

# an ultralytics-style export: [4+nc, A] output, metadata as ultralytics writes it (Python reprs)
ULTRA_META = {"author": "Ultralytics", "task": "detect", "imgsz": "[64, 64]", "stride": "32",
              "names": "{0: 'crazing', 1: 'inclusion', 2: 'patches'}"}


def ultra_preds() -> np.ndarray:
    rows = np.zeros((7, 4 + 3), np.float32)  # A=7 anchors > 4+nc channels
    rows[0] = [32, 32, 16, 16, 0.1, 0.9, 0.1]
    return rows.T.copy()


def test_missing_ultralytics_is_a_clear_cli_error(make_detector_model, image_folder, monkeypatch, capsys):
    model = make_detector_model(ultra_preds(), layout="ultralytics", raw_metadata=ULTRA_META)
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import ultralytics -> ImportError
    code = cli_main(["bench", "ultralytics", "--onnx", str(model), "--frames", str(image_folder),
                     "--seconds", "0.1"])
    assert code == 2
    err = capsys.readouterr().err
    assert INSTALL_HINT in err
    assert "pip install '.[ultralytics]'" in err


def test_export_without_ultralytics_names_the_install(tmp_path, image_folder, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    code = cli_main(["bench", "ultralytics", "--export", "yolo11n.yaml", "--onnx", str(tmp_path / "m.onnx"),
                     "--frames", str(image_folder)])
    assert code == 2
    assert INSTALL_HINT in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_yolov5_layout_and_missing_files_are_refused(make_detector_model, image_folder, tmp_path, capsys):
    yolov5 = make_detector_model(np.concatenate([np.array([[32, 32, 16, 16, 0.9, 0.9, 0.1, 0.1]], np.float32),
                                                 np.zeros((13, 8), np.float32)]), layout="yolov5")
    assert cli_main(["bench", "ultralytics", "--onnx", str(yolov5), "--frames", str(image_folder)]) == 2
    err = capsys.readouterr().err
    assert str(yolov5) in err and "layout yolov5" in err and "[N, 4+nc, A]" in err

    missing = tmp_path / "nope.onnx"
    assert cli_main(["bench", "ultralytics", "--onnx", str(missing), "--frames", str(image_folder)]) == 2
    err = capsys.readouterr().err
    assert f"--onnx {missing}: file not found" in err and "--export" in err

    model = make_detector_model(ultra_preds(), layout="ultralytics", raw_metadata=ULTRA_META)
    assert cli_main(["bench", "ultralytics", "--onnx", str(model), "--frames", str(tmp_path / "none")]) == 2
    assert "no such folder or video file" in capsys.readouterr().err


def test_engine_reads_the_ultralytics_export_like_ultralytics(make_detector_model):
    from app.inference import Engine

    engine = Engine(make_detector_model(ultra_preds(), layout="ultralytics", raw_metadata=ULTRA_META))
    assert engine.layout == "ultralytics" and engine.names == ("crazing", "inclusion", "patches")
    [dets] = engine.detect([np.zeros((64, 64, 3), np.uint8)])
    assert dets.class_id.tolist() == [1]
    np.testing.assert_allclose(dets.xyxy, [[24, 24, 40, 40]], atol=1e-3)


def test_match_detections_counts_same_class_high_iou_once():
    ref = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], float)
    ref_cls = np.array([0, 1, 2])
    ours = np.array([[0, 0, 10, 10.2],     # matches ref 0 (IoU 0.98)
                     [20, 20, 30, 30],     # same place as ref 1 but another class
                     [50, 50, 60, 64]])    # ref 2's class, IoU 0.71 < 0.9
    cls = np.array([0, 2, 2])
    assert match_detections(ref, ref_cls, ours, cls) == 1
    assert match_detections(ref, ref_cls, ours, cls, iou=0.7) == 2
    # one of ours cannot match two references
    assert match_detections(np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float), np.array([0, 0]),
                            ours[:1], cls[:1]) == 1
    assert match_detections(ref, ref_cls, np.zeros((0, 4)), np.zeros(0, int)) == 0


def test_bench_command_does_not_import_ultralytics():
    code = ("import argparse, sys; from app.commands import bench; "
            "bench.register(argparse.ArgumentParser().add_subparsers()); "
            "assert 'ultralytics' not in sys.modules and 'torch' not in sys.modules, 'eager import'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_pipeline_part_gets_every_bench_pipeline_option(tiny_model_path, image_folder):
    from app.bench.pipeline import run_pipeline_bench
    from app.bench.ultralytics import UltralyticsBenchOptions, pipeline_part

    args = pipeline_part(UltralyticsBenchOptions(onnx=tiny_model_path, frames=image_folder, seconds=0.2,
                                                 workers=1), seconds=1.0)
    assert args.source == str(image_folder) and args.loop and args.tile_size is None
    out = run_pipeline_bench(args)  # the options the ultralytics comparison passes are all there
    assert out["fps"] > 0 and out["engine_fps"] > 0 and out["decode_threads"] == 1


@pytest.mark.parametrize(("options", "key"), [(["--tile-size", "64", "--tile-overlap", "64"], "tile_overlap"),
                                               (["--tile-size", "0"], "tile_size"),
                                               (["--decode-threads", "-1"], "decode_threads")])
def test_bench_pipeline_refuses_bad_camera_options_naming_the_key(tiny_model_path, image_folder, capsys,
                                                                   options, key):
    assert cli_main(["bench", "pipeline", "--model", str(tiny_model_path), "--source", str(image_folder),
                     "--seconds", "1", *options]) == 2
    err = capsys.readouterr().err
    assert "bench pipeline options" in err and "cameras[0]" in err and key in err, err
