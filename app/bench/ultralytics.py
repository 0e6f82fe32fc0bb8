"""`bench ultralytics`: the same ONNX file and the same decoded frames through

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
imported only when this benchmark runs. ``--export CFG`` builds an ultralytics model from its YAML (no
weights are downloaded: the weights are the random initialisation) and exports it to ``--onnx``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.bench.measure import load_engine, loadavg, machine, ratio, sample_frames
from app.bench.pipeline import PipelineBenchOptions, run_pipeline_bench
from app.errors import UserError
from app.inference.postprocess import match_detections

INSTALL_HINT = "ultralytics is not installed: pip install '.[ultralytics]'"


@dataclass(frozen=True)
class UltralyticsBenchOptions:
    """The options of one comparison; the defaults are `bench ultralytics`'s."""

    onnx: Path
    frames: Path
    seconds: float = 5.0
    rounds: int = 5
    count: int = 32
    batch_sizes: tuple[int, ...] = (1, 4)
    ultralytics_batch: int = 4
    rect: bool = False
    pipeline_seconds: float | None = None
    workers: int = 2
    intra_op_threads: int = 0
    conf: float = 0.25
    iou: float = 0.45
    export: str | None = None
    imgsz: int = 256
    nc: int = 6
    names: tuple[str, ...] | None = None  # class names written into an export (with ``export``)


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


def pipeline_part(options: UltralyticsBenchOptions, seconds: float) -> PipelineBenchOptions:
    """The pipeline run of a comparison: the same file serving the frames, looping, for ``seconds``."""
    return PipelineBenchOptions(model=options.onnx, source=str(options.frames), seconds=seconds,
                                workers=options.workers, loop=True, engine_seconds=min(options.seconds, 3.0))


def run_ultralytics_bench(options: UltralyticsBenchOptions) -> dict[str, Any]:
    """One comparison as a dict (what `bench ultralytics` prints)."""
    onnx = Path(options.onnx)
    if options.seconds <= 0 or options.count < 1 or options.workers < 1 or options.rounds < 1:
        raise UserError("--seconds, --count, --rounds and --workers must be positive")
    sizes = list(options.batch_sizes)
    if not sizes or min(sizes) < 1:
        raise UserError("--batch-sizes must be positive")
    if options.export:
        export_onnx(options.export, onnx, options.imgsz, options.nc, options.names)
    if not onnx.is_file():
        raise UserError(f"--onnx {onnx}: file not found (write one with --export yolo11n.yaml)")
    if not Path(options.frames).exists():
        raise UserError(f"--frames {options.frames}: no such folder or video file")
    load_start = loadavg()
    engine = load_engine(onnx, options.intra_op_threads, None, option="--onnx")
    if engine.layout != "ultralytics":
        raise UserError(f"--onnx {onnx}: layout {engine.layout}, expected an ultralytics export [N, 4+nc, A]")
    yolo_cls = import_yolo()
    import ultralytics

    frames = sample_frames(str(options.frames), options.count, option="--frames")
    imgsz = engine.imgsz[0]
    model = yolo_cls(str(onnx), task="detect")
    check = sanity(engine, model, frames, imgsz, options.rect)

    def ul_step(chunk: list[np.ndarray]) -> None:
        src = chunk[0] if len(chunk) == 1 else chunk
        model.predict(src, imgsz=imgsz, conf=options.conf, iou=options.iou, rect=options.rect, verbose=False)

    def our_step(chunk: list[np.ndarray]) -> None:
        engine.detect(chunk, options.conf, options.iou)

    contenders = {"ultralytics/per_frame": (ul_step, 1)}
    ul_batch_error = None
    if options.ultralytics_batch > 1:
        try:
            ul_step(frames[:options.ultralytics_batch])
            contenders["ultralytics/batched"] = (ul_step, options.ultralytics_batch)
        except Exception as exc:  # e.g. a static-batch export: say so in the JSON
            ul_batch_error = f"{type(exc).__name__}: {exc}"[:300]
    contenders.update({f"engine/batch{b}": (our_step, b) for b in sizes})
    raw_input, _ = engine.preprocess(frames[:1])
    # the floor both sides sit on: ONNX Runtime alone on one prepared input (no letterbox, no NMS)
    contenders["onnxruntime/session_run"] = (lambda _chunk: engine.run(raw_input), 1)
    fps = interleaved(contenders, frames, options.seconds, options.rounds)
    ul = {k.split("/")[1]: v for k, v in fps.items() if k.startswith("ultralytics/")}
    if ul_batch_error:
        ul["batched"] = {"batch": options.ultralytics_batch, "error": ul_batch_error}
    ours = {k.split("/")[1]: v for k, v in fps.items() if k.startswith("engine/")}
    floor = fps["onnxruntime/session_run"]
    overhead = {"ultralytics_per_frame_ms": round(ul["per_frame"]["ms_per_call"] - floor["ms_per_call"], 2)}
    if "batch1" in ours:
        overhead["engine_batch1_ms"] = round(ours["batch1"]["ms_per_call"] - floor["ms_per_call"], 2)

    pipe_s = options.seconds + 2 if options.pipeline_seconds is None else options.pipeline_seconds
    pipe = None
    if pipe_s > 0:
        full = run_pipeline_bench(pipeline_part(options, pipe_s))
        pipe = {k: full[k] for k in ("fps", "frames", "dropped", "window_s", "latency_ms_p50",
                                     "latency_ms_p99", "mean_batch", "workers", "intra_op_threads",
                                     "max_batch", "engine_fps", "ratio")}

    ul_fps = ul["per_frame"]["fps"]
    ratios = {f"engine_{k}_vs_ultralytics_per_frame": ratio(v["fps"], ul_fps) for k, v in ours.items()}
    ul_batched = ul.get("batched", {}).get("fps")
    if ul_batched:
        ratios.update({f"engine_{k}_vs_ultralytics_batched": ratio(v["fps"], ul_batched)
                       for k, v in ours.items()})
    if pipe:
        ratios["pipeline_vs_ultralytics_per_frame"] = ratio(pipe["fps"], ul_fps)
    out = {
        "bench": "ultralytics", "onnx": str(onnx), "frames_source": str(options.frames),
        "frame": list(frames[0].shape[:2]), "distinct_frames": len(frames), "imgsz": list(engine.imgsz),
        "rect": options.rect, "conf": options.conf, "iou": options.iou, "seconds": options.seconds,
        "rounds": options.rounds,
        "ultralytics_version": ultralytics.__version__, "sanity": check,
        "ultralytics": ul, "engine": {**ours, "intra_op_threads": options.intra_op_threads,
                                      "provider": engine.provider},
        "onnxruntime_session_run": floor, "overhead_over_session_run": overhead,
        "pipeline": pipe, "ratios": ratios,
        "machine": {**machine(), "loadavg_start": load_start, "loadavg_end": loadavg()},
    }
    return out
