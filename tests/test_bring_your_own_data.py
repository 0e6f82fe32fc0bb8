"""A plant's own data, end to end on a tiny generated set with other classes and other box shapes than
NEU-DET: dataset check -> anchors -> train 1 epoch from the shipped FP32 ONNX -> evaluate -> export INT8
-> serve -> post a frame -> GET /model shows the new class names and the anchors `anchors` fits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHIPPED_FP32
from tiny_data import TINY_NAMES, make_tiny_dataset

from app.cli import main as cli_main


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> str:
    capsys.readouterr()
    assert cli_main(list(argv)) == 0, argv
    return capsys.readouterr().out


def test_bring_your_own_data(tmp_path: Path, capsys, caplog) -> None:
    torch.set_num_threads(2)
    caplog.set_level(logging.INFO, logger="models.train")
    data = str(make_tiny_dataset(tmp_path / "plates", train=8, val=4, size=96))

    assert "error" not in _cli(capsys, "dataset", "check", "--data", data).lower()
    fitted = json.loads(_cli(capsys, "anchors", "--data", data, "--imgsz", "64", "--json"))
    assert fitted["would_adopt"] and fitted["boxes"] > 9

    out = _cli(capsys, "train", "--data", data, "--weights", str(SHIPPED_FP32), "--imgsz", "64",
               "--epochs", "1", "--batch", "4", "--workers", "0", "--anchors", "fit", "--no-plots",
               "--project", str(tmp_path / "runs"), "--name", "plates")
    run = Path(out.strip().splitlines()[-1].split(": ", 1)[1])
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("start-up: importing") and m.endswith(" s") for m in messages)  # named, timed
    assert any(m.startswith("epoch 1/1 ") for m in messages) and not any("\r" in m for m in messages)
    # the run folder and the checkpoint describe the data trained on
    report = json.loads((run / "anchors.json").read_text())
    assert report["adopted"] and report["head"] == "re-initialised" and report["start"] == str(SHIPPED_FP32)
    assert report["fitted"]["anchors"] == fitted["fitted"]["anchors"]
    ckpt = torch.load(run / "weights" / "best.pt", map_location="cpu", weights_only=False)
    assert ckpt["names"] == TINY_NAMES and ckpt["anchors"] == fitted["fitted_per_level"]

    scores = json.loads(_cli(capsys, "evaluate", "--model", str(run / "weights" / "best.pt"), "--data", data,
                             "--json"))
    assert scores["images"] == 4 and set(scores["per_class"]) <= set(TINY_NAMES)

    _cli(capsys, "export", "--weights", str(run / "weights" / "best.pt"), "--int8", "--calib", data,
         "--calib-images", "8")
    int8 = run / "weights" / "best-int8.onnx"
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
    assert json.loads(meta["names"]) == TINY_NAMES
    assert json.loads(meta["anchor_report"])["fitted"] == report["fitted"]

    from fastapi.testclient import TestClient

    from app.db.migrate import upgrade
    from app.main import create_app
    from app.settings import Settings

    database_url = f"sqlite:///{tmp_path / 'defects.db'}"  # the database plays no part here: SQLite only
    upgrade(database_url)
    settings = Settings(database_url=database_url, model_path=int8, data_dir=tmp_path / "data",
                        image_policy="ng", auth_enabled=False, providers=["cpu"], intra_op_threads=1)
    frame = (tmp_path / "plates" / "images" / "plate_9.jpg").read_bytes()
    with TestClient(create_app(settings)) as client:
        posted = client.post("/api/v1/inspections", files={"file": ("f.jpg", frame, "image/jpeg")})
        assert posted.status_code == 201, posted.text
        assert all(d["class_name"] in TINY_NAMES for d in posted.json()["defects"])
        model = client.get("/api/v1/model").json()
    assert model["names"] == TINY_NAMES and model["quantization"].startswith("int8")
    np.testing.assert_allclose(model["anchors"], fitted["fitted_per_level"], atol=0.006)
