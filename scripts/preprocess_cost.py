"""Letterbox cost and its effect on accuracy: the shipped two-step resize against plain INTER_AREA.

    # CPU ms per frame of the resize variants and of make_batch, on frames of a source
    .venv/bin/python scripts/preprocess_cost.py time --source /tmp/line.mp4
    # NEU-DET val upscaled to 640x640, so letterboxing to 256 takes the 2.5x shrink path cameras take
    .venv/bin/python scripts/preprocess_cost.py upscale-val --data ../shared/datasets/neu-det/data.yaml \
        --size 640 --out /tmp/up640
    # mAP on it with the shipped resize, then with INTER_AREA (the previous letterbox) patched in
    .venv/bin/python scripts/preprocess_cost.py evaluate --model M.onnx --data /tmp/up640/data.yaml
    .venv/bin/python scripts/preprocess_cost.py evaluate --model M.onnx --data /tmp/up640/data.yaml \
        --inter-area

A measurement tool, not part of the product (docs/benchmarks.md, "Letterbox cost").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml

from app.inference import preprocess


def inter_area(image: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """The letterbox's resize before the two-step one."""
    shrink = new_w < image.shape[1]
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    t0 = time.process_time()
    for _ in range(repeat):
        fn()
    return 1000 * (time.process_time() - t0) / repeat


def run_time(args: argparse.Namespace) -> None:
    from app.bench.measure import sample_frames

    frames = sample_frames(args.source, 8)
    frame = frames[0]
    h, w = frame.shape[:2]
    ratio = min(args.imgsz / h, args.imgsz / w)
    size = (round(w * ratio), round(h * ratio))
    ref = inter_area(frame, *size)
    out: dict = {"frame": [h, w], "resized": [size[1], size[0]], "cv2_threads": cv2.getNumThreads()}
    variants = {"inter_area": lambda: inter_area(frame, *size),
                "shipped": lambda: preprocess.resize(frame, *size),
                "inter_linear": lambda: cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)}
    for name, fn in variants.items():
        diff = np.abs(fn().astype(np.int16) - ref.astype(np.int16))
        out[name] = {"cpu_ms": round(cpu_ms(fn, args.repeat), 3),
                     "mean_abs_diff_vs_area": round(float(diff.mean()), 3)}
    batch = frames[:4]
    size_hw = (args.imgsz, args.imgsz)
    out["make_batch_4_per_frame_cpu_ms"] = round(cpu_ms(lambda: preprocess.make_batch(batch, size_hw),
                                                        args.repeat // 4) / 4, 3)
    print(json.dumps(out))


def run_upscale(args: argparse.Namespace) -> None:
    data = Path(args.data)
    spec = yaml.safe_load(data.read_text())
    root = (data.parent / spec.get("path", ".")).resolve()
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    lines = []
    for rel in (root / spec["val"]).read_text().split():
        image = cv2.imread(str(root / rel))
        if image is None:
            sys.exit(f"{root / rel}: unreadable image")
        name = Path(rel).name
        big = cv2.resize(image, (args.size, args.size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(out / "images" / name), big, [cv2.IMWRITE_JPEG_QUALITY, 95])
        label = root / "labels" / Path(rel).with_suffix(".txt").name
        (out / "labels" / label.name).write_text(label.read_text() if label.exists() else "")
        lines.append(f"images/{name}")
    (out / "val.txt").write_text("\n".join(lines) + "\n")
    (out / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "val.txt", "val": "val.txt",
                                                   "names": spec["names"]}))
    print(f"{len(lines)} images at {args.size}x{args.size} in {out}")


def run_evaluate(args: argparse.Namespace) -> None:
    if args.inter_area:
        preprocess.resize = inter_area  # letterbox looks the helper up at call time
    from app.cli import main

    sys.exit(main(["evaluate", "--model", args.model, "--data", args.data, "--split", "val", "--json"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("time")
    t.add_argument("--source", required=True)
    t.add_argument("--imgsz", type=int, default=256)
    t.add_argument("--repeat", type=int, default=400)
    t.set_defaults(func=run_time)
    u = sub.add_parser("upscale-val")
    u.add_argument("--data", required=True)
    u.add_argument("--size", type=int, default=640)
    u.add_argument("--out", required=True)
    u.set_defaults(func=run_upscale)
    e = sub.add_parser("evaluate")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--inter-area", action="store_true", help="the previous letterbox resize")
    e.set_defaults(func=run_evaluate)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
