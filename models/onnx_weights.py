"""Start training from an exported FP32 ONNX model (fine-tune the shipped detector on new data).

The repository keeps only ONNX files, so a plant that collects its own defect images fine-tunes from
``models/weights/<model>.onnx``. Export folds every BatchNorm into its convolution (``y = W'x + b'``),
so the BatchNorm layers are rebuilt here: each one gets the per-channel mean and variance of ``W'x``
measured on calibration images, ``gamma = sqrt(var + eps)`` and ``beta = mean + b'``. In eval mode
that is exactly the exported function; in train mode, where BatchNorm normalises with batch
statistics, it starts close to it instead of collapsing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from app.errors import InvalidInput
from models.export import letterboxed_images
from models.layers import Conv
from models.yolo import DetectionModel, load_config

log = logging.getLogger("models.onnx_weights")


def _fail(message: str) -> NoReturn:
    raise InvalidInput(message)


def read_onnx(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Initializers by name and the metadata of an ONNX model file."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        _fail(f"{path}: model not found")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any parse error is a bad file
        _fail(f"{path}: not a readable ONNX model ({exc})")
    tensors = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    meta = {p.key: p.value for p in proto.metadata_props}
    if any(n.op_type in {"QuantizeLinear", "DequantizeLinear"} for n in proto.graph.node):
        _fail(f"{path}: quantized (INT8) model; fine-tune from the FP32 export instead")
    return tensors, meta


def _model_config(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    if meta.get("layout", "yolov5") != "yolov5" or "anchors" not in meta:
        _fail(f"{path}: not a defect-inspect YOLOv5 export (no anchors/layout metadata)")
    if meta.get("model_yaml"):
        return json.loads(meta["model_yaml"])
    arch = meta.get("architecture", "")
    try:
        return load_config(arch)
    except FileNotFoundError:
        _fail(f"{path}: architecture {arch!r} is neither in the metadata nor in models/configs")


def model_from_onnx(path: str | Path) -> tuple[DetectionModel, dict[str, Any]]:
    """The torch model of an FP32 export with BatchNorm as identity (call :func:`rebuild_batchnorm`).

    Returns the model and a dict with ``names``, ``anchors``, ``anchor_report``, ``model_cfg`` and
    ``imgsz`` from the file's metadata."""
    path = Path(path)
    tensors, meta = read_onnx(path)
    cfg = _model_config(path, meta)
    names = json.loads(meta.get("names", "[]"))
    anchors = json.loads(meta["anchors"])
    model = DetectionModel(cfg, nc=len(names), anchors=anchors)
    state = model.state_dict()
    loaded: set[str] = set()

    def take(onnx_name: str, torch_name: str) -> torch.Tensor:
        if onnx_name not in tensors:
            _fail(f"{path}: tensor {onnx_name} missing; the file does not match its architecture")
        value = torch.from_numpy(np.array(tensors[onnx_name], dtype=np.float32))
        if tuple(value.shape) != tuple(state[torch_name].shape):
            _fail(f"{path}: tensor {onnx_name} has shape {tuple(value.shape)}, "
                  f"expected {tuple(state[torch_name].shape)}")
        loaded.add(torch_name)
        return value

    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, Conv) or not isinstance(module.bn, nn.BatchNorm2d):
                continue
            module.conv.weight.copy_(take(f"{name}.conv.weight", f"{name}.conv.weight"))
            bias = take(f"{name}.conv.bias", f"{name}.bn.bias")
            bn = module.bn
            bn.weight.fill_(1.0)
            bn.bias.copy_(bias)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # eval-mode BN is then exactly "+ bias"
            loaded.update({f"{name}.bn.weight", f"{name}.bn.running_mean", f"{name}.bn.running_var",
                           f"{name}.bn.num_batches_tracked"})
        params = dict(model.named_parameters())
        for key in state:
            if key in loaded or key not in params:
                continue
            params[key].copy_(take(key, key))
    missing = [k for k in state if k not in loaded and k in params]
    if missing:
        _fail(f"{path}: no weights for {', '.join(missing[:5])}")
    info = {
        "names": names,
        "anchors": anchors,
        "anchor_report": json.loads(meta.get("anchor_report", "{}") or "{}"),
        "model_cfg": model.yaml,
        "imgsz": json.loads(meta.get("imgsz", "[0, 0]"))[0],
        "version": meta.get("version", ""),
    }
    return model, info


@torch.no_grad()
def rebuild_batchnorm(model: DetectionModel, batches: Iterable[torch.Tensor]) -> int:
    """Give every folded BatchNorm the statistics of its convolution's output on ``batches``.

    Must run on a model fresh from :func:`model_from_onnx` (BN = identity + bias). Returns the number
    of images seen. The eval-mode function of the model does not change."""
    convs = {name: m for name, m in model.named_modules() if isinstance(m, Conv)
             and isinstance(m.bn, nn.BatchNorm2d)}
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            x = out.double()
            sums[name] = sums.get(name, 0) + x.sum(dim=(0, 2, 3))
            squares[name] = squares.get(name, 0) + (x * x).sum(dim=(0, 2, 3))
            counts[name] = counts.get(name, 0) + x.numel() // x.shape[1]
        return record

    handles = [m.conv.register_forward_hook(hook(name)) for name, m in convs.items()]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in batches:
            model(batch)
            seen += batch.shape[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if seen == 0:
        raise ValueError("no calibration images")
    for name, m in convs.items():
        mean = sums[name] / counts[name]
        var = (squares[name] / counts[name] - mean * mean).clamp_min(0.0)
        bn = m.bn
        bias = bn.bias.double().clone()
        bn.running_mean.copy_(mean.float())
        bn.running_var.copy_(var.float())
        bn.weight.copy_(torch.sqrt(var + bn.eps).float())
        bn.bias.copy_((mean + bias).float())
    return seen


def load_onnx_for_training(path: str | Path, calib_paths: Sequence[Path], imgsz: int,
                           max_images: int = 256) -> tuple[DetectionModel, dict[str, Any]]:
    """:func:`model_from_onnx` plus BatchNorm statistics from up to ``max_images`` training images."""
    model, info = model_from_onnx(path)
    step = max(1, len(calib_paths) // max_images)
    chosen = list(calib_paths)[::step][:max_images]
    seen = rebuild_batchnorm(model, (torch.from_numpy(b) for b in letterboxed_images(chosen, imgsz)))
    log.info("%s: weights imported, BatchNorm statistics from %d training images", path, seen)
    return model, info
