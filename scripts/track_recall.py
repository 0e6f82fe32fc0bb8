"""Defect-level recall on the simulated strip when a camera inspects every frame and when it inspects
each region of the material only ``looks`` times (the camera's ``tracking.looks``), with the truth
score of the tracks in both cases.

    .venv/bin/python scripts/track_recall.py --model models/weights/defect-yolov5s-int8.onnx \
        --imgsz 640 --frames 600 --looks 2,5,10,20 --seed 0,1,2

The detector runs once on every frame of a varied-speed strip (stops, jitter, drift) for each seed;
each way of looking then takes the detections of the frames it would have inspected (the camera's own
choice: ``CameraTracking.should_inspect`` on the frames' measured motion). Recall: of the true defects
that passed through the whole view, the share that some inspected frame's detection matches (IoU >= 0.3
with its true box, app.ingest.truth_score); ``recorded`` (``recall_recorded``): of those, how many
some record (an ended track's sightings) names, the recall of what is stored; ``recall_own_record``: of
those, how many some record stands for (most of its sightings name it; not only covered by a
neighbour's record). Each line also has the
truth score of the tracks (with ``exactly_one_of_detected``: the exactly-one share over the defects some
inspected frame's box found, not only those the records name) and why defects are not exactly one
record (``failure_kinds``); with several
seeds a last line per way of looking sums them up. The boxes are kept as a camera keeps them by default:
each class at the model's operating point (its metadata), else at 0.25 (``--thresholds global``: 0.25
for every class). ``--cache DIR`` keeps each strip's detections, so other tracking keys can be scored
without running the detector again. ``--h264``: the strip goes through H.264 first
(FFmpeg's libx264, ``-preset veryfast -g 30 -bf 0`` at its default quality, decoded back by OpenCV as a
file camera reads it), so the detector and the motion see what a camera streaming it delivers. A
measurement tool, not part of the product.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from app.detections import Detections
from app.inference import Engine
from app.ingest.camera_tracking import CameraTracking
from app.ingest.config import TrackingConfig
from app.ingest.decoder import ffmpeg_exe
from app.ingest.simulator import StripSimulator
from app.ingest.sources import Frame, OpenCVSource
from app.ingest.truth_score import failure_kinds, score_records
from app.inspection import CameraContext, apply_camera_rules, default_thresholds, run_detector

GLOBAL_THRESHOLD = 0.25  # a camera's pipeline.conf_threshold by default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--speed", type=float, default=480.0, help="top speed of the varied profile, px/s")
    parser.add_argument("--looks", default="2,5,10,20", help="comma list of looks to compare ('': none)")
    parser.add_argument("--seed", default="0", help="simulator seed, or a comma list of seeds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a camera tracking key for the tracks (e.g. merge_overlap=0.3); repeatable")
    parser.add_argument("--also", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="also score these tracking keys (on top of --set) on the same detections, "
                             "lines marked with them (e.g. fold_iou=1.01: as before folding); repeatable")
    parser.add_argument("--thresholds", choices=("model", "global"), default="model",
                        help="model: each class at the model's operating point, as a camera by default; "
                             f"global: {GLOBAL_THRESHOLD} for every class")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for each strip's detections (reused for the same model, size, strip)")
    parser.add_argument("--h264", action="store_true",
                        help="detect on the strip after an H.264 encode and decode, as a camera streams it")
    args = parser.parse_args()
    engine = Engine(args.model, intra_op_threads=2)
    all_looks = [None, *(int(v) for v in args.looks.split(",") if v)]
    variants = ["", *args.also]
    totals: dict[tuple[str, int | None], Counter[str]] = {(v, looks): Counter() for v in variants
                                                          for looks in all_looks}
    seeds = [int(v) for v in args.seed.split(",")]
    for seed in seeds:
        for variant, looks, line in strip_scores(engine, args, seed, all_looks, variants):
            print(json.dumps(line), flush=True)
            add_up(totals[variant, looks], line)
    if len(seeds) > 1:
        for (variant, looks), total in totals.items():
            print(json.dumps({**summed(looks, seeds, total), **({"also": variant} if variant else {})}))


def tracking_keys(pairs: list[str]) -> dict[str, str | None]:
    """``KEY=VALUE`` pairs as tracking keys (``null``: the key empty, e.g. ``min_score=null``)."""
    keys = dict(kv.split("=", 1) for kv in pairs if kv)
    return {k: None if v in ("null", "none") else v for k, v in keys.items()}


def strip_scores(engine: Engine, args: argparse.Namespace, seed: int, all_looks: list[int | None],
                 variants: list[str]):
    """(variant, looks, result line) for each set of tracking keys and way of looking at one seed's
    strip."""
    sim = StripSimulator(speed=args.speed, profile="varied", jitter=3, drift=10, seed=seed)
    strip = [sim.frame(i) for i in range(args.frames)]
    images = [image for image, _ in strip]
    if args.h264:
        images = h264_round_trip(images, sim.fps)
    thresholds = camera_thresholds(engine, args.thresholds)
    rules = CameraContext(class_thresholds=thresholds)
    configs = {v: TrackingConfig(enabled=True, **tracking_keys(args.set), **tracking_keys(v.split(",")))
               for v in variants}
    lowest_share = min([1.0, *(c.weak_share for c in configs.values() if c.weak_share is not None)])
    detected = strip_detections(engine, args, seed, images, thresholds, lowest_share)
    passed = {b.defect_id for _, truth in strip for b in truth if b.x1 <= 0}
    for variant, looks in ((v, looks) for v in variants for looks in all_looks):
        config = configs[variant].model_copy(update={"looks": looks})
        # the boxes a camera's tracks take: at the class thresholds, or from ``weak_share`` of them
        context = rules.thresholds_times(config.weak_share or 1.0)
        frames = [(image, truth, apply_camera_rules(found, context))
                  for image, (_, truth), found in zip(images, strip, detected, strict=True)]
        tracking = CameraTracking(config, thresholds=thresholds)
        for i, (image, truth, dets) in enumerate(frames):
            frame = Frame(image, i, datetime.now(UTC), i / sim.fps, truth=truth, t_stream=i / sim.fps)
            tracking.on_captured(frame)
            if tracking.should_inspect(frame):
                tracking.on_inspected(frame, dets)
        # the true defects the inspected frames' boxes at the class thresholds name (the camera notes them)
        found_ids = set(tracking.detected)
        tracks = [*tracking.ended, *tracking.finish()]
        records = [[(s.frame_index, s.box) for s in t.sightings] for t in tracks]
        score = score_records(records, tracking.truth, passed=passed, detected=found_ids)
        failures = failure_kinds(records, tracking.truth, sim.width, detected=found_ids)
        yield variant, looks, {"seed": seed, "looks": looks, **({"also": variant} if variant else {}),
                               **({"h264": True} if args.h264 else {}),
                               **({"thresholds": "global"} if args.thresholds == "global" else {}),
                               "frames": len(frames),
                               "inspected": tracking.frames_tracked, "passed": len(passed),
                               "recalled": len(found_ids & passed),
                               "recall": round(len(found_ids & passed) / len(passed), 3),
                               "recorded": round(score["recall"] * len(passed)),
                               "recorded_own": round(score["own_recall"] * len(passed)),
                               "tracks": score,
                               "failures": failures}


def camera_thresholds(engine: Engine, which: str) -> dict[str, float]:
    """Each class's threshold as a camera without ``thresholds`` of its own keeps its boxes."""
    model = engine.metadata.class_thresholds if which == "model" else {}
    return default_thresholds(engine.names, GLOBAL_THRESHOLD, model)


