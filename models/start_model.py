"""The model a training run starts from: the resumed run's, a fine-tune of an earlier checkpoint or FP32
ONNX export, or a fresh one from a config (``--backbone`` adds pretrained backbone weights to a fresh
one).

A fine-tune keeps every tensor that fits. The class names decide about the head: when the data's names
differ from the weights' (other names, another order or another count), the head's output convolutions
are re-initialised. Anchors are chosen for the training labels on every path but a resume: ``auto`` fits
new ones when the starting anchors' best possible recall is below 0.98, ``fit`` always tries, and the
anchor report describes the training data whichever way it went."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.anchors import AnchorReport, anchors_per_level, evaluate_anchors, fit_anchors
from models.checkpoint import build_from_checkpoint, load_checkpoint
from models.data.formats import DataSpec
from models.data.labels import all_boxes_wh
from models.yolo import DetectionModel, load_config

log = logging.getLogger("models.train")  # part of the training log


@dataclass
class StartingWeights:
    """The weights a fine-tune starts from, and what they were trained for."""

    origin: str  # the file
    state: dict[str, torch.Tensor]
    names: list[str]
    anchors: list[list[float]]  # pixels, one flat list per level
    model_cfg: dict[str, Any]


def starting_model(spec: DataSpec, hyp: dict[str, Any], resumed: dict[str, Any] | None, weights: str | None,
                   cfg: str, imgsz: int, anchors: str, seed: int, backbone: str | None = None
                   ) -> tuple[DetectionModel, dict[str, Any]]:
    """The model (named after the data's classes) and the anchor report that goes with it."""
    if resumed is not None:
        model = build_from_checkpoint(resumed)
        model.load_state_dict(resumed["model_state"])
        return model, resumed.get("anchor_report", {})
    if weights:
        start = read_starting_weights(weights, spec, imgsz)
        chosen, anchor_report = choose_anchors(start.anchors, spec.train, spec.nc, imgsz, hyp, anchors, seed)
        anchor_report["start"] = start.origin
        model = DetectionModel(start.model_cfg, nc=spec.nc, anchors=chosen)
        keep_head = list(start.names) == list(spec.names)
        load_compatible(model, start.state, start.origin, keep_head=keep_head)
        if not keep_head:
            log.info("fine-tuning: the data's classes %s differ from the weights' %s: head re-initialised",
                     list(spec.names), start.names)
        anchor_report["head"] = "kept" if keep_head else "re-initialised"
    else:
        model_cfg = load_config(cfg)
        chosen, anchor_report = choose_anchors(model_cfg["anchors"], spec.train, spec.nc, imgsz, hyp,
                                               anchors, seed)
        model = DetectionModel(model_cfg, nc=spec.nc, anchors=chosen)
    if backbone:
        from models.pretrain import load_backbone

        load_backbone(model, backbone)
        anchor_report["backbone"] = str(backbone)
    model.names = list(spec.names)
    return model, anchor_report


def read_starting_weights(path: str, spec: DataSpec, imgsz: int) -> StartingWeights:
    """A training checkpoint (its EMA weights when it has them) or an FP32 ONNX export of this project
    (its BatchNorm layers rebuilt from up to 256 of the training images)."""
    if Path(path).suffix.lower() == ".onnx":
        from models.onnx_weights import load_onnx_for_training

        model, info = load_onnx_for_training(path, spec.train, imgsz)
        return StartingWeights(path, model.state_dict(), list(info["names"]), info["anchors"],
                               info["model_cfg"])
    ckpt = load_checkpoint(path)
    state = ckpt.get("ema_state") or ckpt["model_state"]
    return StartingWeights(path, state, list(ckpt["names"]), ckpt["anchors"], ckpt["model_cfg"])


def choose_anchors(
    current: list[list[float]], train_paths: list[Path], nc: int, imgsz: int, hyp: dict, mode: str, seed: int
) -> tuple[list[list[float]], dict[str, Any]]:
    """The anchors to train with (``current``: the config's or the starting weights') and a report of
    both on the training labels: ``default`` (the current ones), ``fitted`` (when fitted ones were
    adopted), ``mode``, ``adopted`` and ``boxes``."""
    current_wh = np.array(current, dtype=np.float64).reshape(-1, 2)
    wh = all_boxes_wh(train_paths, imgsz, nc)
    if mode == "default":
        before = evaluate_anchors(wh, current_wh, hyp["anchor_t"])
        return current, {"mode": mode, "boxes": int(len(wh)), "default": before.as_dict(), "adopted": False}
    before, chosen, adopted = fit_anchors(wh, current_wh, hyp["anchor_t"], force=(mode == "fit"), seed=seed)
    report: dict[str, Any] = {"mode": mode, "boxes": int(len(wh)), "default": before.as_dict(),
                              "adopted": adopted}
    if adopted:
        report["fitted"] = chosen.as_dict()
    _log_anchors(before, chosen if adopted else None)
    return (anchors_per_level(chosen.anchors) if adopted else current), report


def _log_anchors(before: AnchorReport, after: AnchorReport | None) -> None:
    log.info("anchors: starting anchors BPR %.4f, %.2f anchors above threshold", before.bpr,
             before.anchors_above)
    if after is not None:
        log.info(
            "anchors: fitted BPR %.4f, %.2f anchors above threshold: %s",
            after.bpr,
            after.anchors_above,
            np.round(after.anchors, 1).tolist(),
        )


def load_compatible(model: DetectionModel, source: dict[str, torch.Tensor], origin: str,
                    keep_head: bool = True) -> None:
    """Copy every tensor whose name and shape match, except the anchors (the model's own are chosen
    for the data) and, unless ``keep_head``, the head's output convolutions."""
    own = model.state_dict()
    detect = f"model.{len(model.model) - 1}."
    skipped = {detect + "anchors", detect + "stride"}
    compatible = {
        k: v.float() for k, v in source.items()
        if k in own and own[k].shape == v.shape and k not in skipped
        and (keep_head or not k.startswith(detect + "m."))
    }
    model.load_state_dict(compatible, strict=False)
    log.info("fine-tuning from %s: %d/%d tensors transferred", origin, len(compatible), len(own))


def transfer(source: nn.Module, target: DetectionModel, origin: str) -> DetectionModel:
    """``target`` with every tensor of ``source`` that fits it."""
    load_compatible(target, source.state_dict(), origin)
    return target
