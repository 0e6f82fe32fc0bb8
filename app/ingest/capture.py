"""Capture: each camera's source read into frames by its own thread, with reconnect and exponential
backoff (reset once frames flow again), an fps cap, a watchdog that restarts a silent source, and the
camera's state (GET /api/v1/cameras). Frames go into the camera's bounded queue of the ``FrameHub``;
what happens to them there is app.ingest.detection's job."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from app.ingest.camera_tracking import LOOK, SPARE, CameraTracking
from app.ingest.checkpoints import CameraCheckpoint, CheckpointStore
from app.ingest.config import CameraConfig
from app.ingest.failures import FailureKind
from app.ingest.frame_images import track_crops
from app.ingest.parts import CurrentPart
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
    spare: bool = False  # an extra frame between the looks (``tracking.fill_idle``): it may give way


class CameraRunner:
    """One camera: its source, capture thread (reconnect with exponential backoff that starts over once
    frames flow), state and rules. The watchdog gives up on a source that is silent too long: no first
    frame within the open timeout, or no next frame within ``stall_timeout_s``."""

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
        self.open_timeout_s = cfg.open_timeout()
        self.tracking = (CameraTracking(cfg.tracking, crop=track_crops(cfg),
                                        thresholds=context.class_thresholds)
                         if cfg.tracking.enabled else None)
        # the rules of the boxes its tracks take: the camera's, or from ``weak_share`` of its thresholds
        self.track_context = (context.thresholds_times(cfg.tracking.weak_share)
                              if cfg.tracking.enabled and cfg.tracking.weak_share is not None else None)
        self.part = CurrentPart()  # the part under the camera, as the line says (app.ingest.parts)
        self._stop = threading.Event()
        self._aborted = threading.Event()  # the watchdog gave up on this session ...
        self._abort_reason: tuple[str, FailureKind] = ("aborted", FailureKind.ERROR)  # ... for this reason
        self._waiting: tuple[float, float, bool] | None = None  # since, limit, still opening
        self._session_frames = 0
        self.thread = threading.Thread(target=self._run, name=f"capture-{cfg.id}", daemon=True)
        hub.add_camera(cfg.id, cfg.queue_size, self.policy, on_drop=self._dropped,
                       on_depth=self.state.set_queue_depth)

    def _dropped(self, job: Job) -> None:
        if job.spare:  # an extra frame gave way to a newer one: skipped, as if it had never been sent
            self.state.on_skipped()
        else:
            self.state.on_dropped()
        if self.tracking is not None:
            self.tracking.forget(job.frame, spare=job.spare)
        if self.checkpoint is not None:
            self.checkpoint.settle(job.frame.index)

    # -- control -----------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.source.abort(FailureKind.ENDED, "stopping")

    def check_stall(self, now: float) -> bool:
        """Watchdog: a source silent for longer than its limit is aborted (its decoder killed) and the
        capture thread reconnects; aborted again at every tick until the blocked call returns."""
        waiting = self._waiting
        if waiting is None:
            return False
        since, limit, opening = waiting
        if now - since <= limit:
            return False
        if opening:
            kind, message = FailureKind.TIMEOUT, f"no frame within {limit:g} s of connecting"
        else:
            kind, message = FailureKind.STALLED, f"stalled: no frame for {limit:g} s"
        if not self._aborted.is_set():
            log.warning("camera %s: %s, restarting its source", self.cfg.id, message)
            self._abort_reason = (message, kind)
            self._aborted.set()
        self.source.abort(kind, message)
        return True

    # -- capture thread ----------------------------------------------------------------------
    def _run(self) -> None:
        rc = self.cfg.reconnect
        backoff = rc.initial_s
        try:
            while not self._stop.is_set():
                self._aborted.clear()
                self._session_frames = 0
                self.state.on_attempt()
                try:
                    self._open_and_capture()
                except SourceError as exc:
                    if self._stop.is_set():  # closed because we are stopping: no error
                        break
                    # the watchdog's reason, whatever the aborted source said
                    self._failed(*(self._abort_reason if self._aborted.is_set() else (str(exc), exc.kind)))
                    if self._session_frames:  # frames flowed since the last failure: start over
                        backoff = rc.initial_s
                    if self._stop.wait(backoff):
                        break
                    backoff = min(backoff * rc.multiplier, rc.max_s)
                    continue
                if self._session_frames:
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
            self._failed(f"capture failed: {exc}", FailureKind.ERROR)
        finally:
            self._waiting = None
            self.source.close()
            self.state.set_connected(False)

    def _failed(self, message: str, kind: FailureKind) -> None:
        self._waiting = None
        self.state.on_failure(message, kind)  # why first: a client that sees it down sees the reason
        self.state.set_connected(False)
        self.source.close()
        log.warning("camera %s: %s [%s]", self.cfg.id, message, kind)

    def _open_and_capture(self) -> None:
        self._waiting = (time.monotonic(), self.open_timeout_s, True)
        try:
            self.source.open()
        finally:
            self._waiting = None
        if self._aborted.is_set():  # the open came back just as the watchdog gave up on it
            raise SourceError(*self._abort_reason)
        if self.checkpoint is not None:
            self.checkpoint.opened()
        self.state.set_connected(True)
        self._capture()

    def _capture(self) -> None:
        """Read until the end of stream or stop (``_session_frames`` counts the frames delivered)."""
        interval = 1.0 / self.cfg.fps_cap if self.cfg.fps_cap else 0.0
        next_due = 0.0
        opening_since = time.monotonic()
        while not self._stop.is_set():
            first = self._session_frames == 0
            self._waiting = ((opening_since, self.open_timeout_s, True) if first
                             else (time.monotonic(), self.cfg.stall_timeout_s, False))
            try:
                frame = self.source.read()
            finally:
                self._waiting = None
            if self._aborted.is_set():  # a slow source that cannot be aborted came back late
                raise SourceError(*self._abort_reason)
            if frame is None:
                return
            if first:
                self.state.on_flowing()
            self._session_frames += 1
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
            if self.tracking is not None:
                self.tracking.on_captured(frame)
            h, w = frame.image.shape[:2]  # after the motion: a part starting here starts at its offset
            frame.part = self.part.stamp(frame.motion, (w, h))
            look = LOOK
            if self.tracking is not None:
                room = self.tracking.config.fill_idle and self.hub.depth(self.cfg.id) == 0
                look = self.tracking.should_inspect(frame, detector_has_room=room)
            if look is None:
                self.state.on_skipped()  # tracked by motion, counted, not inspected
                if self.checkpoint is not None:
                    self.checkpoint.settle(frame.index)
                continue
            self.hub.put(self.cfg.id, Job(self, frame, spare=look == SPARE))


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
