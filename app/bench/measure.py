"""What every benchmark shares: the machine it ran on, the process's CPU by pipeline role, a few
decoded frames of a source, and the engine's own throughput on them."""

from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import InvalidInput, UserError
from app.inference import Engine, ModelLoadError

THREAD_ROLES = (("capture-", "capture"), ("ingest-worker-", "workers"), ("ingest-db-writer", "writer"))


def machine() -> dict[str, Any]:
    """The CPU model and the cores this process may use."""
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


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


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


def load_engine(model: str | Path, intra_op_threads: int, providers: list[str] | None,
                option: str = "--model") -> Engine:
    """The engine under test, built as the service builds its own (the settings' inter-op threads,
    providers unless given, TensorRT cache); a model that cannot load is a user error naming ``option``."""
    from app.engine_factory import build_engine
    from app.settings import load_settings

    try:
        return build_engine(load_settings(), model_path=model, providers=providers,
                            intra_op_threads=intra_op_threads)
    except ModelLoadError as exc:
        raise UserError(f"{option}: {exc}") from None


def check_imgsz(engine: Engine, imgsz: int | None) -> None:
    try:
        engine.fit_size(imgsz)
    except ValueError as exc:
        raise InvalidInput(f"--imgsz: {exc}") from None


def sample_frames(source: str, count: int = 32, option: str = "--source") -> list[np.ndarray]:
    """Up to ``count`` frames of a source (simulator sources render as fast as asked)."""
    from app.ingest.config import CameraConfig
    from app.ingest.sources import SourceError, make_source

    if source.startswith("sim://") and "realtime=" not in source:
        source += ("&" if "?" in source else "?") + "realtime=0"
    src = make_source(CameraConfig(id="bench", source=source), where=f"{option} ")
    frames: list[np.ndarray] = []
    try:
        src.open()
        while len(frames) < count:
            frame = src.read()
            if frame is None:
                break
            frames.append(frame.image)
    except SourceError as exc:
        raise UserError(f"{option}: {exc}") from None
    finally:
        src.close()
    if not frames:
        raise UserError(f"{option} {source}: no frames")
    return frames


def engine_throughput(engine: Engine, frames: list[np.ndarray], batch: int, seconds: float, workers: int,
                      conf: float = 0.25, iou: float = 0.45, imgsz: int | None = None) -> dict[str, Any]:
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


def percentile_ms(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile of durations in seconds, in milliseconds."""
    return round(float(np.percentile(np.asarray(values), q)) * 1000, 2) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None
