"""Operating points: the per-class threshold of best F1 (or of a precision target) chosen from matched
boxes, stored in the model's metadata and read back by the engine, shown by GET /api/v1/model, and
applied as each class's default threshold: a camera's `thresholds` over the model's points over the
global threshold, through the real pipeline (cameras file -> Engine -> rows) and the upload route."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import NEU_NAMES, SHIPPED_FP32, SHIPPED_INT8, build_detector_onnx, standard_metadata
from sqlalchemy import select

from app.db.models import Defect, Inspection
from app.db.session import Database
from app.detections import Detections
from app.inference import Engine
from app.ingest.config import parse_cameras
from app.ingest.pipeline import Pipeline
from models.export import set_metadata
from models.operating_points import (
    carried_record,
    choose_point,
    class_boxes,
    measured_at,
    metadata_props,
    operating_points,
    point_at,
)

NAMES = ("dent", "scratch")


def box(x: float, y: float, size: float = 10.0) -> list[float]:
    return [x, y, x + size, y + size]


def image(gt: list[tuple[list[float], int]], dets: list[tuple[list[float], float, int]]):
    """One image's (boxes as the service finds them, true xyxy, true classes)."""
    found = Detections(np.array([d[0] for d in dets], np.float32).reshape(-1, 4),
                       np.array([d[1] for d in dets], np.float32), np.array([d[2] for d in dets]), NAMES)
    return (found, np.array([g[0] for g in gt], np.float32).reshape(-1, 4), np.array([g[1] for g in gt]))


# two images, three true 'dent' boxes; 'dent' boxes best first: 0.9 true, 0.8 false, 0.7 true,
# 0.6 false, 0.5 true, 0.4 false. F1 at each cut: 0.50, 0.40, 0.67, 0.57, 0.75, 0.67: best at 0.5
SCORED = [
    image([(box(0, 0), 0), (box(50, 50), 0)],
          [(box(0, 0), 0.9, 0), (box(100, 0), 0.8, 0), (box(50, 50), 0.7, 0),
           (box(1, 1), 0.6, 0),  # a second box on a matched defect: false
           (box(0, 0), 0.95, 1)]),  # a 'scratch' box on the dent: it never takes the dent's truth
    image([(box(20, 20), 0)],
          [(box(20, 20), 0.5, 0), (box(120, 120), 0.4, 0)]),
]


def test_best_f1_point_and_a_precision_target_on_a_constructed_case():
    dent, scratch = class_boxes(SCORED, len(NAMES))
    assert dent.instances == 3 and dent.true.tolist() == [True, False, True, False, True, False]
    assert scratch.instances == 0 and scratch.true.tolist() == [False]
    point = choose_point(dent)
    assert point.threshold == pytest.approx(0.45)  # keeps 0.5, drops 0.4
    assert (point.precision, point.recall, point.f1) == pytest.approx((0.6, 1.0, 0.75))
    assert (point.true_positives, point.false_positives) == (3, 2)
    target = choose_point(dent, min_precision=0.65)  # 0.67 at 0.7 is the lowest threshold reaching it
    assert target.threshold == pytest.approx(0.65) and target.recall == pytest.approx(2 / 3)
    unreachable = choose_point(dent, min_precision=1.01)  # nothing reaches it: best F1
    assert unreachable.threshold == pytest.approx(0.45)
    assert choose_point(scratch) is None  # no true box: the class keeps the global threshold
    record, _ = operating_points(SCORED, NAMES, split="val")
    assert set(record["classes"]) == {"dent"} and record["images"] == 2
    assert record["classes"]["dent"]["threshold"] == 0.45


def test_a_threshold_never_splits_equal_confidences():
    # 0.8 true, then 0.6 false and 0.6 true: a cut between the two 0.6 boxes is not a threshold
    scored = [image([(box(0, 0), 0), (box(50, 50), 0)],
                    [(box(0, 0), 0.8, 0), (box(100, 0), 0.6, 0), (box(50, 50), 0.6, 0)])]
    point = choose_point(class_boxes(scored, 2)[0], floor=0.001)
    assert point.threshold == pytest.approx(0.3005)  # all three: F1 0.8 beats 0.67 at 0.8 alone
    assert (point.precision, point.recall) == pytest.approx((2 / 3, 1.0))


