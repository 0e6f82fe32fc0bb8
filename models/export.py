"""ONNX export (opset 17, BatchNorm fused, metadata), INT8 static QDQ quantization and FP16 conversion."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import load_model

log = logging.getLogger("models.export")
OPSET = 17  # DirectML's ceiling


def model_metadata(
    ckpt: dict[str, Any], model: torch.nn.Module, imgsz: int, quantization: str
) -> dict[str, str]:
    detect = model.detect  # type: ignore[attr-defined]
    return {
        "names": json.dumps(list(ckpt["names"])),
        "imgsz": json.dumps([imgsz, imgsz]),
        "stride": json.dumps([int(s) for s in detect.stride.tolist()]),
        "anchors": json.dumps(ckpt["anchors"]),
        "layout": "yolov5",
        "task": "detect",
        "version": str(ckpt.get("version", "unknown")),
        "train_data": str(ckpt.get("data", "")),
        "metrics": json.dumps(ckpt.get("metrics", {})),
        "anchor_report": json.dumps(ckpt.get("anchor_report", {})),
        "quantization": quantization,
        "architecture": str(Path(str(ckpt["train_args"].get("cfg", ""))).name),
        "model_yaml": json.dumps(getattr(model, "yaml", {})),
    }


def set_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(model, str(path))


def export_onnx(
    weights: str | Path,
    out: str | Path,
    imgsz: int | None = None,
    dynamic: bool = False,
    version: str | None = None,
) -> Path:
    """Export a checkpoint to ONNX: input ``images`` [N,3,H,W], output ``output0`` [N, A, 5+nc]."""
    import onnx

    model, ckpt = load_model(weights, "cpu")
    imgsz = int(imgsz or ckpt["imgsz"])
    model.fuse().eval()
    model.detect.export = True
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, imgsz, imgsz)
    # dynamic: any batch size and any input height/width (multiples of the largest stride), so the
    # service can feed 4:3 frames as 256x192 instead of padding them to 256x256 (app/inference/engine.py)
    axes = ({"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 1: "anchors"}}
            if dynamic else None)
    torch.onnx.export(
        model,
        (dummy,),
        str(out),
        opset_version=OPSET,
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes=axes,
        dynamo=False,
        do_constant_folding=True,
    )
    onnx_model = onnx.load(str(out))
    onnx.checker.check_model(onnx_model)
    if version:
        ckpt["version"] = version
    set_metadata(out, model_metadata(ckpt, model, imgsz, "fp32"))
    log.info(
        "exported %s (%d classes, %dx%d, dynamic batch and size %s)", out, len(ckpt["names"]), imgsz, imgsz,
        dynamic
    )
    return out


def detect_tail_nodes(onnx_path: Path) -> list[str]:
    """Nodes of the box-decoding tail (everything in the Detect module after its 1x1 convs): kept in float."""
    import onnx

    model = onnx.load(str(onnx_path))
    detect_prefix = None
    for node in model.graph.node:
        if node.op_type == "Conv" and "/m." in node.name and node.name.count("/") >= 3:
            detect_prefix = node.name.rsplit("/m.", 1)[0]
    if detect_prefix is None:
        return []
    return [
        n.name for n in model.graph.node if n.name.startswith(detect_prefix + "/") and n.op_type != "Conv"
    ]


def calibration_paths(data_yaml: str | Path, count: int) -> list[Path]:
    """The INT8 calibration images: ``count`` training images of a data.yaml, a fixed shuffle (seed 0)."""
    import random

    from models.data.formats import load_data_yaml

    paths = list(load_data_yaml(data_yaml).train)
    random.Random(0).shuffle(paths)
    return paths[:count]


def letterboxed_images(image_paths: Sequence[Path], imgsz: int) -> Iterator[np.ndarray]:
    """Each readable image as the service feeds it to the model: letterboxed, [1, 3, imgsz, imgsz]
    RGB 0-1 float32. Unreadable files are skipped (training names them when it loads the data)."""
    import cv2

    from app.inference.preprocess import make_batch

    for p in image_paths:
        img = cv2.imread(str(p))
        if img is not None:
            yield make_batch([img], (imgsz, imgsz))[0]


class ImageCalibrationReader:
    """Feeds letterboxed training images to ONNX Runtime's calibrator, one image per batch."""

    def __init__(self, image_paths: Sequence[Path], imgsz: int, input_name: str = "images"):
        self.paths = list(image_paths)
        self.imgsz = imgsz
        self.input_name = input_name
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _generate(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in letterboxed_images(self.paths, self.imgsz):
            yield {self.input_name: batch}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._generate()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def quantize_int8(
    fp32_path: str | Path,
    out: str | Path,
    calib_paths: Sequence[Path],
    imgsz: int,
    method: str = "minmax",
    per_channel: bool = True,
) -> Path:
    """Static QDQ quantization: uint8 activations, int8 per-channel weights, calibrated on training images,
    box-decoding tail left in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out = Path(fp32_path), Path(out)
    prepped = out.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    quantize_static(
        str(prepped),
        str(out),
        ImageCalibrationReader(calib_paths, imgsz),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[method],
        nodes_to_exclude=detect_tail_nodes(prepped),
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    prepped.unlink(missing_ok=True)
    import onnx

    src = onnx.load(str(fp32_path))
    props = {p.key: p.value for p in src.metadata_props}
    props["quantization"] = f"int8-qdq-{method}"
    props["calibration_images"] = str(len(calib_paths))
    set_metadata(out, props)
    return out


def convert_fp16(fp32_path: str | Path, out: str | Path) -> Path:
    """FP16 weights for GPU providers; inputs and outputs stay float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    half = convert_float_to_float16(model, keep_io_types=True)
    for p in half.metadata_props:
        if p.key == "quantization":
            p.value = "fp16"
    onnx.save(half, str(out))
    return Path(out)
