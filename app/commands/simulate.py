"""`defect-inspect simulate`: render the production-line simulator to a video file or an image folder,
with the ground truth of every frame (where the defects truly are) as JSONL next to it."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from app.errors import UserError

VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate", help="render a moving steel strip (dataset images) to a video or folder + truth JSONL",
        description="Tile dataset images (by default the shipped sample of 200x200 NEU-DET images) into a "
                    "strip that scrolls past a camera; write the frames and, per frame, the YOLO-label "
                    "boxes that are visible.")
    p.add_argument("--out", required=True,
                   help="video file (.mp4 .avi .mkv .mov) or a folder for JPEG frames")
    p.add_argument("--images", default=None,
                   help="dataset images folder, labels in ../labels (default: INSPECT_SIM_IMAGES, else the "
                        "NEU-DET sample shipped in app/sample/neu-det)")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--speed", type=float, default=120.0, help="strip speed in pixels per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", choices=["constant", "varied"], default="constant",
                   help="varied: a new speed every 1-4 s between a stop and --speed")
    p.add_argument("--jitter", type=float, default=0.0, help="shake along the strip, up to this many px")
    p.add_argument("--drift", type=float, default=0.0, help="sideways sway, up to this many px")
    p.add_argument("--defect-rate", type=float, default=1.0,
                   help="share of strip tiles with their labelled defects, the others clean strip (1: all)")
    p.add_argument("--truth", default=None,
                   help="truth JSONL path (default: <video stem>.truth.jsonl, or <folder>/truth.jsonl)")
    p.set_defaults(func=run)


def truth_path_for(out: Path) -> Path:
    return out.with_suffix(".truth.jsonl") if out.suffix.lower() in VIDEO_CODECS else out / "truth.jsonl"


def run(args: argparse.Namespace) -> int:
    import cv2

    from app.ingest.simulator import StripSimulator

    if args.fps <= 0 or args.seconds <= 0:
        raise UserError("--fps and --seconds must be > 0")
    if args.width < 32 or args.height < 32:
        raise UserError("--width and --height must be >= 32")
    if not 0.0 <= args.defect_rate <= 1.0:
        raise UserError("--defect-rate must be between 0 and 1")
    try:
        sim = StripSimulator(args.images, args.width, args.height, args.fps, args.speed, args.seed,
                             profile=args.profile, jitter=args.jitter, drift=args.drift,
                             defect_rate=args.defect_rate)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"--images: {exc}") from None
    out = Path(args.out)
    is_video = out.suffix.lower() in VIDEO_CODECS
    truth_file = Path(args.truth) if args.truth else truth_path_for(out)
    frames = int(round(args.fps * args.seconds))
    writer = None
    if is_video:
        out.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[out.suffix.lower()])
        writer = cv2.VideoWriter(str(out), fourcc, args.fps, (args.width, args.height))
        if not writer.isOpened():
            raise UserError(f"{out}: cannot open a video writer for this format")
    else:
        out.mkdir(parents=True, exist_ok=True)
    truth_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    boxes = 0
    with open(truth_file, "w", encoding="utf-8") as fh:
        for i in range(frames):
            image, truth = sim.frame(i)
            rec: dict = {"frame": i, "t": round(i / args.fps, 6), "offset_px": sim.offset(i)}
            if writer is not None:
                writer.write(image)
            else:
                name = f"frame_{i:06d}.jpg"
                if not cv2.imwrite(str(out / name), image):
                    raise UserError(f"{out / name}: cannot write the frame")
                rec["file"] = name
            rec["boxes"] = [b.to_dict() for b in truth]
            boxes += len(truth)
            fh.write(json.dumps(rec) + "\n")
    if writer is not None:
        writer.release()
    print(json.dumps({"out": str(out), "truth": str(truth_file), "frames": frames, "fps": args.fps,
                      "width": args.width, "height": args.height, "truth_boxes": boxes,
                      "images": str(sim.images_dir), "seconds_taken": round(time.perf_counter() - t0, 2)}))
    return 0
