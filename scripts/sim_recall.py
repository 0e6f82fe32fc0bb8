"""Precision and recall of a model on the simulated strip, against the simulator's ground truth, for
whole-frame letterboxing (at the model's size or a camera's larger ``imgsz``) and for tiled detection
(app.inference.tiling), at several frame sizes.

    .venv/bin/python scripts/sim_recall.py --model models/weights/defect-yolov5s-int8.onnx \
        --images ../shared/datasets/neu-det/images \
        --sizes 640x480,320x240,256x192 --tiles 256:32 --imgsz 384,512,640,800

A detection is right when a truth box of the same class that is at least 90 % inside the frame has
IoU >= 0.5 with it, each box on either side matched once (app.inference.postprocess.match_detections).
On the full data set (the figures in docs/benchmarks.md) most strip images are NEU-DET training
images: read the figures as a comparison of the ways of looking at a frame, not as the model's
accuracy (that is docs/model-card.md). Without --images the strip is the simulator's default
(INSPECT_SIM_IMAGES, else the 90 validation images shipped in app/sample/neu-det). A measurement
tool, not part of the product.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from app.detections import Detections
from app.inference import Engine, tiling
from app.inference.postprocess import match_detections
from app.ingest.simulator import StripSimulator


def score(frames: list, detect) -> dict:
    hits = n_detections = n_truth = 0
    for image, truth in frames:
        truth = [t for t in truth if t.visible >= 0.9]
        n_truth += len(truth)
        d: Detections = detect(image)
        n_detections += len(d)
        boxes = np.array([[t.x1, t.y1, t.x2, t.y2] for t in truth], np.float32).reshape(-1, 4)
        classes = np.array([t.class_id for t in truth], int)
        hits += match_detections(boxes, classes, d.xyxy, d.class_id, iou=0.5)
    return {"truth": n_truth, "detections": n_detections,
            "precision": round(hits / max(n_detections, 1), 3), "recall": round(hits / max(n_truth, 1), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--sizes", default="640x480", help="comma list of WIDTHxHEIGHT frame sizes")
    parser.add_argument("--tiles", default="256:32", help="comma list of SIZE:OVERLAP tilings ('' for none)")
    parser.add_argument("--imgsz", default="", help="comma list of larger model inputs (longer side) for "
                                                    "whole frames, as a camera's imgsz (free-size models)")
    parser.add_argument("--images", default=None, help="strip images folder (default: the simulator's)")
    parser.add_argument("--frames", type=int, default=200, help="frames per size (every 6th of the strip)")
    parser.add_argument("--conf", type=float, default=0.25)
    args = parser.parse_args()
    engine = Engine(args.model, intra_op_threads=1)
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        sim = StripSimulator(args.images, w, h, 30.0, 120.0, 0)
        frames = [sim.frame(6 * i) for i in range(args.frames)]
        whole = score(frames, lambda im: engine.detect([im], args.conf, 0.45)[0])
        print(json.dumps({"frame": [w, h], "mode": "whole frame", **whole}))
        for side in (int(v) for v in args.imgsz.split(",") if v.strip()):
            at_size = score(frames, lambda im, side=side: engine.detect([im], args.conf, 0.45, imgsz=side)[0])
            hw = engine.input_size([frames[0][0]], side)
            print(json.dumps({"frame": [w, h], "mode": f"whole frame, imgsz {side} ({hw[1]}x{hw[0]} input)",
                              **at_size}))
        for spec in (s for s in args.tiles.split(",") if s.strip()):
            tile, overlap = (int(v) for v in spec.split(":"))
            if tile >= max(w, h):
                continue

            def tiled(image: np.ndarray, tile: int = tile, overlap: int = overlap) -> Detections:
                parts, offsets = tiling.split(image, tile, overlap)
                return tiling.merge(engine.detect(parts, args.conf, 0.45), offsets, engine.names)

            windows = len(tiling.tile_windows(w, h, tile, overlap))
            print(json.dumps({"frame": [w, h], "mode": f"tiles {tile}/{overlap} ({windows} windows)",
                              **score(frames, tiled)}))


if __name__ == "__main__":
    main()
