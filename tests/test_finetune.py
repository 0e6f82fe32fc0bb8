"""Fine-tuning onto other data (tiny generated set): the class names decide whether the head is kept,
anchors are fitted to the new boxes on the weights path too, and a pretrained backbone is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import NEU_NAMES, REPO_ROOT, SHIPPED_FP32
from tiny_data import TINY_NAMES, make_tiny_dataset

HYP = yaml.safe_load((REPO_ROOT / "models" / "configs" / "hyp.yaml").read_text())


@pytest.fixture(scope="module")
def shipped() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The shipped FP32 export's tensors and metadata."""
    from models.onnx_weights import read_onnx

    torch.set_num_threads(2)
    return read_onnx(SHIPPED_FP32)


def _start(data: Path, anchors: str, weights: Path = SHIPPED_FP32):
    from models.data.formats import load_data_yaml
    from models.start_model import starting_model

    return starting_model(load_data_yaml(data), HYP, None, str(weights), "yolov5s-cbam.yaml", 96, anchors, 0)


def _head(tensors: dict[str, np.ndarray]) -> list[torch.Tensor]:
    """The output convolutions' weights of the Detect layer (the last layer)."""
    last = max(int(k.split(".")[1]) for k in tensors if k.startswith("model."))
    return [torch.from_numpy(np.array(tensors[f"model.{last}.m.{i}.weight"])) for i in range(3)]


def test_other_class_names_reinitialise_the_head_and_anchors_fit_the_new_boxes(shipped, tmp_path) -> None:
    from models.anchors import sort_anchors

    tensors, meta = shipped
    old_names, old_anchors = json.loads(meta["names"]), json.loads(meta["anchors"])
    assert len(old_names) == len(TINY_NAMES) and old_names != TINY_NAMES  # six and six: names decide
    model, report = _start(make_tiny_dataset(tmp_path), anchors="auto")
    assert model.names == TINY_NAMES and report["head"] == "re-initialised"
    assert torch.equal(model.model[0].conv.weight, torch.tensor(tensors["model.0.conv.weight"]))  # kept
    for new, old in zip(model.detect.m, _head(tensors), strict=True):
        assert new.weight.shape == old.shape and not torch.equal(new.weight, old)
    # the anchor report describes the training data: the shipped anchors scored on the new boxes ...
    assert report["mode"] == "auto" and report["start"] == str(SHIPPED_FP32) and report["boxes"] > 9
    assert report["default"]["anchors"] == np.round(sort_anchors(np.array(old_anchors)), 1).tolist()
    # ... and the fitted ones, adopted because they fit better, which the model now carries
    assert report["adopted"] and report["fitted"]["fitness"] > report["default"]["fitness"]
    fitted = sorted(tuple(a) for a in report["fitted"]["anchors"])
    carried = sorted((level[i], level[i + 1]) for level in model.anchors_pixels() for i in (0, 2, 4))
    np.testing.assert_allclose(np.array(carried), np.array(fitted), atol=0.06)