def strip_detections(engine: Engine, args: argparse.Namespace, seed: int, images: list[np.ndarray],
                     thresholds: dict[str, float], share: float) -> list[Detections]:
    """The detector's boxes on every frame, from ``share`` of the camera's threshold per class (from
    ``args.cache`` when this model, size and strip were detected before)."""
    # as the pipeline calls the model
    detect_at = min(GLOBAL_THRESHOLD, *thresholds.values()) * share
    cached = None
    if args.cache is not None:
        # the version too: two exports of one graph (v4, v5) can have the same name and size
        version = "".join(c if c.isalnum() or c in ".-" else "_" for c in str(engine.metadata.version))
        key = (f"{Path(args.model).stem}-{version}-{Path(args.model).stat().st_size}-{args.imgsz}-"
               f"{args.frames}-{args.speed:g}-{seed}{'-h264' if args.h264 else ''}-{detect_at:.4f}")
        cached = args.cache / f"{key}.npz"
    if cached is not None and cached.is_file():
        with np.load(cached) as z:
            raw = [Detections(z[f"xyxy{i}"], z[f"conf{i}"], z[f"cls{i}"], engine.names)
                   for i in range(len(images))]
    else:
        raw = [run_detector(engine, [image], detect_at, 0.45, 300, imgsz=args.imgsz)[0][0]
               for image in images]
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(cached, **{f"{k}{i}": v for i, d in enumerate(raw)
                                           for k, v in (("xyxy", d.xyxy), ("conf", d.confidence),
                                                        ("cls", d.class_id))})
    return raw


