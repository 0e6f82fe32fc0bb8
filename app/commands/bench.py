"""`defect-inspect bench`: throughput of the detector alone (``bench engine``, by batch size), of the
whole camera pipeline (``bench pipeline``: capture -> queues -> workers -> batched commits, with the raw
engine measured in the same run on the same frames so the two can be compared: ``ratio``), and the
optional comparison with ultralytics (``bench ultralytics``). The measurements live in ``app.bench``;
this module only turns options into their typed form and prints one JSON object."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import InvalidInput
from app.settings import DEFAULT_MODEL_PATH

if TYPE_CHECKING:
    from app.bench.pipeline import PipelineBenchOptions

NEU_DET = Path(__file__).resolve().parents[1] / "sample" / "neu-det"  # the shipped sample (credits there)
DEFAULT_FRAMES = NEU_DET / "images"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="measure engine and pipeline throughput",
                              description="Benchmarks; each prints one JSON object.")
    sub = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)

    e = sub.add_parser("engine", help="raw detector FPS by batch size")
    e.add_argument("--model", required=True, help="ONNX model")
    e.add_argument("--source", default="sim://neu-det?realtime=0",
                   help="where the frames come from (video, folder, sim://...; default the simulator)")
    e.add_argument("--batch-sizes", default="1,2,4,8", help="comma list (default 1,2,4,8)")
    e.add_argument("--seconds", type=float, default=3.0, help="per batch size (default 3)")
    e.add_argument("--workers", type=int, default=1, help="threads calling the engine (default 1)")
    e.add_argument("--intra-op-threads", type=int, default=0, help="ONNX Runtime threads (0 = auto)")
    e.add_argument("--providers", default=None, help="comma list of ONNX Runtime providers")
    e.add_argument("--imgsz", type=int, default=None,
                   help="model input size, longer side, as a camera's imgsz (free-size models)")
    e.add_argument("--json", action="store_true", help="JSON only (the default output is JSON too)")
    e.set_defaults(func=run_engine)

    q = sub.add_parser("pipeline", help="end-to-end FPS, drops and capture-to-commit latency")
    q.add_argument("--model", required=True, help="ONNX model")
    q.add_argument("--source", required=True, help="video file, folder, rtsp://..., sim://neu-det?fps=30")
    q.add_argument("--seconds", type=float, default=10.0, help="run length (default 10)")
    q.add_argument("--cameras", type=int, default=1, help="cameras reading the source (default 1)")
    q.add_argument("--workers", type=int, default=2)
    q.add_argument("--intra-op-threads", type=int, default=1)
    q.add_argument("--max-batch", type=int, default=4)
    q.add_argument("--max-wait-ms", type=float, default=10.0)
    q.add_argument("--buffer", choices=["block", "drop-oldest"], default=None,
                   help="queue policy (default: block for files/folders, drop-oldest for live)")
    q.add_argument("--queue-size", type=int, default=8)
    q.add_argument("--loop", action="store_true", help="restart file sources at their end")
    q.add_argument("--tile-size", type=int, default=None,
                   help="tiled detection: windows of this many frame pixels (default: whole frame)")
    q.add_argument("--tile-overlap", type=int, default=32)
    q.add_argument("--imgsz", type=int, default=None,
                   help="whole frames at this model input size, longer side (free-size models; default: "
                        "the model's own)")
    q.add_argument("--decode-threads", type=int, default=1,
                   help="FFmpeg decoder threads per video source (default 1; 0 = OpenCV's choice)")
    q.add_argument("--images", choices=["always", "ng", "never"], default="never",
                   help="image storage policy (default never: measure inference and the database)")
    q.add_argument("--crops", action="store_true", help="also store one crop per defect of stored frames")
    q.add_argument("--crops-only", action="store_true",
                   help="store the crops but not the whole frames (with --crops)")
    q.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of stored images (default 90)")
    q.add_argument("--database", default=None, help="database URL (default: a fresh SQLite file)")
    q.add_argument("--providers", default=None, help="comma list of ONNX Runtime providers")
    q.add_argument("--engine-seconds", type=float, default=None,
                   help="length of the raw engine measurement (default min(seconds, 5))")
    q.add_argument("--tracking", action="store_true",
                   help="the cameras track defects along the material; on a simulator source the tracks "
                        "are scored against its truth (share of found defects with exactly one record, "
                        "duplicates, merges)")
    q.add_argument("--looks", type=int, default=None,
                   help="with tracking: inspect each region of the material this many times, track the "
                        "frames in between by motion (default: inspect every frame)")
    q.add_argument("--fill-idle", action="store_true",
                   help="with --looks: also inspect frames in between while the detector has room "
                        "(the camera's tracking.fill_idle)")
    q.add_argument("--min-score", type=float, default=None,
                   help="with tracking: a track counts as a defect when its score reaches this (the "
                        "camera's tracking.min_score; default: the camera's default)")
    q.add_argument("--weak-share", type=float, default=None,
                   help="with tracking: boxes from this share of their class threshold are tracked too "
                        "(the camera's tracking.weak_share; default: the camera's default)")
    q.add_argument("--every-track", action="store_true",
                   help="with tracking: every track is a defect and only boxes at the threshold are "
                        "tracked (tracking.min_score and weak_share null)")
    q.add_argument("--json", action="store_true", help="JSON only (the default output is JSON too)")
    q.set_defaults(func=run_pipeline)

    add_ultralytics_parser(sub)
    add_line_latency_parser(sub)


def add_line_latency_parser(sub: argparse._SubParsersAction) -> None:
    lat = sub.add_parser("line-latency", help="capture -> provisional verdict on MQTT and OPC UA (p50/p99)",
                         description="A simulated camera through the ingest service with a real Mosquitto "
                                     "broker (started for the run) and an OPC UA client subscription: "
                                     "the time from frame capture to the provisional verdict's MQTT "
                                     "receipt and OPC UA data change. Needs the mqtt and opcua extras. "
                                     "Prints a table on stderr and one JSON object on stdout.")
    lat.add_argument("--model", default=str(DEFAULT_MODEL_PATH), help="ONNX model (default: the shipped one)")
    lat.add_argument("--source", default="sim://neu-det?fps=30",
                     help="the camera (default sim://neu-det?fps=30: a live 30-FPS 640x480 simulator)")
    lat.add_argument("--seconds", type=float, default=30.0, help="run length (default 30)")
    lat.add_argument("--warmup", type=float, default=2.0, help="seconds not counted at the start (default 2)")
    lat.add_argument("--workers", type=int, default=2)
    lat.add_argument("--intra-op-threads", type=int, default=1)
    lat.add_argument("--max-batch", type=int, default=4)
    lat.add_argument("--max-wait-ms", type=float, default=10.0)
    lat.add_argument("--opcua-interval-ms", type=float, default=10.0,
                     help="the OPC UA client's publishing interval (default 10)")
    lat.add_argument("--mosquitto", default=None, help="the broker binary (default: mosquitto on PATH)")
    lat.add_argument("--json", action="store_true", help="JSON only (no table)")
    lat.set_defaults(func=run_line_latency)


def add_ultralytics_parser(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("ultralytics", help="ultralytics' predict loop vs this engine and pipeline",
                       description="Same ONNX file, same frames: ultralytics YOLO(onnx).predict, this "
                                   "project's Engine and its pipeline. Needs the 'ultralytics' extra.")
    u.add_argument("--onnx", required=True, help="ultralytics-layout ONNX model (written by --export)")
    u.add_argument("--frames", default=str(DEFAULT_FRAMES),
                   help="folder of images or a video file (default: the shipped NEU-DET sample)")
    u.add_argument("--seconds", type=float, default=5.0, help="per measurement (default 5)")
    u.add_argument("--rounds", type=int, default=5,
                   help="the measurements alternate in this many slices (default 5)")
    u.add_argument("--count", type=int, default=32, help="distinct frames decoded once (default 32)")
    u.add_argument("--batch-sizes", default="1,4", help="Engine batch sizes (default 1,4)")
    u.add_argument("--ultralytics-batch", type=int, default=4,
                   help="frames per batched predict call (0: skip; needs a dynamic-batch ONNX)")
    u.add_argument("--rect", action="store_true",
                   help="let ultralytics letterbox non-square frames to its minimal rectangle "
                        "(its default; off here so both sides compute the same square input)")
    u.add_argument("--pipeline-seconds", type=float, default=None,
                   help="pipeline run length (default: --seconds + 2; 0 skips the pipeline)")
    u.add_argument("--workers", type=int, default=2, help="pipeline workers (default 2)")
    u.add_argument("--intra-op-threads", type=int, default=0,
                   help="ONNX Runtime threads of the Engine runs (0 = auto, like ultralytics' session)")
    u.add_argument("--conf", type=float, default=0.25)
    u.add_argument("--iou", type=float, default=0.45)
    u.add_argument("--export", metavar="CFG", default=None,
                   help="first build CFG (e.g. yolo11n.yaml, random weights) and export it to --onnx")
    u.add_argument("--imgsz", type=int, default=256, help="export input size (with --export; default 256)")
    u.add_argument("--nc", type=int, default=6, help="classes of the exported model (with --export)")
    u.add_argument("--json", action="store_true", help="JSON only (the default output is JSON too)")
    u.set_defaults(func=run_ultralytics)


def _providers(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def _batch_sizes(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InvalidInput(f"--batch-sizes {text!r}: expected a comma list of integers") from None


def run_engine(args: argparse.Namespace) -> int:
    from app.bench.measure import check_imgsz, engine_throughput, load_engine, machine, sample_frames

    sizes = _batch_sizes(args.batch_sizes)
    if not sizes or min(sizes) < 1 or args.workers < 1 or args.seconds <= 0:
        raise InvalidInput("--batch-sizes, --workers and --seconds must be positive")
    engine = load_engine(args.model, args.intra_op_threads, _providers(args.providers))
    check_imgsz(engine, args.imgsz)
    frames = sample_frames(args.source, max(32, max(sizes)))
    results = [engine_throughput(engine, frames, b, args.seconds, args.workers, imgsz=args.imgsz)
               for b in sizes]
    out = {"bench": "engine", "model": str(args.model), "version": engine.version,
           "quantization": engine.metadata.quantization, "provider": engine.provider,
           "imgsz": list(engine.imgsz), "frame": list(frames[0].shape[:2]),
           "input": list(engine.input_size(frames[:1], args.imgsz)), "workers": args.workers,
           "intra_op_threads": args.intra_op_threads, "results": results, "machine": machine()}
    print(json.dumps(out))
    return 0


def pipeline_options(args: argparse.Namespace) -> PipelineBenchOptions:
    from app.bench.pipeline import PipelineBenchOptions

    return PipelineBenchOptions(
        model=args.model, source=args.source, seconds=args.seconds, cameras=args.cameras,
        workers=args.workers, intra_op_threads=args.intra_op_threads, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, buffer=args.buffer, queue_size=args.queue_size, loop=args.loop,
        tile_size=args.tile_size, tile_overlap=args.tile_overlap, imgsz=args.imgsz,
        decode_threads=args.decode_threads, images=args.images,
        crops=getattr(args, "crops", False), frames=not getattr(args, "crops_only", False),
        jpeg_quality=getattr(args, "jpeg_quality", 90), database=args.database,
        providers=_providers(args.providers), engine_seconds=args.engine_seconds, tracking=args.tracking,
        looks=args.looks, fill_idle=args.fill_idle, min_score=args.min_score, weak_share=args.weak_share,
        every_track=args.every_track)


def run_pipeline(args: argparse.Namespace) -> int:
    from app.bench.pipeline import run_pipeline_bench

    print(json.dumps(run_pipeline_bench(pipeline_options(args))))
    return 0


def _neu_names() -> tuple[str, ...] | None:
    data = NEU_DET / "data.yaml"
    if not data.is_file():
        return None
    import yaml

    names = yaml.safe_load(data.read_text()).get("names")
    return tuple(names) if isinstance(names, list) else None


def run_line_latency(args: argparse.Namespace) -> int:
    import sys

    from app.bench.line_latency import LineLatencyOptions, run_line_latency, table

    result = run_line_latency(LineLatencyOptions(
        model=Path(args.model), source=args.source, seconds=args.seconds, warmup_s=args.warmup,
        workers=args.workers, intra_op_threads=args.intra_op_threads, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, opcua_interval_ms=args.opcua_interval_ms, mosquitto=args.mosquitto))
    if not args.json:
        print(table(result), file=sys.stderr)
    print(json.dumps(result))
    return 0


def run_ultralytics(args: argparse.Namespace) -> int:
    from app.bench.ultralytics import UltralyticsBenchOptions, run_ultralytics_bench

    options = UltralyticsBenchOptions(
        onnx=Path(args.onnx), frames=Path(args.frames), seconds=args.seconds, rounds=args.rounds,
        count=args.count, batch_sizes=tuple(_batch_sizes(args.batch_sizes)),
        ultralytics_batch=args.ultralytics_batch, rect=args.rect, pipeline_seconds=args.pipeline_seconds,
        workers=args.workers, intra_op_threads=args.intra_op_threads, conf=args.conf, iou=args.iou,
        export=args.export, imgsz=args.imgsz, nc=args.nc, names=_neu_names() if args.export else None)
    print(json.dumps(run_ultralytics_bench(options)))
    return 0
