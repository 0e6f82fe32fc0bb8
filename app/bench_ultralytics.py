"""`defect-inspect bench ultralytics`: the same ONNX file and the same decoded frames through

- ultralytics' own loop, ``YOLO(onnx, task="detect").predict(frame, imgsz=...)``, one frame per call
  (what a user's loop does) and a batched call;
- this project's ``Engine`` (batch 1 and batch 4);
- this project's camera pipeline (``bench pipeline`` machinery) reading the frames from a file source;

and prints one JSON object with the FPS of each and the ratios (project / ultralytics). The
ultralytics and Engine measurements (and a bare ``session.run`` floor) alternate in ``--rounds``
slices, so a change in the machine's load hits all of them alike. A detection
sanity check runs first: the file must have the ultralytics output layout ``[N, 4+nc, A]``, and our
detections on the first frames are matched against ultralytics' own.

ultralytics is an optional extra (``pip install '.[ultralytics]'``; it pulls torch and torchvision),
imported only inside this command. ``--export CFG`` builds an ultralytics model from its YAML (no
weights are downloaded: the weights are the random initialisation) and exports it to ``--onnx``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.errors import UserError
from app.inference.postprocess import match_detections

INSTALL_HINT = "ultralytics is not installed: pip install '.[ultralytics]'"
DEFAULT_FRAMES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det" / "images"


def add_parser(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("ultralytics", help="ultralytics' predict loop vs this engine and pipeline",
                       description="Same ONNX file, same frames: ultralytics YOLO(onnx).predict, this "
                                   "project's Engine and its pipeline. Needs the 'ultralytics' extra.")
    u.add_argument("--onnx", required=True, help="ultralytics-layout ONNX model (written by --export)")
    u.add_argument("--frames", default=str(DEFAULT_FRAMES),
                   help="folder of images or a video file (default: the NEU-DET images)")
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
    u.set_defaults(func=run)


# -- ultralytics, imported lazily ---------------------------------------------------------------
def import_yolo():
    """ultralytics' ``YOLO`` class, offline and without auto-installs; UserError when absent."""
    os.environ.setdefault("YOLO_OFFLINE", "1")       # no settings sync, no events, no downloads
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    try:
        from ultralytics import YOLO
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return YOLO


def export_onnx(cfg: str, out: Path, imgsz: int, nc: int, names: Sequence[str] | None = None) -> Path:
    """Build ``cfg`` (an ultralytics model YAML, random init) with ``nc`` classes and export it to
    ``out`` as ONNX (opset 17, dynamic batch and size)."""
    yolo_cls = import_yolo()
    from ultralytics.nn.tasks import yaml_model_load
    from ultralytics.utils import YAML

    try:
        spec = yaml_model_load(cfg)  # yolo11n.yaml -> yolo11.yaml at scale n
    except Exception as exc:
        raise UserError(f"--export {cfg}: {exc}") from None
    spec.pop("yaml_file", None)
    spec["nc"] = nc
    stem = Path(cfg).stem
    with tempfile.TemporaryDirectory(prefix="ul-export-") as tmp:
        yaml_path = Path(tmp) / f"{stem}.yaml"  # the stem keeps the scale letter (yolo11n -> n)
        YAML.save(yaml_path, spec)
        model = yolo_cls(str(yaml_path), task="detect")
        if names and len(names) == nc:
            model.model.names = dict(enumerate(names))
        with contextlib.redirect_stdout(io.StringIO()):
            written = model.export(format="onnx", imgsz=imgsz, opset=17, dynamic=True, simplify=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(written), out)
    return out


def _neu_names() -> list[str] | None:
    data = DEFAULT_FRAMES.parent / "data.yaml"
    if not data.is_file():
        return None
    import yaml

    names = yaml.safe_load(data.read_text()).get("names")
    return list(names) if isinstance(names, list) else None


# -- measurements ---------------------------------------------------------------------------------
def timed_loop(step, frames: list[np.ndarray], per_call: int, seconds: float, start: int = 0
               ) -> tuple[int, int, float]:
    """``step(list_of_frames)`` called back to back for ``seconds``: (frames, calls, elapsed)."""
    done = calls = 0
    i = start
    t0 = time.perf_counter()
    while True:
        step([frames[(i + j) % len(frames)] for j in range(per_call)])
        i += per_call
        done += per_call
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return done, calls, elapsed