def test_the_same_class_names_keep_the_head_and_anchors_default_keeps_the_anchors(shipped, tmp_path) -> None:
    tensors, meta = shipped
    model, report = _start(make_tiny_dataset(tmp_path, names=list(NEU_NAMES)), anchors="default")
    assert report["head"] == "kept" and not report["adopted"]
    for new, old in zip(model.detect.m, _head(tensors), strict=True):
        assert torch.equal(new.weight, old)
    np.testing.assert_allclose(model.anchors_pixels(), json.loads(meta["anchors"]), atol=0.006)


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A backbone pretrained for one epoch on eight generated images, and the data.yaml of those."""
    from models.pretrain import PretrainOptions, pretrain

    root = tmp_path_factory.mktemp("pretrain")
    data = make_tiny_dataset(root / "data", train=6, val=2, size=64)
    out = pretrain(PretrainOptions(images=(str(root / "data" / "images"),), out=str(root / "bb.pt"),
                                   imgsz=64, epochs=1, batch=4, workers=0, precision="fp32"))
    return out, data


def test_a_pretrained_backbone_is_loaded_into_a_fresh_model(backbone_file) -> None:
    from models.data.formats import load_data_yaml
    from models.start_model import starting_model

    out, data = backbone_file
    saved = torch.load(out, map_location="cpu", weights_only=False)
    assert saved["kind"] == "defect-inspect-backbone" and saved["layers"] == 13 and saved["images"] == 8
    assert len(saved["loss"]) == 1 and saved["loss"][0] > 0
    spec = load_data_yaml(data)
    model, report = starting_model(spec, HYP, None, None, "yolov5s-cbam.yaml", 64, "default", 0,
                                   backbone=str(out))
    state = model.state_dict()
    for key, value in saved["backbone_state"].items():
        assert torch.equal(state[key], value.to(state[key].dtype)), key
    assert report["backbone"] == str(out)
    fresh, _ = starting_model(spec, HYP, None, None, "yolov5s-cbam.yaml", 64, "default", 0)
    assert not torch.equal(fresh.model[0].conv.weight, model.model[0].conv.weight)


def test_a_backbone_of_another_architecture_is_refused(backbone_file, tmp_path: Path) -> None:
    from app.errors import UserError
    from models.pretrain import load_backbone
    from models.yolo import DetectionModel

    with pytest.raises(UserError, match="does not fit"):
        load_backbone(DetectionModel("yolov5s.yaml", nc=2), backbone_file[0])  # no CBAM: other layers
    junk = tmp_path / "junk.pt"
    torch.save({"a": 1}, junk)
    with pytest.raises(UserError, match="junk.pt"):
        load_backbone(DetectionModel("yolov5s-cbam.yaml", nc=2), junk)


def test_pretraining_images_come_from_folders_and_image_lists(tmp_path: Path) -> None:
    from app.errors import UserError
    from models.pretrain import unlabeled_images

    make_tiny_dataset(tmp_path, train=5, val=3, size=32)
    assert len(unlabeled_images([str(tmp_path / "images")])) == 8
    assert [p.name for p in unlabeled_images([str(tmp_path / "train.txt")])] == [
        f"plate_{i}.jpg" for i in range(5)]  # the training images only
    assert len(unlabeled_images([str(tmp_path / "images")], max_images=3, seed=1)) == 3
    with pytest.raises(UserError, match="nowhere"):
        unlabeled_images([str(tmp_path / "nowhere")])


def test_pretraining_in_bfloat16_keeps_float32_weights_and_the_same_loss(tmp_path: Path) -> None:
    from models.pretrain import PretrainOptions, pretrain

    make_tiny_dataset(tmp_path / "data", train=6, val=2, size=64)
    runs = {}
    for precision in ("fp32", "bf16"):
        out = pretrain(PretrainOptions(images=(str(tmp_path / "data" / "images"),), imgsz=64, epochs=1,
                                       batch=8, workers=0, out=str(tmp_path / f"{precision}.pt"),
                                       precision=precision))
        runs[precision] = torch.load(out, map_location="cpu", weights_only=False)
    bf16 = runs["bf16"]
    assert {v.dtype for v in bf16["backbone_state"].values() if v.is_floating_point()} == {torch.float32}
    assert bf16["options"]["precision"] == "bf16"
    # one step of all eight images: the same seed, views and starting weights, so the loss (taken before
    # the step) differs only by bfloat16's rounding of the forward pass
    first = runs["fp32"]["loss"][0]
    # (equal would mean the forward pass did not run in bfloat16)
    assert 0 < abs(bf16["loss"][0] - first) < 0.02 * first, (bf16["loss"], runs["fp32"]["loss"])


def test_pretraining_refuses_float16_on_a_cpu_before_writing_anything(tmp_path: Path) -> None:
    from app.errors import ConfigError
    from models.pretrain import PretrainOptions, pretrain

    make_tiny_dataset(tmp_path / "data", train=4, val=0, size=32)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        pretrain(PretrainOptions(images=(str(tmp_path / "data" / "images"),), imgsz=32, epochs=1, batch=2,
                                 workers=0, out=str(tmp_path / "bb.pt"), precision="fp16"))
    assert not (tmp_path / "bb.pt").exists()
