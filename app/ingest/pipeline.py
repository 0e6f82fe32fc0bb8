"""The ingest pipeline: a capture thread per camera -> bounded per-camera queues -> inference workers
(micro-batches across cameras, the shared detector and inspection step) -> the database writer
(batched commits, journal while the database is away).

``Pipeline(cameras_file, engine, db, data_dir).start()``; ``stop()`` drains queues, the writer and,
when the database answers, the journal. Used by the FastAPI lifespan and ``defect-inspect ingest``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app import images
from app import metrics as m
from app.db.session import Database
from app.detections import Detections
from app.inference import Engine, tiling
from app.ingest.config import CameraConfig, CamerasConfigError, CamerasFile
from app.ingest.journal import Journal
from app.ingest.queues import FrameHub, QueueClosed
from app.ingest.sources import Frame, Source, SourceError, make_source
from app.ingest.state import CameraState
from app.ingest.writer import DbWriter, Item
from app.inspection import CameraContext, InspectionResult, Stored, Timings, inspect_frame, run_detector
from app.inspection.store import apply_image_policy

log = logging.getLogger(__name__)


def check_against_model(config: CamerasFile, engine: Engine, config_name: str = "cameras file") -> None:
    """What of the cameras file only the model can judge: threshold class names and ``imgsz``.
    Raises CamerasConfigError naming the file and key."""
    names = list(engine.names)
    for cam in config.enabled_cameras:
        where = f"{config_name}: cameras[{config.cameras.index(cam)}]."
        unknown = sorted(set(cam.thresholds) - set(names) - {"default"})
        if unknown:
            raise CamerasConfigError(
                f"{where}thresholds: unknown class {', '.join(map(repr, unknown))}; "
                f"the model's classes are {', '.join(names)} (or 'default')")
        if cam.imgsz is not None:
            try:
                engine.fit_size(cam.imgsz)
            except ValueError as exc:
                raise CamerasConfigError(f"{where}imgsz: {exc}") from None


@dataclass
class Job:
    camera: CameraRunner
    frame: Frame


class CameraRunner:
    """One camera: its source, capture thread (reconnect with exponential backoff), state and rules."""

    def __init__(self, cfg: CameraConfig, source: Source, hub: FrameHub, context: CameraContext) -> None:
        self.cfg = cfg
        self.source = source
        self.hub = hub
        self.context = context
        self.policy = cfg.buffer or ("drop-oldest" if source.live else "block")
        self.state = CameraState(cfg.id, cfg.line, cfg.station, source.describe())
        self._stop = threading.Event()
        self._reconnect = threading.Event()
        self._reading_since: float | None = None
        self.thread = threading.Thread(target=self._run, name=f"capture-{cfg.id}", daemon=True)
        hub.add_camera(cfg.id, cfg.queue_size, self.policy, on_drop=lambda _job: self.state.on_dropped(),
                       on_depth=self.state.set_queue_depth)

    # -- control -----------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check_stall(self, now: float) -> bool:
        """Watchdog: a read that has waited longer than stall_timeout_s -> close and reconnect."""
        since = self._reading_since
        if since is not None and now - since > self.cfg.stall_timeout_s and not self._reconnect.is_set():
            log.warning("camera %s: no frame for %.1f s, reconnecting", self.cfg.id, now - since)
            self.state.set_error(f"stalled: no frame for {self.cfg.stall_timeout_s:g} s")
            self._reconnect.set()
            self.source.close()
            return True
        return False

    # -- capture thread ----------------------------------------------------------------------
    def _run(self) -> None:
        rc = self.cfg.reconnect
        backoff = rc.initial_s
        first = True
        try:
            while not self._stop.is_set():
                if not first:
                    self.state.on_reconnect()
                first = False
                self._reconnect.clear()
                try:
                    self.source.open()
                except SourceError as exc:
                    self._failed(str(exc))
                    self._stop.wait(backoff)
                    backoff = min(backoff * rc.multiplier, rc.max_s)
                    continue
                self.state.set_connected(True)
                try:
                    delivered = self._capture()
                except SourceError as exc:
                    if self._stop.is_set():  # closed because we are stopping: no error
                        break
                    self._failed(str(exc))
                    if self._stop.wait(backoff):
                        break
                    backoff = min(backoff * rc.multiplier, rc.max_s)
                    continue
                if delivered:
                    backoff = rc.initial_s
                if self._stop.is_set():
                    break
                if not self.cfg.loop:  # a file or folder came to its end
                    self.state.finished = True
                    log.info("camera %s: end of stream after %d frames", self.cfg.id, self.state.captured)
                    break
        except QueueClosed:
            pass
        except Exception as exc:  # never die silently: the state shows why the camera stopped
            log.exception("camera %s: capture thread failed", self.cfg.id)
            self._failed(f"capture failed: {exc}")
        finally:
            self._reading_since = None
            self.source.close()
            self.state.set_connected(False)

    def _failed(self, message: str) -> None:
        self._reading_since = None
        self.state.set_connected(False)
        self.state.set_error(message)
        self.source.close()
        log.warning("camera %s: %s", self.cfg.id, message)

    def _capture(self) -> int:
        """Read until the end of stream or stop; returns how many frames were delivered."""
        delivered = 0
        interval = 1.0 / self.cfg.fps_cap if self.cfg.fps_cap else 0.0
        next_due = 0.0
        while not self._stop.is_set():
            self._reading_since = time.monotonic()
            try:
                frame = self.source.read()
            except SourceError as exc:
                if self._reconnect.is_set():  # the watchdog closed the source under the read
                    raise SourceError(f"stalled: no frame for {self.cfg.stall_timeout_s:g} s") from exc
                raise
            finally:
                self._reading_since = None
            if self._reconnect.is_set():
                raise SourceError(f"stalled: no frame for {self.cfg.stall_timeout_s:g} s")
            if frame is None:
                return delivered
            if interval:
                now = time.monotonic()
                if now < next_due - (0.2 * interval if self.source.live else 0.0):
                    if self.source.live:
                        continue  # fps cap: a live camera's extra frames are skipped
                    self._stop.wait(next_due - now)  # a file is paced instead
                    now = time.monotonic()
                next_due = (next_due if next_due > now - interval else now) + interval
            self.state.on_captured()
            self.hub.put(self.cfg.id, Job(self, frame))
            delivered += 1
        return delivered


class Pipeline:
    def __init__(self, config: CamerasFile, engine: Engine, db: Database, data_dir: str | Path, *,
                 base_dir: Path | None = None, source_factory: Callable[[CameraConfig], Source] | None = None,
                 config_name: str = "cameras file", max_det: int = 300) -> None:
        self.config = config
        self.engine = engine
        self.db = db
        self.data_dir = Path(data_dir)
        self.max_det = max_det
        p = config.pipeline
        self.hub = FrameHub()
        self.cameras: list[CameraRunner] = []
        names = list(engine.names)
        check_against_model(config, engine, config_name)
        thresholds_used = [p.conf_threshold]
        for cam in config.enabled_cameras:
            where = f"{config_name}: cameras[{config.cameras.index(cam)}]."
            per_class = {n: cam.threshold_for(n, p.conf_threshold) for n in names}
            thresholds_used.extend(per_class.values())
            source = source_factory(cam) if source_factory else make_source(cam, base_dir, where)
            context = CameraContext(camera_id=cam.id, line=cam.line, station=cam.station, roi=cam.roi,
                                    class_thresholds=per_class)
            self.cameras.append(CameraRunner(cam, source, self.hub, context))
        self.detect_threshold = min(thresholds_used)
        self._by_id = {c.cfg.id: c for c in self.cameras}
        w = p.writer
        self.journal = Journal(self.data_dir / "journal", int(w.journal_max_mb * 2**20),
                               int(w.journal_segment_mb * 2**20))
        self.writer = DbWriter(db, self.journal, self.data_dir, batch_rows=w.batch_rows, batch_ms=w.batch_ms,
                               queue_size=w.queue_size, retry_s=w.retry_s, on_committed=self._on_committed,
                               on_journaled=self._on_journaled)
        self.latencies: deque[float] = deque(maxlen=200_000)  # capture -> commit, seconds
        self._workers: list[threading.Thread] = []
        self._monitor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.batches = 0
        self.started_at: float | None = None
        self.worker_errors = 0

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> Pipeline:
        self.started_at = time.monotonic()
        self.writer.start()
        for k in range(self.config.pipeline.workers):
            t = threading.Thread(target=self._work, name=f"ingest-worker-{k}", daemon=True)
            t.start()
            self._workers.append(t)
        for cam in self.cameras:
            cam.start()
        self._monitor = threading.Thread(target=self._watch, name="ingest-watchdog", daemon=True)
        self._monitor.start()
        log.info("ingest started: %d cameras, %d workers, batch <= %d", len(self.cameras),
                 len(self._workers), self.config.pipeline.max_batch)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful: stop reading, inspect what is queued, commit or journal every result."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for cam in self.cameras:
            cam.stop()
        deadline = time.monotonic() + timeout
        for cam in self.cameras:  # a blocked put finishes as workers make room
            cam.thread.join(max(0.1, deadline - time.monotonic()))
        self.hub.close()
        for t in self._workers:
            t.join(max(0.1, deadline - time.monotonic()))
        self.writer.stop(max(1.0, deadline - time.monotonic()))
        if self._monitor is not None:
            self._monitor.join(2.0)
        log.info("ingest stopped: %d committed, %d journal pending", self.writer.committed,
                 self.journal.pending)

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def finished(self) -> bool:
        """Every camera reached its end of stream and every frame is committed or journaled."""
        return (all(not c.thread.is_alive() for c in self.cameras) and self.hub.depth() == 0
                and all(c.state.inspected + c.state.dropped >= c.state.captured for c in self.cameras)
                and self.writer.pending() == 0
                and all(c.state.committed + c.state.journaled >= c.state.inspected for c in self.cameras))

    def wait_finished(self, timeout: float | None = None, poll: float = 0.05) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.finished():
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(poll)
        return True

    # -- workers -----------------------------------------------------------------------------
    def _work(self) -> None:
        p = self.config.pipeline
        while True:
            batch: list[Job] = self.hub.get_batch(p.max_batch, p.max_wait_ms / 1000.0)
            if not batch:
                if self.hub.closed and self.hub.depth() == 0:
                    return
                continue
            try:
                self._inspect(batch)
            except Exception:  # a bad frame must not kill the worker; the frames are counted lost
                self.worker_errors += 1
                log.exception("inspection of a batch of %d frames failed", len(batch))
                for job in batch:
                    job.camera.state.set_error("inspection failed (see log)")

    def _inspect(self, batch: list[Job]) -> None:
        p = self.config.pipeline
        m.BATCH_SIZE.observe(len(batch))
        with self._lock:
            self.batches += 1
        # one model input per frame, or per window of a tiled camera's frame; one run per input size
        # (cameras with their own imgsz), usually one run for all of them
        images: list[np.ndarray] = []
        windows: list[list[tuple[int, int]] | None] = []
        by_size: dict[int | None, list[int]] = {}  # imgsz -> indexes into images
        for job in batch:
            cfg = job.camera.cfg
            if cfg.tile_size is None:
                by_size.setdefault(cfg.imgsz, []).append(len(images))
                images.append(job.frame.image)
                windows.append(None)
            else:
                parts, offsets = tiling.split(job.frame.image, cfg.tile_size, cfg.tile_overlap)
                by_size.setdefault(None, []).extend(range(len(images), len(images) + len(parts)))
                images.extend(parts)
                windows.append(offsets)
        found: list[Detections] = [Detections.empty(self.engine.names)] * len(images)
        cost = np.zeros((len(images), 2))  # inference ms, postprocess ms: each input's part of its run
        for size, index in by_size.items():
            group, group_inf, group_post = run_detector(
                self.engine, [images[i] for i in index], self.detect_threshold, p.iou_threshold, self.max_det,
                imgsz=size)
            for i, d in zip(index, group, strict=True):
                found[i] = d
            cost[index] = (group_inf / len(index), group_post / len(index))
        dets: list[Detections] = []
        costs: list[np.ndarray] = []
        at = 0
        for offsets in windows:
            k = 1 if offsets is None else len(offsets)
            if offsets is None:
                dets.append(found[at])
            else:
                dets.append(tiling.merge(found[at:at + k], offsets, self.engine.names, max_det=self.max_det))
            costs.append(cost[at:at + k].sum(axis=0))
            at += k
        items: list[Item] = []
        for job, d, (inf_ms, post_ms) in zip(batch, dets, costs, strict=True):
            cam, frame = job.camera, job.frame
            timings = Timings(inference_ms=float(inf_ms), postprocess_ms=float(post_ms))
            result = inspect_frame(frame.image, d, model_version=self.engine.version, context=cam.context,
                                   captured_at=frame.captured_at, timings=timings, source="stream")
            timings.total_ms = (time.perf_counter() - frame.t_capture) * 1000.0
            crops = self._prepare_images(result, cam.cfg)
            cam.state.on_inspected()
            items.append(Item(result, frame.t_capture, crops))
        self.writer.submit_many(items)  # one hand-off per batch: the writer wakes per batch, not per frame

    @staticmethod
    def _prepare_images(result: InspectionResult, cfg: CameraConfig) -> list[bytes]:
        """Apply the camera's image policy now (JPEG bytes are small to queue); the defect crops."""
        frame = result.image
        apply_image_policy(result, cfg.images)
        keep_crops = cfg.crops and frame is not None and result.image_bytes is not None
        return images.crop_jpegs(frame, result.detections.xyxy) if keep_crops else []

    # -- writer callbacks (writer thread) ----------------------------------------------------
    def _on_committed(self, items: list[Item], stored: list[Stored]) -> None:
        now = time.perf_counter()
        for item, s in zip(items, stored, strict=True):
            cam = self._by_id.get(item.result.camera_id or "")
            if item.t_capture is not None:
                latency = now - item.t_capture
                m.PIPELINE_LATENCY_SECONDS.observe(latency)
                if s.created:
                    self.latencies.append(latency)
            if cam is None:
                continue
            if s.created and item.result.verdict == "NG":
                cam.state.on_committed(1, ng_inspection_id=s.id)
            else:
                cam.state.on_committed(1)

    def _on_journaled(self, items: list[Item]) -> None:
        for item in items:
            cam = self._by_id.get(item.result.camera_id or "")
            if cam is not None:
                cam.state.on_journaled(1)

    # -- watchdog ----------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stopping.wait(0.25):
            now = time.monotonic()
            for cam in self.cameras:
                cam.check_stall(now)

    # -- state -------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {
            "cameras": [c.state.snapshot() | {"buffer": c.policy} | self._model_view(c.cfg)
                        for c in self.cameras],
            "database": {"up": self.writer.db_up, "last_error": self.writer.last_error},
            "journal": {"pending": self.journal.pending, "bytes": self.journal.bytes,
                        "replayed": self.writer.replayed},
            "workers": len(self._workers), "batches": self.batches,
        }

    def _model_view(self, cfg: CameraConfig) -> dict:
        """How the model sees this camera's frames: at which input size (longer side), whole or tiled."""
        tiles = None if cfg.tile_size is None else {"size": cfg.tile_size, "overlap": cfg.tile_overlap}
        return {"imgsz": cfg.imgsz or max(self.engine.imgsz), "tiles": tiles}

    def camera(self, camera_id: str) -> CameraRunner | None:
        return self._by_id.get(camera_id)