def interleaved(contenders: dict, frames: list[np.ndarray], seconds: float, rounds: int) -> dict:
    """FPS of each ``name: (step, per_call)``, measured in ``rounds`` alternating slices of
    ``seconds / rounds`` each, so a change in the machine's load hits every contender alike."""
    totals = {name: [0, 0, 0.0] for name in contenders}
    for step, per_call in contenders.values():
        step(frames[:per_call])  # warm each shape
    for r in range(rounds):
        for name, (step, per_call) in contenders.items():
            done, calls, elapsed = timed_loop(step, frames, per_call, seconds / rounds, start=r * per_call)
            t = totals[name]
            t[0], t[1], t[2] = t[0] + done, t[1] + calls, t[2] + elapsed
    return {name: {"batch": contenders[name][1], "fps": round(done / elapsed, 2),
                   "ms_per_call": round(1000 * elapsed / calls, 2), "frames": done}
            for name, (done, calls, elapsed) in totals.items()}


def pipeline_args(model: Path | str, frames: Path | str, seconds: float, workers: int,
                  engine_seconds: float) -> argparse.Namespace:
    """``bench pipeline``'s options for serving ``model`` on the frames folder, as its parser makes them."""
    from app.commands.bench import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["bench", "pipeline", "--model", str(model), "--source", str(frames),
                              "--seconds", str(seconds), "--workers", str(workers), "--loop",
                              "--engine-seconds", str(engine_seconds)])


