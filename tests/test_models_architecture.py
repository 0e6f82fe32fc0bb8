"""The detector's architecture, loss and anchors (torch, CPU, fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.anchors import anchors_per_level, evaluate_anchors, fit_anchors, kmeans_anchors
from models.layers import CBAM, Conv
from models.loss import FocalLoss, YoloLoss, bbox_ciou, make_bce
from models.yolo import DetectionModel, load_config

HYP = {"box": 0.05, "obj": 1.0, "cls": 0.5, "anchor_t": 4.0, "fl_gamma": 0.0}


def test_yolov5s_parameter_count_matches_v7() -> None:
    model = DetectionModel("yolov5s.yaml", nc=80)
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - 7_235_389) / 7_235_389 < 0.01
    assert model.stride.tolist() == [8.0, 16.0, 32.0]


def test_yolov5s_gflops_at_640() -> None:
    info = DetectionModel("yolov5s.yaml", nc=80).info(640)
    assert 16.0 < info["gflops"] < 17.0


def test_cbam_config_adds_attention_on_three_backbone_outputs() -> None:
    plain = DetectionModel("yolov5s.yaml", nc=80)
    cbam = DetectionModel("yolov5s-cbam.yaml", nc=80)
    modules = [m for m in cbam.model if isinstance(m, CBAM)]
    assert [m.i for m in modules] == [5, 8, 12]
    extra = sum(p.numel() for p in cbam.parameters()) - sum(p.numel() for p in plain.parameters())
    # channel MLPs (reduction 16) on 128/256/512 channels plus three 7x7x2 spatial convs
    assert extra == 2 * (128 * 8 + 256 * 16 + 512 * 32) + 3 * 98


def test_cbam_keeps_shape_and_attends() -> None:
    torch.manual_seed(0)
    block = CBAM(32)
    x = torch.randn(2, 32, 10, 12)
    y = block(x)
    assert y.shape == x.shape
    channel = block.channel(x)
    assert channel.shape == (2, 32, 1, 1) and bool(((channel > 0) & (channel < 1)).all())
    spatial = block.spatial(x * channel)
    assert spatial.shape == (2, 1, 10, 12)
    assert torch.allclose(y, x * channel * spatial)


def test_depth_and_width_multiples_scale_the_model() -> None:
    cfg = load_config("yolov5s.yaml")
    cfg["width_multiple"] = 0.25  # YOLOv5n
    nano = DetectionModel(cfg, nc=80)
    assert sum(p.numel() for p in nano.parameters()) < 2_000_000


def test_detect_bias_priors() -> None:
    model = DetectionModel("yolov5s.yaml", nc=6)
    # the priors are added to PyTorch's default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in 128
    bias = model.detect.m[0].bias.view(3, -1).detach()
    assert torch.allclose(bias[:, 4], torch.full((3,), float(np.log(8 / (640 / 8) ** 2))), atol=0.09)
    assert torch.allclose(bias[:, 5:], torch.full((3, 6), float(np.log(0.6 / (6 - 0.99)))), atol=0.09)


def test_inference_output_layout_and_fused_equivalence() -> None:
    torch.manual_seed(0)
    model = DetectionModel("yolov5s-cbam.yaml", nc=6).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so fusing has work to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(2, 3, 128, 96)
    with torch.no_grad():
        out = model(x)
        fused = model.fuse()(x)
    assert out.shape == (2, 3 * (16 * 12 + 8 * 6 + 4 * 3), 11)
    assert not any(isinstance(m.bn, torch.nn.BatchNorm2d) for m in model.modules() if isinstance(m, Conv))
    assert torch.allclose(out, fused, atol=1e-4)
    assert bool(((out[..., 4:] >= 0) & (out[..., 4:] <= 1)).all())


def test_focal_with_gamma_zero_is_plain_bce() -> None:
    torch.manual_seed(0)
    pred, true = torch.randn(64, 6), (torch.rand(64, 6) > 0.7).float()
    bce = torch.nn.BCEWithLogitsLoss()
    focal = FocalLoss(torch.nn.BCEWithLogitsLoss(), gamma=0.0, alpha=None)
    assert torch.allclose(focal(pred, true), bce(pred, true), atol=0, rtol=0)


def test_focal_down_weights_easy_examples() -> None:
    focal = FocalLoss(torch.nn.BCEWithLogitsLoss(reduction="none"), gamma=2.0, alpha=None)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")
    pred, true = torch.tensor([4.0, 0.1]), torch.tensor([1.0, 1.0])  # easy, hard
    ratio = focal(pred, true) / bce(pred, true)
    assert ratio[0] < 0.001 and ratio[1] > 0.2


def test_focal_terms_follow_hyperparameters() -> None:
    device = torch.device("cpu")
    hyp = {"fl_gamma": 1.5, "fl_terms": ["cls"], "fl_alpha": -1}
    assert isinstance(make_bce(hyp, "cls", 1.0, device), FocalLoss)
    assert not isinstance(make_bce(hyp, "obj", 1.0, device), FocalLoss)
    assert make_bce(hyp, "cls", 1.0, device).alpha is None
    assert not isinstance(make_bce({"fl_gamma": 0.0}, "cls", 1.0, device), FocalLoss)


def test_ciou_of_identical_boxes_is_one_and_decreases_with_offset() -> None:
    box = torch.tensor([[10.0, 10.0, 4.0, 6.0]])
    assert torch.allclose(bbox_ciou(box, box), torch.ones(1), atol=1e-6)
    shifted = box + torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    far = box + torch.tensor([[3.0, 0.0, 0.0, 0.0]])
    assert bbox_ciou(box, far) < bbox_ciou(box, shifted) < 1


def test_loss_builds_targets_with_neighbour_cells_and_backpropagates() -> None:
    torch.manual_seed(0)
    model = DetectionModel("yolov5s.yaml", nc=6)
    model.train()
    loss_fn = YoloLoss(model, HYP, imgsz=128)
    preds = model(torch.rand(2, 3, 128, 128))
    targets = torch.tensor([[0, 1, 0.30, 0.40, 0.2, 0.3], [1, 4, 0.62, 0.55, 0.5, 0.1]])
    tcls, tbox, indices, _ = loss_fn.build_targets(preds, targets)
    assert sum(len(c) for c in tcls) >= 2 * 3  # each target lands in its cell and two neighbours
    for (b, a, _gj, _gi), box in zip(indices, tbox, strict=True):
        assert bool((box[:, :2] > -0.5).all() and (box[:, :2] < 1.5).all())
        assert bool((b <= 1).all() and (a < 3).all())
    loss, items = loss_fn(preds, targets)
    assert loss.shape == (1,) and items.shape == (3,) and bool(torch.isfinite(loss).all())
    loss.backward()
    assert model.detect.m[0].weight.grad is not None


def test_loss_with_no_targets_is_objectness_only() -> None:
    model = DetectionModel("yolov5s.yaml", nc=6)
    loss_fn = YoloLoss(model, HYP, imgsz=128)
    _, items = loss_fn(model(torch.rand(1, 3, 128, 128)), torch.zeros(0, 6))
    assert items[0] == 0 and items[2] == 0 and items[1] > 0


# -- anchors ---------------------------------------------------------------------------------------
def _clustered_boxes(centres: np.ndarray, n: int = 150, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([c * rng.uniform(0.92, 1.08, size=(n, 2)) for c in centres])


def test_kmeans_recovers_known_clusters() -> None:
    centres = np.array([[8, 12], [20, 40], [45, 25], [40, 90], [90, 60], [70, 150], [150, 110], [200, 220],
                        [240, 90]], dtype=np.float64)
    report = kmeans_anchors(_clustered_boxes(centres), n=9, generations=300)
    found = report.anchors
    for c in centres:
        nearest = found[np.argmin(np.abs(found - c).sum(1))]
        assert np.all(np.abs(nearest - c) / c < 0.15), (c, nearest)
    assert report.bpr == 1.0
    assert list(np.argsort(found.prod(1))) == list(range(9))  # small to large


def test_bpr_reports_uncovered_boxes_and_fit_improves_it() -> None:
    boxes = _clustered_boxes(np.array([[300.0, 300.0], [280.0, 320.0], [310.0, 260.0]]))
    small = np.array([[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [20, 20], [25, 25],
                      [30, 30]])
    before = evaluate_anchors(boxes, small)
    assert before.bpr == 0.0  # every box is more than 4x any anchor
    old, new, adopted = fit_anchors(boxes, small, force=False, generations=100)
    assert adopted and new.bpr == 1.0 and old.bpr == 0.0


def test_fit_keeps_current_anchors_when_they_already_cover() -> None:
    boxes = _clustered_boxes(np.array([[20.0, 20.0], [60.0, 60.0], [120.0, 120.0]]))
    anchors = np.array([[20, 20], [60, 60], [120, 120]] * 3, dtype=float)
    before, chosen, adopted = fit_anchors(boxes, anchors, force=False)
    assert not adopted and chosen is before and before.bpr == 1.0


def test_anchors_per_level_orders_small_to_large() -> None:
    anchors = np.array([[200, 220], [8, 12], [40, 90], [20, 40], [150, 110], [45, 25], [90, 60], [70, 150],
                        [240, 90]], dtype=float)
    levels = anchors_per_level(anchors)
    assert len(levels) == 3 and all(len(lv) == 6 for lv in levels)
    areas = [np.prod(np.reshape(lv, (3, 2)), 1) for lv in levels]
    assert max(areas[0]) <= min(areas[1]) and max(areas[1]) <= min(areas[2])


@pytest.mark.parametrize("cfg", ["yolov5s.yaml", "yolov5s-cbam.yaml"])
def test_model_takes_fitted_anchors(cfg: str) -> None:
    fitted = [[24.2, 48.3, 29.5, 90.7, 62.9, 53.4], [58.8, 97.0, 39.4, 215.8, 105.2, 91.7],
              [183.1, 77.3, 88.9, 186.3, 202.9, 209.9]]
    model = DetectionModel(cfg, nc=6, anchors=fitted)
    assert np.allclose(model.anchors_pixels(), fitted, atol=0.01)
