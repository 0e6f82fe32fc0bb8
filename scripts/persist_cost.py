"""CPU cost of ``persist_results`` per frame: N realistic NG results (D defects each, no image, the
camera pipeline's case) stored in batches into a fresh migrated SQLite file (WAL), as the ingest
writer stores them. Prints one JSON line per batch size with CPU ms/frame (``time.process_time``).

    .venv/bin/python scripts/persist_cost.py --frames 2000 --defects 5 --batches 4,32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from app.db.migrate import upgrade
from app.db.session import Database
from app.detections import Detections
from app.inspection import CameraContext, InspectionResult, Timings, inspect_frame, persist_results

NAMES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")


def make_results(n: int, defects: int, seed: int) -> list[InspectionResult]:
    rng = np.random.default_rng(seed)
    frame = np.zeros((480, 640, 3), np.uint8)
    ctx = CameraContext("line-1-cam-1", line="L1", station="S1")
    out = []
    for _ in range(n):
        xy = rng.uniform(0, 400, (defects, 2)).astype(np.float32)
        wh = rng.uniform(10, 200, (defects, 2)).astype(np.float32)
        dets = Detections(np.hstack([xy, xy + wh]), rng.uniform(0.25, 1.0, defects),
                          rng.integers(0, len(NAMES), defects), NAMES)
        r = inspect_frame(frame, dets, model_version="neu-det-yolov5s-cbam-256-v1", context=ctx,
                          captured_at=datetime.now(UTC), source="stream",
                          timings=Timings(1.0, 15.0, 1.0, 17.0))
        r.image = None  # the pipeline drops the frame before the writer (images never)
        out.append(r)
    return out


def measure(batch: int, frames: int, defects: int, load_rows: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        db = Database(url)
        results = make_results(frames, defects, seed=batch)
        kwargs = {} if load_rows else {"load_rows": False}
        # warm-up batch (statement caches, camera row), not counted
        with db.session() as s:
            persist_results(s, make_results(batch, defects, seed=999), data_dir=Path(tmp),
                            image_policy="never", **kwargs)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for start in range(0, frames, batch):
            with db.session() as s:
                persist_results(s, results[start:start + batch], data_dir=Path(tmp), image_policy="never",
                                **kwargs)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        db.dispose()
    return {"batch": batch, "frames": frames, "defects": defects, "load_rows": load_rows,
            "cpu_ms_per_frame": round(cpu * 1000 / frames, 3),
            "wall_ms_per_frame": round(wall * 1000 / frames, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--defects", type=int, default=5)
    p.add_argument("--batches", default="4,32")
    p.add_argument("--no-load-rows", action="store_true", help="the ingest writer's path (ids only)")
    a = p.parse_args()
    for b in (int(x) for x in a.batches.split(",")):
        print(json.dumps(measure(b, a.frames, a.defects, not a.no_load_rows)), flush=True)


if __name__ == "__main__":
    main()