def sanity(engine, model, frames: list[np.ndarray], imgsz: int, rect: bool, top: int = 10) -> dict:
    """Layout of the raw output and agreement of the top detections of both on the first frames.

    An untrained model scores every box far below the usual thresholds, so the comparison takes each
    frame's ``top`` ultralytics boxes at a threshold just under its ``top``-th best score."""
    batch, _ = engine.preprocess(frames[:1])
    raw = engine.run(batch)
    nc = len(engine.names)
    layout_ok = engine.layout == "ultralytics" and raw.ndim == 3 and raw.shape[1] == 4 + nc
    if not layout_ok:
        raise UserError(f"--onnx {engine.model_path}: not an ultralytics-layout detector: output "
                       f"{list(raw.shape)}, layout {engine.layout}, {nc} classes (expected [N, 4+nc, A])")
    ref_total = hits = 0
    for frame in frames[:8]:
        probe = model.predict(frame, imgsz=imgsz, conf=0.0, iou=0.45, rect=rect, max_det=300,
                              verbose=False)[0]
        scores = probe.boxes.conf.cpu().numpy()
        if len(scores) == 0:
            continue
        conf = float(np.sort(scores)[::-1][min(top, len(scores)) - 1]) * 0.999
        ref = probe.boxes[probe.boxes.conf >= conf]
        [ours] = engine.detect([frame], conf_threshold=conf, iou_threshold=0.45)
        ref_total += len(ref)
        hits += match_detections(ref.xyxy.cpu().numpy(), ref.cls.cpu().numpy().astype(int),
                                 ours.xyxy, ours.class_id)
    return {"output_shape": list(raw.shape), "layout": engine.layout, "classes": nc,
            "top_boxes_compared": ref_total, "matched_iou90_same_class": hits,
            "agreement": round(hits / ref_total, 3) if ref_total else None}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run(args: argparse.Namespace) -> int:
    from app.commands.bench import _load_engine, machine, pipeline_result, sample_frames

    onnx = Path(args.onnx)
    if args.seconds <= 0 or args.count < 1 or args.workers < 1 or args.rounds < 1:
        raise UserError("--seconds, --count, --rounds and --workers must be positive")
    try:
        sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--batch-sizes {args.batch_sizes!r}: expected a comma list of integers") from None
    if not sizes or min(sizes) < 1:
        raise UserError("--batch-sizes must be positive")
    if args.export:
        export_onnx(args.export, onnx, args.imgsz, args.nc, _neu_names() if args.nc == 6 else None)
    if not onnx.is_file():
        raise UserError(f"--onnx {onnx}: file not found (write one with --export yolo11n.yaml)")
    if not Path(args.frames).exists():
        raise UserError(f"--frames {args.frames}: no such folder or video file")
    load_start = _loadavg()
    engine = _load_engine(str(onnx), args.intra_op_threads, None)
    if engine.layout != "ultralytics":
        raise UserError(f"--onnx {onnx}: layout {engine.layout}, expected an ultralytics export [N, 4+nc, A]")
    yolo_cls = import_yolo()
    import ultralytics

    frames = sample_frames(args.frames, args.count)
    imgsz = engine.imgsz[0]
    model = yolo_cls(str(onnx), task="detect")
    check = sanity(engine, model, frames, imgsz, args.rect)

    def ul_step(chunk: list[np.ndarray]) -> None:
        src = chunk[0] if len(chunk) == 1 else chunk
        model.predict(src, imgsz=imgsz, conf=args.conf, iou=args.iou, rect=args.rect, verbose=False)

    def our_step(chunk: list[np.ndarray]) -> None:
        engine.detect(chunk, args.conf, args.iou)

    contenders = {"ultralytics/per_frame": (ul_step, 1)}
    ul_batch_error = None
    if args.ultralytics_batch > 1:
        try:
            ul_step(frames[:args.ultralytics_batch])
            contenders["ultralytics/batched"] = (ul_step, args.ultralytics_batch)
        except Exception as exc:  # e.g. a static-batch export: say so in the JSON
            ul_batch_error = f"{type(exc).__name__}: {exc}"[:300]
    contenders.update({f"engine/batch{b}": (our_step, b) for b in sizes})
    raw_input, _ = engine.preprocess(frames[:1])
    # the floor both sides sit on: ONNX Runtime alone on one prepared input (no letterbox, no NMS)
    contenders["onnxruntime/session_run"] = (lambda _chunk: engine.run(raw_input), 1)
    fps = interleaved(contenders, frames, args.seconds, args.rounds)
    ul = {k.split("/")[1]: v for k, v in fps.items() if k.startswith("ultralytics/")}
    if ul_batch_error:
        ul["batched"] = {"batch": args.ultralytics_batch, "error": ul_batch_error}
    ours = {k.split("/")[1]: v for k, v in fps.items() if k.startswith("engine/")}
    floor = fps["onnxruntime/session_run"]
    overhead = {"ultralytics_per_frame_ms": round(ul["per_frame"]["ms_per_call"] - floor["ms_per_call"], 2)}
    if "batch1" in ours:
        overhead["engine_batch1_ms"] = round(ours["batch1"]["ms_per_call"] - floor["ms_per_call"], 2)

    pipe_s = args.seconds + 2 if args.pipeline_seconds is None else args.pipeline_seconds
    pipe = None
    if pipe_s > 0:
        full = pipeline_result(pipeline_args(onnx, args.frames, pipe_s, args.workers, min(args.seconds, 3.0)))
        pipe = {k: full[k] for k in ("fps", "frames", "dropped", "window_s", "latency_ms_p50",
                                     "latency_ms_p99", "mean_batch", "workers", "intra_op_threads",
                                     "max_batch", "engine_fps", "ratio")}

    ul_fps = ul["per_frame"]["fps"]
    ratios = {f"engine_{k}_vs_ultralytics_per_frame": _ratio(v["fps"], ul_fps) for k, v in ours.items()}
    ul_batched = ul.get("batched", {}).get("fps")
    if ul_batched:
        ratios.update({f"engine_{k}_vs_ultralytics_batched": _ratio(v["fps"], ul_batched)
                       for k, v in ours.items()})
    if pipe:
        ratios["pipeline_vs_ultralytics_per_frame"] = _ratio(pipe["fps"], ul_fps)
    out = {
        "bench": "ultralytics", "onnx": str(onnx), "frames_source": str(args.frames),
        "frame": list(frames[0].shape[:2]), "distinct_frames": len(frames), "imgsz": list(engine.imgsz),
        "rect": args.rect, "conf": args.conf, "iou": args.iou, "seconds": args.seconds, "rounds": args.rounds,
        "ultralytics_version": ultralytics.__version__, "sanity": check,
        "ultralytics": ul, "engine": {**ours, "intra_op_threads": args.intra_op_threads,
                                      "provider": engine.provider},
        "onnxruntime_session_run": floor, "overhead_over_session_run": overhead,
        "pipeline": pipe, "ratios": ratios,
        "machine": {**machine(), "loadavg_start": load_start, "loadavg_end": _loadavg()},
    }
    print(json.dumps(out))
    return 0
