"""False boxes on clean strip: the simulator's clean strip (``defect_rate`` 0: steel texture cut from
outside the labelled boxes) grown from the images of one split only, inspected by a model at its
operating points (each class's default threshold in the service) and, for comparison, at one global
threshold. Every box on clean strip is a false box.

    python scripts/clean_strip_false_boxes.py --data ../shared/datasets/neu-det \\
        --model models/weights/defect-yolov5s-cbam-int8.onnx --split val --frames 200

The frames are cut so that none overlaps the next (the strip moves one frame width per frame), at the
demo camera's size (640x400) and model input (``--imgsz 640``, the tiles at the scale the model
learned). Prints one JSON object."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.inference import Engine  # noqa: E402
from app.ingest.simulator import StripSimulator  # noqa: E402
from app.inspection import CameraContext, apply_camera_rules, default_thresholds  # noqa: E402


def split_folder(data: Path, split: str, into: Path) -> Path:
    """A dataset folder (images/, labels/, data.yaml) holding only the images listed in ``split``.txt,
    as links: the simulator takes a folder."""
    (into / "images").mkdir(parents=True)
    (into / "labels").mkdir()
    (into / "data.yaml").symlink_to((data / "data.yaml").resolve())
    for line in (data / f"{split}.txt").read_text().split():
        image = (data / line).resolve()
        (into / "images" / image.name).symlink_to(image)
        label = data / "labels" / (image.stem + ".txt")
        if label.is_file():
            (into / "labels" / label.name).symlink_to(label.resolve())
    return into / "images"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="a YOLO data set folder: data.yaml, SPLIT.txt")
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--split", default="val")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=400)
    ap.add_argument("--imgsz", type=int, default=640, help="model input, longer side (0: the model's own)")
    ap.add_argument("--global-threshold", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    engine = Engine(args.model, intra_op_threads=args.threads)
    points = engine.metadata.class_thresholds
    names, default = engine.names, args.global_threshold
    at_points = CameraContext(class_thresholds=default_thresholds(names, default, points))
    at_global = CameraContext(class_thresholds=default_thresholds(names, default, {}))
    lowest = min([args.global_threshold, *points.values()])
    counts = {"operating_points": np.zeros(args.frames, int), "global": np.zeros(args.frames, int)}
    per_class = {"operating_points": dict.fromkeys(engine.names, 0), "global": dict.fromkeys(engine.names, 0)}
    with tempfile.TemporaryDirectory() as tmp:
        images = split_folder(args.data, args.split, Path(tmp) / args.split)
        sim = StripSimulator(images, args.width, args.height, fps=1.0, speed=float(args.width),
                             seed=args.seed, defect_rate=0.0)
        for i in range(args.frames):
            frame, truth = sim.frame(i)
            assert not truth, "clean strip carries no truth"
            [found] = engine.detect([frame], conf_threshold=lowest, imgsz=args.imgsz or None)
            for key, context in (("operating_points", at_points), ("global", at_global)):
                kept = apply_camera_rules(found, context)
                counts[key][i] = len(kept)
                for c in kept.class_id:
                    per_class[key][engine.names[int(c)]] += 1
        sources = len(sim._clean_sources or [])
        pictures = len(sim.paths)
    report = {
        "model": str(args.model), "version": engine.version, "split": args.split, "images": pictures,
        "images_with_clean_texture": sources, "frames": args.frames, "frame": [args.width, args.height],
        "imgsz": args.imgsz or max(engine.imgsz), "global_threshold": args.global_threshold,
        "thresholds": points,
    }
    for key, n in counts.items():
        report[key] = {"false_boxes_per_frame": round(float(n.mean()), 3),
                       "frames_with_a_false_box": round(float((n > 0).mean()), 3),
                       "most_in_one_frame": int(n.max()), "by_class": per_class[key]}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
