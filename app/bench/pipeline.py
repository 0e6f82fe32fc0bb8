"""`bench pipeline`: one camera-pipeline run (capture -> queues -> workers -> batched commits) with the
raw engine measured on the same frames, with the same workers and batch, in the same run."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from app.bench.measure import (
    check_imgsz,
    cpu_snapshot,
    engine_throughput,
    load_engine,
    machine,
    percentile_ms,
    sample_frames,
)
from app.errors import InvalidInput


@dataclass(frozen=True)
class PipelineBenchOptions:
    """The options of one run; the defaults are `bench pipeline`'s."""

    model: str | Path
    source: str
    seconds: float = 10.0
    cameras: int = 1
    workers: int = 2
    intra_op_threads: int = 1
    max_batch: int = 4
    max_wait_ms: float = 10.0
    buffer: str | None = None  # block | drop-oldest; None: the cameras file's default for the source
    queue_size: int = 8
    loop: bool = False
    tile_size: int | None = None
    tile_overlap: int = 32
    imgsz: int | None = None
    decode_threads: int = 1
    images: str = "never"
    crops: bool = False  # also store one crop per defect of stored frames
    frames: bool = True  # store whole frames (False: crops only)
    jpeg_quality: int = 90
    database: str | None = None
    providers: list[str] | None = None
    engine_seconds: float | None = None
    tracking: bool = False  # the cameras track defects; a simulator source's truth scores the tracks
    looks: int | None = None  # with tracking: inspect each region of the material this many times
    fill_idle: bool = False  # with looks: also inspect frames in between while the detector has room
    min_score: float | None = None  # with tracking: tracking.min_score (None: the camera's default)
    weak_share: float | None = None  # with tracking: tracking.weak_share (None: the camera's default)
    every_track: bool = False  # with tracking: every track is a defect (min_score and weak_share null)


def camera_entries(options: PipelineBenchOptions) -> list[dict[str, Any]]:
    """The cameras file entries of the run: ``cameras`` cameras reading the source."""
    cams = []
    for k in range(options.cameras):
        source = options.source
        if source.startswith("sim://") and options.cameras > 1 and "seed=" not in source:
            source += ("&" if "?" in source else "?") + f"seed={k}"
        cam: dict[str, Any] = {"id": f"bench-{k}", "source": source, "queue_size": options.queue_size,
                               "images": options.images, "crops": options.crops, "frames": options.frames,
                               "loop": options.loop, "stall_timeout_s": 30,
                               "decode_threads": options.decode_threads}
        if options.tile_size is not None:
            cam |= {"tile_size": options.tile_size, "tile_overlap": options.tile_overlap}
        if options.imgsz is not None:
            cam["imgsz"] = options.imgsz
        if options.buffer:
            cam["buffer"] = options.buffer
        if options.tracking or options.looks:  # without --looks every frame, whatever a camera's default
            tracking: dict[str, Any] = {"enabled": True, "looks": options.looks,
                                        "fill_idle": options.fill_idle}
            if options.every_track:
                tracking |= {"min_score": None, "weak_share": None}
            score = {"min_score": options.min_score, "weak_share": options.weak_share}
            tracking |= {key: value for key, value in score.items() if value is not None}
            cam["tracking"] = tracking
        cams.append(cam)
    return cams


def track_figures(cameras: list) -> dict[str, Any]:
    """Tracks of the run's cameras (``CameraRunner``s with tracking) and, where their frames carried the
    simulator's truth, the score of the tracks against it (app.ingest.truth_score)."""
    from app.ingest.truth_score import score_records

    records, truth, sightings, speeds, passed, detected, spare = [], {}, 0, [], set(), set(), 0
    for k, cam in enumerate(cameras):
        tracking = cam.tracking
        passed.update(f"{k}:{d}" for d in tracking.passed)
        detected.update(f"{k}:{d}" for d in tracking.detected)
        spare += tracking.spare
        for t in tracking.ended:
            records.append([((k, s.frame_index), s.box) for s in t.sightings])
            sightings += t.hits
        for index, boxes in tracking.truth.items():
            truth[(k, index)] = [replace(b, defect_id=f"{k}:{b.defect_id}") for b in boxes]
        speeds.append(tracking.view()["motion"]["speed_px_s"])
    out: dict[str, Any] = {"tracks": len(records), "detections": sightings,
                           "detections_per_track": round(sightings / len(records), 2) if records else None,
                           "speed_px_s_at_end": speeds, "spare_inspections": spare}
    if truth:
        out["truth"] = score_records(records, truth, passed=passed, detected=detected)
    return out
def stored_images(db: Any) -> tuple[int, int]:
    """Rows committed and the bytes on disk of their frames and crops."""
    from sqlalchemy import func, select

    from app.db.models import Inspection

    with db.session() as session:
        rows, size = session.execute(select(
            func.count(), func.coalesce(func.sum(Inspection.image_size + Inspection.crop_size), 0))).one()
    return int(rows), int(size)


