"""False boxes on clean strip: the simulator's clean strip (``defect_rate`` 0: steel texture cut from
outside the labelled boxes) grown from the images of one split only, inspected by a model at its
operating points (each class's default threshold in the service) and, for comparison, at one global
threshold. Every box on a frame without a true defect is a false box.

    python scripts/clean_strip_false_boxes.py --data ../shared/datasets/neu-det \\
        --model models/weights/defect-yolov5s-int8.onnx --split val --frames 200

``--images FOLDER --defect-rate R`` measures a mixed strip instead (the demo line: the shipped sample,
0.04): the share of frames with a true defect and of frames the model calls NG as well.

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
    ap.add_argument("--data", type=Path, help="a YOLO data set folder: data.yaml, SPLIT.txt")
    ap.add_argument("--images", type=Path, help="or an images folder (labels in ../labels), all of it")
    ap.add_argument("--defect-rate", type=float, default=0.0, help="share of tiles with their defects")
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
    if (args.data is None) == (args.images is None):
        ap.error("give --data (with --split) or --images")
    counts = {"operating_points": np.zeros(args.frames, int), "global": np.zeros(args.frames, int)}
    has_truth = np.zeros(args.frames, bool)
    per_class = {"operating_points": dict.fromkeys(engine.names, 0), "global": dict.fromkeys(engine.names, 0)}
    with tempfile.TemporaryDirectory() as tmp:
        images = args.images or split_folder(args.data, args.split, Path(tmp) / args.split)
        sim = StripSimulator(images, args.width, args.height, fps=1.0, speed=float(args.width),
                             seed=args.seed, defect_rate=args.defect_rate)
        for i in range(args.frames):
            frame, truth = sim.frame(i)
            has_truth[i] = bool(truth)
            [found] = engine.detect([frame], conf_threshold=lowest, imgsz=args.imgsz or None)
            for key, context in (("operating_points", at_points), ("global", at_global)):
                kept = apply_camera_rules(found, context)
                counts[key][i] = len(kept)
                if not truth:
                    for c in kept.class_id:
                        per_class[key][engine.names[int(c)]] += 1
        sources = len(sim.clean_sources)
        pictures = len(sim.paths)
    report = {
        "model": str(args.model), "version": engine.version, "images_folder": str(args.images or ""),
        "split": None if args.images else args.split, "images": pictures, "defect_rate": args.defect_rate,
        "frames_with_a_true_defect": round(float(has_truth.mean()), 3),
        "images_with_clean_texture": sources, "frames": args.frames, "frame": [args.width, args.height],
        "imgsz": args.imgsz or max(engine.imgsz), "global_threshold": args.global_threshold,
        "thresholds": points,
    }
    clean = ~has_truth
    for key, n in counts.items():
        false = n[clean] if clean.any() else np.zeros(1, int)
        report[key] = {"frames_ng": round(float((n > 0).mean()), 3),
                       "clean_frames": int(clean.sum()),
                       "false_boxes_per_clean_frame": round(float(false.mean()), 3),
                       "clean_frames_with_a_false_box": round(float((false > 0).mean()), 3),
                       "most_in_one_clean_frame": int(false.max()),
                       "false_boxes_by_class": per_class[key]}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