def h264_round_trip(images: list[np.ndarray], fps: float) -> list[np.ndarray]:
    """The frames encoded to an H.264 file by FFmpeg and read back as a file camera reads it."""
    height, width = images[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "strip.mp4"
        encoder = subprocess.Popen(
            [ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
             "-s", f"{width}x{height}", "-r", str(fps), "-i", "-",
             "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-bf", "0",
             "-pix_fmt", "yuv420p", str(video)], stdin=subprocess.PIPE)
        assert encoder.stdin is not None
        for image in images:
            encoder.stdin.write(np.ascontiguousarray(image).tobytes())
        encoder.stdin.close()
        if encoder.wait() != 0:
            raise SystemExit(f"ffmpeg could not encode the strip (exit {encoder.returncode})")
        camera = OpenCVSource(str(video), live=False)  # a video file camera's own reader
        camera.open()
        decoded = []
        while (frame := camera.read()) is not None:
            decoded.append(frame.image)
        camera.close()
    if len(decoded) != len(images):
        raise SystemExit(f"the H.264 strip decoded to {len(decoded)} frames, not {len(images)}")
    return decoded


def add_up(total: Counter[str], line: dict) -> None:
    score = line["tracks"]
    total.update({"frames": line["frames"], "inspected": line["inspected"], "passed": line["passed"],
                  "recalled": line["recalled"], "recorded": line["recorded"],
                  "recorded_own": line["recorded_own"], "records": score["records"],
                  "found": score["found_defects"], "false_records": score["false_records"],
                  "exactly_one": round(score["exactly_one"] * score["found_defects"]),
                  "duplicates": round(score["duplicates"] * score["found_defects"]),
                  "merges": round(score["merges"] * score["records"]),
                  "detected": score["detected_defects"],
                  "one_of_detected": round(score["exactly_one_of_detected"] * score["detected_defects"]),
                  "no_record_of_detected": round(score["no_record_of_detected"] * score["detected_defects"])})
    total.update({"failure:" + k: v for k, v in line["failures"].items()})


def summed(looks: int | None, seeds: list[int], t: Counter[str]) -> dict:
    return {"seeds": seeds, "looks": looks, "frames": t["frames"], "inspected": t["inspected"],
            "recall": round(t["recalled"] / t["passed"], 3),
            "recall_recorded": round(t["recorded"] / t["passed"], 3),
            "recall_own_record": round(t["recorded_own"] / t["passed"], 3), "records": t["records"],
            "false_records": t["false_records"],
            "found_defects": t["found"], "exactly_one": round(t["exactly_one"] / t["found"], 3),
            "duplicates": round(t["duplicates"] / t["found"], 3),
            "merges": round(t["merges"] / t["records"], 3), "detected_defects": t["detected"],
            "exactly_one_of_detected": round(t["one_of_detected"] / t["detected"], 3),
            "no_record_of_detected": round(t["no_record_of_detected"] / t["detected"], 3),
            "failures": {k.split(":", 1)[1]: v for k, v in sorted(t.items()) if k.startswith("failure:")}}


if __name__ == "__main__":
    main()
