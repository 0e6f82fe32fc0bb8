"""The ingest pipeline, wired: capture (app.ingest.capture: a thread per camera) -> bounded per-camera
queues (app.ingest.queues) -> detection (app.ingest.detection: micro-batches across cameras, the shared
detector and the inspection step) -> the database writer (app.ingest.writer: batched commits, journal
while the database is away), whose callbacks feed each camera's state and the alarm rules
(app.ingest.alarms).

``Pipeline(cameras_file, engine, db, data_dir).start()``; ``stop()`` drains queues, the writer and,
when the database answers, the journal. Assembled for ``serve`` and ``ingest`` by app.service.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from app import metrics as m
from app.db.session import Database
from app.inference import Engine
from app.ingest.alarms import AlarmMonitor
from app.ingest.capture import CameraRunner, Capture
from app.ingest.checkpoints import CheckpointStore, checkpoints_dir
from app.ingest.config import CameraConfig, CamerasFile
from app.ingest.detection import (
    DetectionWorkers,
    camera_context,
    check_against_model,
    model_view,
    track_items,
)
from app.ingest.latency_window import LatencyWindow
from app.ingest.parts import CameraPlace, PartBoard
from app.ingest.queues import FrameHub
from app.ingest.sources import Source, make_source
from app.ingest.writer import Item, open_writer
from app.inspection import Stored
from app.inspection.tracks import TrackRecord
from app.vocabulary import API_SOURCE, NG

log = logging.getLogger(__name__)


class Pipeline:
    """One cameras file's capture, detection and writer, started and stopped together. Raises
    CamerasConfigError (file and key named) for what only the model can judge or a bad source."""

    def __init__(self, config: CamerasFile, engine: Engine, db: Database, data_dir: str | Path, *,
                 base_dir: Path | None = None, source_factory: Callable[[CameraConfig], Source] | None = None,
                 config_name: str = "cameras file", max_det: int = 300) -> None:
        self.config = config
        self.engine = engine
        self.db = db
        self.data_dir = Path(data_dir)
        p = config.pipeline
        check_against_model(config, engine, config_name)
        self.hub = FrameHub()
        self.cameras: list[CameraRunner] = []
        checkpoints = CheckpointStore(checkpoints_dir(self.data_dir))
        for cam in config.enabled_cameras:
            where = f"{config_name}: cameras[{config.cameras.index(cam)}]."
            source = source_factory(cam) if source_factory else make_source(cam, base_dir, where)
            context = camera_context(cam, engine.names, p.conf_threshold, engine.metadata.class_thresholds)
            self.cameras.append(CameraRunner(cam, source, self.hub, context, checkpoints))
        self._by_id = {c.cfg.id: c for c in self.cameras}
        # the part under each camera, as the line says (REST, MQTT, OPC UA)
        self.parts = PartBoard([(CameraPlace(c.cfg.id, c.cfg.line, c.cfg.station), c.part)
                                for c in self.cameras])
        self.capture = Capture(self.cameras)
        self.writer = open_writer(db, self.data_dir, p.writer, on_committed=self._on_committed,
                                  on_journaled=self._on_journaled,
                                  on_tracks_committed=self._on_tracks_committed)
        self.journal = self.writer.journal
        # the model call keeps every box that some camera's threshold for its class could keep (or its
        # tracks could take: ``tracking.weak_share``)
        rules = [c.track_context or c.context for c in self.cameras]
        detect_threshold = min([p.conf_threshold] + [t for r in rules for t in r.class_thresholds.values()])
        self.detection = DetectionWorkers(engine, self.hub, self.writer, p, detect_threshold=detect_threshold,
                                          max_det=max_det)
        self.alarms = AlarmMonitor(config.alarms, db) if config.alarms else None
        self.latencies = LatencyWindow()  # capture -> commit, seconds (for the benches)
        self.started_at: float | None = None
        self._stopping = False

    @property
    def batches(self) -> int:
        return self.detection.batches

    @property
    def worker_errors(self) -> int:
        return self.detection.errors

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> Pipeline:
        self.started_at = time.monotonic()
        self.writer.start()
        self.detection.start()
        self.capture.start()
        if self.alarms is not None:
            self.alarms.start(lambda: [c.state for c in self.cameras])
        log.info("ingest started: %d cameras, %d workers, batch <= %d", len(self.cameras),
                 len(self.detection.threads), self.config.pipeline.max_batch)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful: stop reading, inspect what is queued, commit or journal every result."""
        if self._stopping:
            return
        self._stopping = True
        deadline = time.monotonic() + timeout
        if self.alarms is not None:
            self.alarms.stop()
        self.capture.stop(deadline)
        self.hub.close()
        self.detection.join(deadline)
        for cam in self.cameras:  # what is in view when the line stops is seen for the last time
            if cam.tracking is not None:
                cam.tracking.finish()
                ready, lost = cam.tracking.release()
                self.writer.submit_many(track_items(cam, ready))
                if lost:
                    log.warning("camera %s: %d tracks not stored, their best frame was not inspected to "
                                "the end", cam.cfg.id, len(lost))
        self.writer.stop(max(1.0, deadline - time.monotonic()))
        for cam in self.cameras:  # what settled since the last commit (frames dropped by policy)
            if cam.checkpoint is not None:
                cam.checkpoint.save()
        log.info("ingest stopped: %d committed, %d journal pending", self.writer.committed,
                 self.journal.pending)

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def finished(self) -> bool:
        """Every camera reached its end of stream and every frame is committed or journaled."""
        return (not self.capture.running() and self.hub.depth() == 0
                and all(c.state.inspected + c.state.dropped + c.state.skipped >= c.state.captured
                        for c in self.cameras)
                and self.writer.pending() == 0
                and all(c.state.committed + c.state.journaled >= c.state.inspected for c in self.cameras))

    def wait_finished(self, timeout: float | None = None, poll: float = 0.05) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.finished():
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(poll)
        return True

    # -- writer callbacks (writer thread) ----------------------------------------------------
    def _camera_of(self, item: Item) -> CameraRunner | None:
        """The camera a result came from; None for a frame posted over HTTP (the writer stores both)."""
        if item.result.source == API_SOURCE:
            return None
        return self._by_id.get(item.result.camera_id or "")

    def _on_committed(self, items: list[Item], stored: list[Stored]) -> None:
        now = time.perf_counter()
        for item, s in zip(items, stored, strict=True):
            cam = self._camera_of(item)
            if item.t_capture is not None:
                latency = now - item.t_capture
                m.PIPELINE_LATENCY_SECONDS.observe(latency)
                if s.created:
                    self.latencies.append(latency)
            if cam is None:
                continue
            if s.created and item.result.verdict == NG:
                cam.state.on_committed(1, ng_inspection_id=s.id)
            else:
                cam.state.on_committed(1)
            if cam.checkpoint is not None:
                cam.checkpoint.settle(item.position)
        self._save_checkpoints(items)
        if self.alarms is not None:
            self.alarms.observe(item.result for item, s in zip(items, stored, strict=True) if s.created)

    def _on_tracks_committed(self, tracks: list[TrackRecord]) -> None:
        if self.alarms is not None:
            self.alarms.observe_tracks(tracks)

    def _on_journaled(self, items: list[Item]) -> None:
        for item in items:
            cam = self._camera_of(item)
            if cam is not None:
                cam.state.on_journaled(1)
                if cam.checkpoint is not None:
                    cam.checkpoint.settle(item.position)
        self._save_checkpoints(items)

    def _save_checkpoints(self, items: list[Item]) -> None:
        """Once per batch: the checkpoints of its cameras, now that its frames are durable."""
        for camera_id in {i.result.camera_id for i in items if i.position is not None}:
            cam = self._by_id.get(camera_id or "")
            if cam is not None and cam.checkpoint is not None:
                cam.checkpoint.save()

    # -- state -------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {
            "cameras": [c.state.snapshot() | {"buffer": c.policy, "part": part_view(c)}
                        | model_view(c.cfg, self.engine)
                        | ({"tracking": c.tracking.view()} if c.tracking is not None else {})
                        for c in self.cameras],
            "database": self.db.breaker.view(),
            "journal": {"pending": self.journal.pending, "bytes": self.journal.bytes,
                        "replayed": self.writer.replayed},
            "workers": len(self.detection.threads), "batches": self.batches,
        }

    def camera(self, camera_id: str) -> CameraRunner | None:
        return self._by_id.get(camera_id)


def part_view(camera: CameraRunner) -> dict | None:
    """The camera's current part for its state (``CameraPartPublic``), None without one."""
    view = camera.part.view()
    return None if view is None else view.to_dict()
