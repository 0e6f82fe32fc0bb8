"""The model a training run starts from: the resumed run's, a fine-tune of an earlier checkpoint or ONNX
export (a new class list re-initialises only the head), or a fresh one from a config with anchors
chosen for the training labels."""

from __future__ import annotations

import logging
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


def starting_model(spec: DataSpec, hyp: dict[str, Any], resumed: dict[str, Any] | None, weights: str | None,
                   cfg: str, imgsz: int, anchors: str, seed: int) -> tuple[DetectionModel, dict[str, Any]]:
    """The model (named after the data's classes) and the anchor report that goes with it."""
    if resumed is not None:
        model = build_from_checkpoint(resumed)
        model.load_state_dict(resumed["model_state"])
        anchor_report = resumed.get("anchor_report", {})
    elif weights and Path(weights).suffix.lower() == ".onnx":
        model, anchor_report = _from_onnx(weights, spec, imgsz)
    elif weights:
        model, anchor_report = _from_checkpoint(weights, spec)
    else:
        model_cfg = load_config(cfg)
        chosen, anchor_report = choose_anchors(model_cfg, spec.train, spec.nc, imgsz, hyp, anchors, seed)
        model = DetectionModel(model_cfg, nc=spec.nc, anchors=chosen)
    model.names = list(spec.names)
    return model, anchor_report


def _from_onnx(path: str, spec: DataSpec, imgsz: int) -> tuple[DetectionModel, dict[str, Any]]:
    from models.onnx_weights import load_onnx_for_training

    model, init = load_onnx_for_training(path, spec.train, imgsz)
    if len(init["names"]) != spec.nc:
        model = transfer(model, DetectionModel(init["model_cfg"], nc=spec.nc, anchors=init["anchors"]), path)
    return model, init["anchor_report"]


def _from_checkpoint(path: str, spec: DataSpec) -> tuple[DetectionModel, dict[str, Any]]:
    init = load_checkpoint(path)
    model = DetectionModel(init["model_cfg"], nc=spec.nc, anchors=init["anchors"])
    load_compatible(model, init.get("ema_state") or init["model_state"], path)
    return model, init.get("anchor_report", {})


def choose_anchors(
    model_cfg: dict, train_paths: list[Path], nc: int, imgsz: int, hyp: dict, mode: str, seed: int
) -> tuple[list[list[float]], dict[str, Any]]:
    current = np.array(model_cfg["anchors"], dtype=np.float64).reshape(-1, 2)
    wh = all_boxes_wh(train_paths, imgsz, nc)
    if mode == "default":
        before = evaluate_anchors(wh, current, hyp["anchor_t"])
        return model_cfg["anchors"], {"mode": mode, "default": before.as_dict(), "adopted": False}
    before, chosen, adopted = fit_anchors(wh, current, hyp["anchor_t"], force=(mode == "fit"), seed=seed)
    report: dict[str, Any] = {"mode": mode, "default": before.as_dict(), "adopted": adopted}
    if adopted:
        report["fitted"] = chosen.as_dict()
    anchors = anchors_per_level(chosen.anchors) if adopted else model_cfg["anchors"]
    _log_anchors(before, chosen if adopted else None)
    return anchors, report


def _log_anchors(before: AnchorReport, after: AnchorReport | None) -> None:
    log.info("anchors: default BPR %.4f, %.2f anchors above threshold", before.bpr, before.anchors_above)
    if after is not None:
        log.info(
            "anchors: fitted BPR %.4f, %.2f anchors above threshold: %s",
            after.bpr,
            after.anchors_above,
            np.round(after.anchors, 1).tolist(),
        )


def load_compatible(model: nn.Module, source: dict[str, torch.Tensor], origin: str) -> None:
    """Copy every tensor whose name and shape match (a new class count re-initialises the head)."""
    own = model.state_dict()
    compatible = {k: v.float() for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(compatible, strict=False)
    log.info("fine-tuning from %s: %d/%d tensors transferred", origin, len(compatible), len(own))


def transfer(source: nn.Module, target: DetectionModel, origin: str) -> DetectionModel:
    """``target`` with every tensor of ``source`` that fits it."""
    load_compatible(target, source.state_dict(), origin)
    return target
