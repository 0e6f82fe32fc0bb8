"""`defect-inspect bench`: throughput of the detector alone (``bench engine``, by batch size) and of the
whole camera pipeline (``bench pipeline``: capture -> queues -> workers -> batched commits), with the
raw engine measured in the same run on the same frames so the two can be compared (``ratio``)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from app.errors import UserError


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
    q.add_argument("--database", default=None, help="database URL (default: a fresh SQLite file)")
    q.add_argument("--providers", default=None, help="comma list of ONNX Runtime providers")
    q.add_argument("--engine-seconds", type=float, default=None,
                   help="length of the raw engine measurement (default min(seconds, 5))")
    q.add_argument("--json", action="store_true", help="JSON only (the default output is JSON too)")
    q.set_defaults(func=run_pipeline)

    from app.bench_ultralytics import add_parser as add_ultralytics  # ultralytics itself is imported lazily

    add_ultralytics(sub)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores}


THREAD_ROLES = (("capture-", "capture"), ("ingest-worker-", "workers"), ("ingest-db-writer", "writer"))


def cpu_snapshot() -> tuple[float, dict[str, float]]:
    """Process CPU seconds, and CPU seconds by pipeline role (capture threads, inference workers,
    database writer, the rest) from /proc/self/task (Linux; an empty split elsewhere)."""
    total = time.process_time()
    roles: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except (OSError, TypeError):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        role = next((r for prefix, r in THREAD_ROLES if thread.name.startswith(prefix)), "other")
        roles[role] = roles.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return total, roles


def _providers(text: str | None) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def _load_engine(model: str, intra: int, providers: str | None):
    from app.inference import Engine, ModelLoadError

    try:
        return Engine(model, providers=_providers(providers), intra_op_threads=intra)
    except ModelLoadError as exc:
        raise UserError(f"--model: {exc}") from None


def _check_imgsz(engine, imgsz: int | None) -> None:
    try:
        engine.fit_size(imgsz)
    except ValueError as exc:
        raise UserError(f"--imgsz: {exc}") from None


def sample_frames(source: str, count: int = 32) -> list[np.ndarray]:
    """Up to ``count`` frames of a source (simulator sources render as fast as asked)."""
    from app.ingest.config import CameraConfig
    from app.ingest.sources import SourceError, make_source

    if source.startswith("sim://") and "realtime=" not in source:
        source += ("&" if "?" in source else "?") + "realtime=0"
    src = make_source(CameraConfig(id="bench", source=source), where="--source ")
    frames: list[np.ndarray] = []
    try:
        src.open()
        while len(frames) < count:
            frame = src.read()
            if frame is None:
                break
            frames.append(frame.image)
    except SourceError as exc:
        raise UserError(f"--source: {exc}") from None
    finally:
        src.close()
    if not frames:
        raise UserError(f"--source {source}: no frames")
    return frames


def engine_throughput(engine, frames: list[np.ndarray], batch: int, seconds: float, workers: int,
                      conf: float = 0.25, iou: float = 0.45, imgsz: int | None = None) -> dict:
    """Images per second of ``workers`` threads each running detect() on batches of ``batch``."""
    done = [0] * workers
    batches = [0] * workers
    stop = threading.Event()

    def loop(k: int) -> None:
        i = k * batch
        while not stop.is_set():
            chunk = [frames[(i + j) % len(frames)] for j in range(batch)]
            engine.detect(chunk, conf, iou, imgsz=imgsz)
            i += batch
            done[k] += batch
            batches[k] += 1

    engine.detect(frames[:batch], conf, iou, imgsz=imgsz)  # warm this batch shape
    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(workers)]
    t0, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"batch": batch, "workers": workers, "fps": round(sum(done) / elapsed, 2),
            "ms_per_batch": round(1000 * elapsed * workers / max(sum(batches), 1), 2),
            "cpu_ms_per_frame": round(1000 * cpu / max(sum(done), 1), 3)}


def run_engine(args: argparse.Namespace) -> int:
    try:
        sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--batch-sizes {args.batch_sizes!r}: expected a comma list of integers") from None
    if not sizes or min(sizes) < 1 or args.workers < 1 or args.seconds <= 0:
        raise UserError("--batch-sizes, --workers and --seconds must be positive")
    engine = _load_engine(args.model, args.intra_op_threads, args.providers)
    _check_imgsz(engine, args.imgsz)
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


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values), q)) * 1000, 2) if values else None


def run_pipeline(args: argparse.Namespace) -> int:
    print(json.dumps(pipeline_result(args)))
    return 0


def pipeline_result(args: argparse.Namespace) -> dict:
    """One ``bench pipeline`` run (the options of that command in ``args``) as a dict."""
    import yaml

    from app.db.migrate import upgrade
    from app.db.session import Database
    from app.ingest.config import parse_cameras
    from app.ingest.pipeline import Pipeline

    if args.cameras < 1 or args.seconds <= 0 or args.workers < 1 or args.max_batch < 1:
        raise UserError("--cameras, --seconds, --workers and --max-batch must be positive")
    cams = []
    for k in range(args.cameras):
        source = args.source
        if source.startswith("sim://") and args.cameras > 1 and "seed=" not in source:
            source += ("&" if "?" in source else "?") + f"seed={k}"
        cam: dict = {"id": f"bench-{k}", "source": source, "queue_size": args.queue_size,
                     "images": args.images, "loop": args.loop, "stall_timeout_s": 30,
                     "decode_threads": args.decode_threads}
        if args.tile_size is not None:
            cam |= {"tile_size": args.tile_size, "tile_overlap": args.tile_overlap}
        if args.imgsz is not None:
            cam["imgsz"] = args.imgsz
        if args.buffer:
            cam["buffer"] = args.buffer
        cams.append(cam)
    # the cameras file's own validation (and error messages naming the key) checks the options
    config = parse_cameras(yaml.safe_dump({
        "pipeline": {"workers": args.workers, "intra_op_threads": args.intra_op_threads,
                     "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
        "cameras": cams}, sort_keys=False), "bench pipeline options")
    engine = _load_engine(args.model, args.intra_op_threads, args.providers)
    _check_imgsz(engine, args.imgsz)
    tmp = tempfile.TemporaryDirectory(prefix="inspect-bench-")
    db_url = args.database or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    upgrade(db_url)
    # the engine alone, on the same frames with the same workers and batch, in two slices bracketing
    # the pipeline run: the VM's speed drifts by up to +-20 % within minutes, and the mean of a slice
    # before and one after tracks that drift better than one slice taken afterwards
    frames = sample_frames(args.source, 32)
    eng_s = (args.engine_seconds or min(args.seconds, 5.0)) / 2
    before = engine_throughput(engine, frames, args.max_batch, eng_s, args.workers, imgsz=args.imgsz)
    db = Database(db_url)
    pipeline = Pipeline(config, engine, db, Path(tmp.name) / "data", config_name="--source")
    t0, cpu_start = time.perf_counter(), cpu_snapshot()
    warm_cpu = cpu_start
    pipeline.start()
    end = t0 + args.seconds
    # steady state: the rate is taken from the end of a short warm-up (queues and batches filling)
    warm_at, warm_counts = t0 + min(1.0, 0.2 * args.seconds), None
    while time.perf_counter() < end and not pipeline.finished():
        if warm_counts is None and time.perf_counter() >= warm_at:
            warm_at, warm_counts = time.perf_counter(), [c.state.committed for c in pipeline.cameras]
            warm_cpu = cpu_snapshot()
        time.sleep(0.02)
    finished_early = pipeline.finished()
    t_end, cpu_end = time.perf_counter(), cpu_snapshot()
    states = [c.state.snapshot() for c in pipeline.cameras]
    if warm_counts is None or finished_early:  # a short file: the whole run is the window
        warm_at, warm_counts, warm_cpu = t0, [0] * len(states), cpu_start
    elapsed = t_end - warm_at
    committed = [s["committed"] - w for s, w in zip(states, warm_counts, strict=True)]
    latencies = list(pipeline.latencies)
    pipeline.stop()
    db.dispose()
    fps = sum(committed) / elapsed
    per_frame = 1000 / max(sum(committed), 1)
    cpu_ms = (cpu_end[0] - warm_cpu[0]) * per_frame
    # a thread that ends inside the window (a finished file's capture thread) drops out of the split
    by_role = {r: round((cpu_end[1][r] - warm_cpu[1].get(r, 0.0)) * per_frame, 3)
               for r in ("capture", "workers", "writer") if r in cpu_end[1]}
    after = engine_throughput(engine, frames, args.max_batch, eng_s, args.workers, imgsz=args.imgsz)
    engine_fps = (before["fps"] + after["fps"]) / 2
    engine_cpu_ms = (before["cpu_ms_per_frame"] + after["cpu_ms_per_frame"]) / 2
    out = {
        "bench": "pipeline", "model": str(args.model), "version": engine.version,
        "quantization": engine.metadata.quantization, "provider": engine.provider, "source": args.source,
        "cameras": args.cameras, "seconds": round(t_end - t0, 2), "window_s": round(elapsed, 2),
        "frames": sum(committed),
        "fps": round(fps, 2), "per_camera_fps": [round(c / elapsed, 2) for c in committed],
        "captured": sum(s["captured"] for s in states), "dropped": sum(s["dropped"] for s in states),
        "latency_ms_p50": _percentile(latencies, 50), "latency_ms_p99": _percentile(latencies, 99),
        "engine_fps": round(engine_fps, 2), "ratio": round(fps / engine_fps, 3) if engine_fps else None,
        "engine_fps_before": before["fps"], "engine_fps_after": after["fps"],
        # CPU time of the whole process per frame: on saturated cores, engine / pipeline CPU per frame
        # is the share of the pipeline's CPU that goes into inference (less noisy than the fps ratio)
        "cpu_ms_per_frame": round(cpu_ms, 3), "engine_cpu_ms_per_frame": round(engine_cpu_ms, 3),
        "cpu_ratio": round(engine_cpu_ms / cpu_ms, 3) if cpu_ms else None,
        "cpu_ms_per_frame_by_role": by_role,
        "mean_batch": round(sum(s["inspected"] for s in states) / max(pipeline.batches, 1), 2),
        "workers": args.workers, "intra_op_threads": args.intra_op_threads, "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms, "buffer": pipeline.cameras[0].policy,
        "decode_threads": args.decode_threads, "tile_size": args.tile_size, "camera_imgsz": args.imgsz,
        "database": db_url.split("://", 1)[0], "frame": list(frames[0].shape[:2]),
        "imgsz": list(engine.imgsz), "machine": machine(),
    }
    tmp.cleanup()
    return out