def run_pipeline_bench(options: PipelineBenchOptions) -> dict[str, Any]:
    """One run as a dict (what `bench pipeline` prints)."""
    from app.db.migrate import upgrade
    from app.db.session import Database
    from app.ingest.config import parse_cameras
    from app.ingest.pipeline import Pipeline
    from app.storage_health import HEALTH

    o = options
    if o.cameras < 1 or o.seconds <= 0 or o.workers < 1 or o.max_batch < 1:
        raise InvalidInput("--cameras, --seconds, --workers and --max-batch must be positive")
    # the cameras file's own validation (and error messages naming the key) checks the options
    config = parse_cameras(yaml.safe_dump({
        "pipeline": {"workers": o.workers, "intra_op_threads": o.intra_op_threads,
                     "max_batch": o.max_batch, "max_wait_ms": o.max_wait_ms},
        "cameras": camera_entries(o)}, sort_keys=False), "bench pipeline options")
    if not 1 <= o.jpeg_quality <= 100:
        raise InvalidInput("--jpeg-quality must be 1 to 100")
    HEALTH.options.jpeg_quality = o.jpeg_quality
    engine = load_engine(o.model, o.intra_op_threads, o.providers)
    check_imgsz(engine, o.imgsz)
    tmp = tempfile.TemporaryDirectory(prefix="inspect-bench-")
    db_url = o.database or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    upgrade(db_url)
    # the engine alone, on the same frames with the same workers and batch, in two slices bracketing
    # the pipeline run: the VM's speed drifts by up to +-20 % within minutes, and the mean of a slice
    # before and one after tracks that drift better than one slice taken afterwards
    frames = sample_frames(o.source, 32)
    eng_s = (o.engine_seconds or min(o.seconds, 5.0)) / 2
    before = engine_throughput(engine, frames, o.max_batch, eng_s, o.workers, imgsz=o.imgsz)
    db = Database(db_url)
    pipeline = Pipeline(config, engine, db, Path(tmp.name) / "data", config_name="--source")
    t0, cpu_start = time.perf_counter(), cpu_snapshot()
    warm_cpu = cpu_start
    pipeline.start()
    end = t0 + o.seconds
    # steady state: the rate is taken from the end of a short warm-up (queues and batches filling)
    warm_at, warm_counts = t0 + min(1.0, 0.2 * o.seconds), None
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
    latencies = pipeline.latencies.to_list()
    pipeline.stop()
    tracks = track_figures(pipeline.cameras) if o.tracking or o.looks else None
    stored_rows, stored_bytes = stored_images(db)
    db.dispose()
    fps = sum(committed) / elapsed
    per_frame = 1000 / max(sum(committed), 1)
    cpu_ms = (cpu_end[0] - warm_cpu[0]) * per_frame
    # a thread that ends inside the window (a finished file's capture thread) drops out of the split
    by_role = {r: round((cpu_end[1][r] - warm_cpu[1].get(r, 0.0)) * per_frame, 3)
               for r in ("capture", "workers", "writer") if r in cpu_end[1]}
    after = engine_throughput(engine, frames, o.max_batch, eng_s, o.workers, imgsz=o.imgsz)
    engine_fps = (before["fps"] + after["fps"]) / 2
    engine_cpu_ms = (before["cpu_ms_per_frame"] + after["cpu_ms_per_frame"]) / 2
    out = {
        "bench": "pipeline", "model": str(o.model), "version": engine.version,
        "quantization": engine.metadata.quantization, "provider": engine.provider, "source": o.source,
        "cameras": o.cameras, "seconds": round(t_end - t0, 2), "window_s": round(elapsed, 2),
        "frames": sum(committed),
        "fps": round(fps, 2), "per_camera_fps": [round(c / elapsed, 2) for c in committed],
        "captured": sum(s["captured"] for s in states), "dropped": sum(s["dropped"] for s in states),
        "skipped": sum(s["skipped"] for s in states),
        "captured_fps": round(sum(s["captured"] for s in states) / (t_end - t0), 2),
        "latency_ms_p50": percentile_ms(latencies, 50), "latency_ms_p99": percentile_ms(latencies, 99),
        "engine_fps": round(engine_fps, 2), "ratio": round(fps / engine_fps, 3) if engine_fps else None,
        "engine_fps_before": before["fps"], "engine_fps_after": after["fps"],
        # CPU time of the whole process per frame: on saturated cores, engine / pipeline CPU per frame
        # is the share of the pipeline's CPU that goes into inference (less noisy than the fps ratio)
        "cpu_ms_per_frame": round(cpu_ms, 3), "engine_cpu_ms_per_frame": round(engine_cpu_ms, 3),
        "cpu_ratio": round(engine_cpu_ms / cpu_ms, 3) if cpu_ms else None,
        "cpu_ms_per_frame_by_role": by_role,
        "mean_batch": round(sum(s["inspected"] for s in states) / max(pipeline.batches, 1), 2),
        "workers": o.workers, "intra_op_threads": o.intra_op_threads, "max_batch": o.max_batch,
        "max_wait_ms": o.max_wait_ms, "buffer": pipeline.cameras[0].policy,
        "decode_threads": o.decode_threads, "tile_size": o.tile_size, "camera_imgsz": o.imgsz,
        # what the image store costs: bytes on disk (frames and crops) per committed frame, all of the run
        "images": o.images, "crops": o.crops, "frames_stored": o.frames, "jpeg_quality": o.jpeg_quality,
        "stored_bytes": stored_bytes,
        "stored_bytes_per_frame": round(stored_bytes / stored_rows) if stored_rows else 0,
        "database": db_url.split("://", 1)[0], "frame": list(frames[0].shape[:2]),
        "imgsz": list(engine.imgsz), "machine": machine(),
    }
    if tracks is not None:
        out["tracking"] = tracks
    tmp.cleanup()
    return out