def test_a_carried_threshold_is_measured_on_the_other_models_boxes():
    dent, _ = class_boxes(SCORED, len(NAMES))
    at = point_at(dent, 0.65)  # keeps 0.9 (true), 0.8 (false), 0.7 (true)
    assert (at.true_positives, at.false_positives) == (2, 1)
    assert (at.precision, at.recall) == pytest.approx((2 / 3, 2 / 3))
    assert point_at(dent, 0.5).true_positives == 3  # a box at the threshold is kept, as a camera keeps it
    assert point_at(dent, 0.99).precision == 0.0 and point_at(dent, 0.99).recall == 0.0
    source = {**points_record({"dent": 0.65, "rust": 0.3}), "min_precision": 0.6}
    stored = carried_record(source, "train-only-1", NAMES)
    assert set(stored["classes"]) == {"dent"} and stored["carried_from"] == "train-only-1"
    assert stored["classes"]["dent"] == source["classes"]["dent"]  # the figures of where it was chosen
    assert carried_record(stored, "all-data-1", NAMES)["carried_from"] == "train-only-1"  # the chooser
    measured = measured_at(class_boxes(SCORED, len(NAMES)), NAMES, stored, "val", len(SCORED))
    assert measured["carried_from"] == "train-only-1" and set(measured["classes"]) == {"dent"}
    assert measured["classes"]["dent"]["precision"] == pytest.approx(0.6667, abs=1e-4)


def test_cli_carries_the_points_of_the_model_that_chose_them(tmp_path, capsys):
    from app.cli import main

    for folder in ("chooser", "fitted", "bare"):
        (tmp_path / folder).mkdir()
    chooser = fixed_boxes_model(tmp_path / "chooser", MODEL_POINTS)  # version tiny-test-1
    fitted = fixed_boxes_model(tmp_path / "fitted", None)
    # one 64x64 image: true crazing and inclusion where the models put their boxes, none under patches
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    cv2.imwrite(str(root / "images" / "a.png"), np.full((64, 64, 3), 128, np.uint8))
    (root / "labels" / "a.txt").write_text("0 0.1875 0.5 0.125 0.125\n1 0.5 0.5 0.125 0.125\n")
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images\nval: images\nnames: {list(NEU_NAMES)}\n")
    args = ["evaluate", "--model", str(fitted), "--data", str(root / "data.yaml"), "--json"]
    assert main([*args, "--operating-points-from", str(chooser), "--write"]) == 0
    measured = json.loads(capsys.readouterr().out)["operating_points"]
    assert measured["method"] == "carried" and measured["carried_from"] == "tiny-test-1"
    # crazing (0.2) passes its 0.15, inclusion (0.35) misses its 0.4; patches has no true box here
    assert {n: (p["true_positives"], p["recall"]) for n, p in measured["classes"].items()} == {
        "crazing": (1, 1.0), "inclusion": (0, 0.0)}
    engine = Engine(fitted, warmup=False)
    assert engine.metadata.class_thresholds == MODEL_POINTS  # all three stored, as chosen
    assert engine.info()["operating_points"]["carried_from"] == "tiny-test-1"
    # what cannot be carried is said, naming the file
    assert main([*args, "--operating-points-from", str(fitted.with_name("none.onnx"))]) == 2
    assert "none.onnx: --operating-points-from takes an ONNX model file" in capsys.readouterr().err
    bare = fixed_boxes_model(tmp_path / "bare", None)
    assert main([*args, "--operating-points-from", str(bare)]) == 2
    assert "no operating points to carry" in capsys.readouterr().err
    assert main([*args, "--operating-points-from", str(chooser), "--operating-points"]) == 2
    assert "give one of them" in capsys.readouterr().err


def points_record(thresholds: dict[str, float]) -> dict:
    return {"method": "best_f1", "split": "val", "images": 10, "match_iou": 0.5,
            "classes": {n: {"threshold": t, "precision": 0.9, "recall": 0.8, "f1": 0.85, "instances": 5}
                        for n, t in thresholds.items()}}


def test_operating_points_round_trip_through_the_model_metadata(make_detector_model):
    preds = np.zeros((1, 5 + len(NEU_NAMES)), np.float32)
    path = make_detector_model(preds, metadata=standard_metadata())
    assert Engine(path, warmup=False).metadata.operating_points is None
    record = points_record({"crazing": 0.1234, "scratches": 0.7})
    set_metadata(path, metadata_props(record))
    engine = Engine(path, warmup=False)
    assert engine.metadata.class_thresholds == {"crazing": 0.1234, "scratches": 0.7}
    assert engine.info()["operating_points"] == record
    # a class the model does not have, and a threshold out of range, are left out with a warning
    set_metadata(path, metadata_props(points_record({"crazing": 0.2, "rust": 0.5, "patches": 1.5})))
    engine = Engine(path, warmup=False)
    assert engine.metadata.class_thresholds == {"crazing": 0.2}
    assert any("rust" in w for w in engine.metadata.warnings)
    assert any("patches" in w for w in engine.metadata.warnings)


