"""What test-time augmentation and a seed ensemble would give: a model scored on a split (COCO mAP,
``defect-inspect evaluate``'s code) with the union of raw predictions of the image, its flips, resized
copies and other models, merged by one NMS. The service runs none of these; each costs a full
inference per copy.

    python scripts/union_eval.py --model v9.onnx --data ../shared/datasets/neu-det/data.yaml \\
        --flips lr,ud,lrud --scales 1.25 --also v9-seed1.onnx

A flip mirrors the letterboxed input (``lr`` left-right, ``ud`` up-down, ``lrud`` both) and its boxes
back; a scale resizes the whole input (size rounded to a multiple of 32) and divides its boxes back;
``--also`` runs further models (dynamic-input ONNX files or checkpoints) on the same input. Prints one
JSON object: mAP50, mAP50-95 and AP50 per class."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.inference.preprocess import Letterbox  # noqa: E402
from models.data.formats import load_data_yaml  # noqa: E402
from models.evaluate import Detector, evaluate, load_detector, split_paths  # noqa: E402

FLIPS = ("lr", "ud", "lrud")
STRIDE = 32


def resized(batch: np.ndarray, factor: float) -> tuple[np.ndarray, float, float]:
    """``batch`` [N, 3, H, W] resized by ``factor`` (sides rounded to the stride) and the x, y factors."""
    h, w = batch.shape[2:]
    new_h = max(STRIDE, round(h * factor / STRIDE) * STRIDE)
    new_w = max(STRIDE, round(w * factor / STRIDE) * STRIDE)
    out = np.stack([cv2.resize(np.ascontiguousarray(x.transpose(1, 2, 0)), (new_w, new_h),
                               interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1) for x in batch])
    return np.ascontiguousarray(out), new_w / w, new_h / h


class UnionDetector:
    """``base``'s interface; ``run`` returns the raw rows of every copy and model, in ``base``'s input
    pixels, one after the other (one NMS then merges them)."""

    def __init__(self, base: Detector, flips: Sequence[str] = (), scales: Sequence[float] = (),
                 others: Sequence[Detector] = ()):
        self.base, self.flips, self.scales, self.others = base, tuple(flips), tuple(scales), tuple(others)
        self.names = base.names

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        return self.base.preprocess(images)

    def run(self, batch: np.ndarray) -> np.ndarray:
        h, w = batch.shape[2:]
        outs = [self.base.run(batch)] + [other.run(batch) for other in self.others]
        for flip in self.flips:
            mirrored = batch[..., ::-1] if "lr" in flip else batch
            mirrored = mirrored[..., ::-1, :] if "ud" in flip else mirrored
            raw = self.base.run(np.ascontiguousarray(mirrored)).copy()
            if "lr" in flip:
                raw[..., 0] = w - raw[..., 0]
            if "ud" in flip:
                raw[..., 1] = h - raw[..., 1]
            outs.append(raw)
        for factor in self.scales:
            scaled, fx, fy = resized(batch, factor)
            raw = self.base.run(scaled).copy()
            raw[..., [0, 2]] /= fx
            raw[..., [1, 3]] /= fy
            outs.append(raw)
        return np.concatenate(outs, axis=1)

    def postprocess(self, *args, **kwargs):  # noqa: ANN002, ANN003 - the base detector's signature
        return self.base.postprocess(*args, **kwargs)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="ONNX file (dynamic input for --scales) or checkpoint")
    parser.add_argument("--data", required=True, help="data.yaml")
    parser.add_argument("--split", default="val")
    parser.add_argument("--flips", default="", help=f"comma-separated, of {', '.join(FLIPS)}")
    parser.add_argument("--scales", default="", help="comma-separated input size factors, e.g. 1.25,0.875")
    parser.add_argument("--also", nargs="*", default=[], help="further models for an ensemble")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all)")
    args = parser.parse_args(argv)
    flips = [f for f in args.flips.split(",") if f]
    unknown = sorted(set(flips) - set(FLIPS))
    if unknown:
        parser.error(f"--flips: unknown {', '.join(unknown)} (choose from {', '.join(FLIPS)})")
    scales = [float(s) for s in args.scales.split(",") if s]
    spec = load_data_yaml(args.data)
    base, _ = load_detector(args.model, threads=args.threads)
    others = [load_detector(path, threads=args.threads)[0] for path in args.also]
    metrics = evaluate(UnionDetector(base, flips, scales, others), split_paths(spec, args.split), spec.nc)
    print(json.dumps({
        "model": args.model, "also": args.also, "flips": flips, "scales": scales, "split": args.split,
        "map50": round(metrics["map50"], 4), "map50_95": round(metrics["map50_95"], 4),
        "ap50": {name: round(c["map50"], 4) for name, c in metrics["per_class"].items()},
    }))


if __name__ == "__main__":
    main()
