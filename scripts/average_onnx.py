"""Average the weights of FP32 ONNX exports of one architecture (a "model soup"), optionally with an INT8
copy calibrated exactly as ``defect-inspect export --int8`` does. Used for the model-soup row of v3 in
docs/model-card.md; the averaged model was measured, not shipped.

    .venv/bin/python scripts/average_onnx.py --out /tmp/soup.onnx \\
        v2/defect-yolov5s-cbam.onnx runs/train/v3/weights/last.onnx \\
        --int8-calib ../shared/datasets/neu-det/data.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from models.export import calibration_paths, quantize_int8


def average(paths: list[Path], out: Path) -> Path:
    """Mean of every float initializer; the graph and metadata are the first model's."""
    models = [onnx.load(str(p)) for p in paths]
    tensors = [{t.name: numpy_helper.to_array(t) for t in m.graph.initializer} for m in models]
    base = models[0]
    for init in base.graph.initializer:
        arrays = [t.get(init.name) for t in tensors]
        if any(a is None or a.shape != arrays[0].shape for a in arrays):
            raise SystemExit(f"{init.name}: not in every model with one shape; not the same architecture")
        if arrays[0].dtype.kind == "f" and arrays[0].size > 1:
            mean = np.mean(arrays, axis=0).astype(arrays[0].dtype)
            init.CopyFrom(numpy_helper.from_array(mean, init.name))
    onnx.save(base, str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--int8-calib", default=None, help="data.yaml: also write OUT-int8.onnx")
    parser.add_argument("--calib-images", type=int, default=300)
    parser.add_argument("--imgsz", type=int, default=256)
    args = parser.parse_args()
    fp32 = average(args.models, args.out)
    print(f"FP32: {fp32}")
    if args.int8_calib:
        out = args.out.with_name(args.out.stem + "-int8.onnx")
        calib = calibration_paths(args.int8_calib, args.calib_images)
        print(f"INT8: {quantize_int8(fp32, out, calib, args.imgsz)}")


if __name__ == "__main__":
    main()
