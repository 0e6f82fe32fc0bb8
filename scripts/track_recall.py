"""Defect-level recall on the simulated strip when a camera inspects every frame and when it inspects
each region of the material only ``looks`` times (the camera's ``tracking.looks``), with the truth
score of the tracks in both cases.

    .venv/bin/python scripts/track_recall.py --model models/weights/defect-yolov5s-cbam-int8.onnx \
        --imgsz 640 --frames 600 --looks 2,5,10,20

The detector runs once on every frame of a varied-speed strip (stops, jitter, drift); each way of
looking then takes the detections of the frames it would have inspected (the camera's own choice:
``CameraTracking.should_inspect`` on the frames' measured motion). Recall: of the true defects that
passed through the whole view, the share that some inspected frame's detection matches (IoU >= 0.3
with its true box, app.ingest.truth_score). A measurement tool, not part of the product.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from app.inference import Engine
from app.ingest.camera_tracking import CameraTracking
from app.ingest.config import TrackingConfig
from app.ingest.simulator import StripSimulator
from app.ingest.sources import Frame
from app.ingest.truth_score import score_records, true_defect
from app.inspection import run_detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--speed", type=float, default=480.0, help="top speed of the varied profile, px/s")
    parser.add_argument("--looks", default="2,5,10,20", help="comma list of looks to compare")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    engine = Engine(args.model, intra_op_threads=2)
    sim = StripSimulator(speed=args.speed, profile="varied", jitter=3, drift=10, seed=args.seed)
    frames = []
    for i in range(args.frames):
        image, truth = sim.frame(i)
        [found], _, _ = run_detector(engine, [image], 0.25, 0.45, 300, imgsz=args.imgsz)
        frames.append((image, truth, found))
    passed = {b.defect_id for _, truth, _ in frames for b in truth if b.x1 <= 0}
    for looks in [None, *(int(v) for v in args.looks.split(","))]:
        tracking = CameraTracking(TrackingConfig(enabled=True, looks=looks))
        found_ids: set[str] = set()
        for i, (image, truth, dets) in enumerate(frames):
            frame = Frame(image, i, datetime.now(UTC), i / sim.fps, truth=truth, t_stream=i / sim.fps)
            tracking.on_captured(frame)
            if tracking.should_inspect(frame):
                found_ids.update(d for d in (true_defect((x.x1, x.y1, x.x2, x.y2), truth, 0.3) for x in dets)
                                 if d is not None)
                tracking.on_inspected(frame, dets)
        tracks = [*tracking.ended, *tracking.finish()]
        records = [[(s.frame_index, s.box) for s in t.sightings] for t in tracks]
        print(json.dumps({"looks": looks, "frames": len(frames), "inspected": tracking.frames_tracked,
                          "passed": len(passed), "recall": round(len(found_ids & passed) / len(passed), 3),
                          "tracks": score_records(records, tracking.truth)}))


if __name__ == "__main__":
    main()