@pytest.mark.parametrize("path", [SHIPPED_FP32, SHIPPED_INT8], ids=lambda p: p.name)
def test_the_shipped_models_carry_an_operating_point_per_class(path):
    engine = Engine(path, warmup=False)
    points = engine.metadata.operating_points
    assert points["method"] == "min_precision" and points["min_precision"] == 0.90
    assert points["split"] == "val"
    # v10 trained on val.txt too: its points are the train-only v9's, chosen on images v9 never saw
    assert engine.metadata.version == "neu-det-yolov5s-256-v10"
    assert points["carried_from"] == "neu-det-yolov5s-256-v9"
    assert set(engine.metadata.class_thresholds) == set(NEU_NAMES)
    assert all(0.05 < t < 0.95 for t in engine.metadata.class_thresholds.values())


# one box per class: crazing 0.2, inclusion 0.35, patches 0.5 (objectness 1, class score = confidence)
CONFIDENCES = {"crazing": 0.2, "inclusion": 0.35, "patches": 0.5}
MODEL_POINTS = {"crazing": 0.15, "inclusion": 0.4, "patches": 0.6}


def fixed_boxes_model(tmp_path: Path, points: dict[str, float] | None) -> Path:
    preds = np.zeros((len(CONFIDENCES), 5 + len(NEU_NAMES)), np.float32)
    for row, (name, conf) in enumerate(CONFIDENCES.items()):
        preds[row, :5] = [12 + 20 * row, 32, 8, 8, 1.0]
        preds[row, 5 + NEU_NAMES.index(name)] = conf
    meta = standard_metadata()
    if points is not None:
        meta["operating_points"] = points_record(points)
    return build_detector_onnx(tmp_path / f"fixed-{points is not None}.onnx", preds, metadata=meta)


def kept_classes(db: Database) -> dict[str, set[str]]:
    with db.session() as s:
        rows = s.execute(select(Inspection.camera_id, Defect.class_name)
                         .join(Defect, Defect.inspection_id == Inspection.id)).all()
        cameras = s.scalars(select(Inspection.camera_id)).all()
    out: dict[str, set[str]] = {c: set() for c in cameras}
    for camera, name in rows:
        out[camera].add(name)
    return out


@pytest.mark.parametrize("with_points", [True, False])
def test_camera_thresholds_over_model_points_over_the_global_threshold(database_url, tmp_path, image_folder,
                                                                       with_points):
    cfg = parse_cameras(f"""
pipeline: {{workers: 1, conf_threshold: 0.3}}
cameras:
  - {{id: plain, source: "folder:{image_folder}"}}
  - {{id: own-patches, source: "folder:{image_folder}", thresholds: {{patches: 0.45}}}}
  - {{id: own-default, source: "folder:{image_folder}", thresholds: {{default: 0.3, crazing: 0.1}}}}
""")
    engine = Engine(fixed_boxes_model(tmp_path, MODEL_POINTS if with_points else None), intra_op_threads=1)
    db = Database(database_url)
    with Pipeline(cfg, engine, db, tmp_path / "data") as pipeline:
        assert pipeline.wait_finished(60)
    kept = kept_classes(db)
    db.dispose()
    if with_points:
        assert kept == {
            "plain": {"crazing"},  # 0.2 >= its point 0.15 (below the global 0.3); the others below theirs
            "own-patches": {"crazing", "patches"},  # the camera's 0.45 for patches over the model's 0.6
            "own-default": {"crazing", "inclusion", "patches"},  # the camera's default over every point
        }
    else:
        assert kept == {
            "plain": {"inclusion", "patches"},  # the global 0.3
            "own-patches": {"inclusion", "patches"},
            "own-default": {"crazing", "inclusion", "patches"},
        }


def test_uploads_take_the_model_points_over_the_global_threshold(app_settings, tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app

    ok, jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    for points, expected in ((MODEL_POINTS, {"crazing"}), (None, {"inclusion", "patches"})):
        settings = app_settings.model_copy(update={"model_path": fixed_boxes_model(tmp_path, points)})
        with TestClient(create_app(settings)) as client:  # INSPECT_CONF_THRESHOLD: 0.25
            resp = client.post("/api/v1/inspections", files={"file": ("f.jpg", jpeg.tobytes(), "image/jpeg")})
            assert resp.status_code == 201, resp.text
            assert {d["class_name"] for d in resp.json()["detections"]} == expected
            shown = client.get("/api/v1/model").json()["operating_points"]
        assert (shown and {n: p["threshold"] for n, p in shown["classes"].items()}) == (points or None)
