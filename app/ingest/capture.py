"""Capture: each camera's source read into frames by its own thread, with reconnect and exponential
backoff, an fps cap, a stall watchdog, and the camera's state (GET /api/v1/cameras). Frames go into the
camera's bounded queue of the ``FrameHub``; what happens to them there is app.ingest.detection's job."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from app.ingest.checkpoints import CameraCheckpoint, CheckpointStore
from app.ingest.config import CameraConfig
from app.ingest.queues import FrameHub, QueueClosed
from app.ingest.sources import Frame, Source, SourceError
from app.ingest.state import CameraState
from app.inspection import CameraContext

log = logging.getLogger(__name__)

WATCHDOG_INTERVAL_S = 0.25


@dataclass
class Job:
    """A captured frame and its camera, queued for detection."""

    camera: CameraRunner
    frame: Frame


class CameraRunner:
    """One camera: its source, capture thread (reconnect with exponential backoff), state and rules."""

    def __init__(self, cfg: CameraConfig, source: Source, hub: FrameHub, context: CameraContext,
                 checkpoints: CheckpointStore | None = None) -> None:
        self.cfg = cfg
        self.source = source
        self.hub = hub
        self.context = context
        self.policy = cfg.buffer or ("drop-oldest" if source.live else "block")
        self.state = CameraState(cfg.id, cfg.line, cfg.station, source.describe())
        # a finite source read once (not looped) goes on from its checkpoint after a restart
        self.checkpoint = (CameraCheckpoint(cfg.id, source, checkpoints, self.state.set_checkpoint)
                           if checkpoints is not None and not (source.live or cfg.loop) else None)
        self._stop = threading.Event()
        self._reconnect = threading.Event()
        self._reading_since: float | None = None
        self.thread = threading.Thread(target=self._run, name=f"capture-{cfg.id}", daemon=True)
        hub.add_camera(cfg.id, cfg.queue_size, self.policy, on_drop=self._dropped,
                       on_depth=self.state.set_queue_depth)

    def _dropped(self, job: Job) -> None:
        self.state.on_dropped()
        if self.checkpoint is not None:
            self.checkpoint.settle(job.frame.index)

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
                    if self.checkpoint is not None:
                        self.checkpoint.opened()
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
                    if self.checkpoint is not None:
                        self.checkpoint.ended()
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
            if self.checkpoint is not None:
                self.checkpoint.read(frame.index)
            self.hub.put(self.cfg.id, Job(self, frame))
            delivered += 1
        return delivered


class Capture:
    """Every camera's capture thread, and the watchdog thread that reconnects a stalled one."""

    def __init__(self, cameras: list[CameraRunner]) -> None:
        self.cameras = cameras
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="ingest-watchdog", daemon=True)

    def start(self) -> None:
        for cam in self.cameras:
            cam.start()
        self._watchdog.start()

    def stop(self, deadline: float) -> None:
        """Stop reading; wait (until the ``time.monotonic()`` deadline) for every capture thread, whose
        blocked put finishes as the workers make room."""
        self._stopping.set()
        for cam in self.cameras:
            cam.stop()
        for cam in self.cameras:
            cam.thread.join(max(0.1, deadline - time.monotonic()))
        if self._watchdog.is_alive():
            self._watchdog.join(2.0)

    def running(self) -> bool:
        """Some camera is still reading (a finite source has not reached its end)."""
        return any(cam.thread.is_alive() for cam in self.cameras)

    def _watch(self) -> None:
        while not self._stopping.wait(WATCHDOG_INTERVAL_S):
            now = time.monotonic()
            for cam in self.cameras:
                cam.check_stall(now)
