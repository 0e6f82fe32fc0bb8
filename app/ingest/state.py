"""Per-camera state of the ingest pipeline (GET /api/v1/cameras) and the Prometheus series it feeds."""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import datetime

from app import metrics as m
from app.schemas.ingest import CameraCounters
from app.vocabulary import utcnow


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def add(self, n: int = 1, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            self._times.extend([t] * n)
            self._trim(t)

    def _trim(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._times and self._times[0] < cutoff:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        t = time.monotonic() if now is None else now
        with self._lock:
            self._trim(t)
            if not self._times:
                return 0.0
            span = max(min(self.window_s, t - self._times[0]), 1e-3)
            return len(self._times) / span if len(self._times) > 1 else 1.0 / self.window_s


class CameraState:
    """Counters and health of one camera; thread-safe, also mirrored into the metrics."""

    def __init__(self, camera_id: str, line: str | None = None, station: str | None = None,
                 source: str = "") -> None:
        self.camera_id, self.line, self.station, self.source = camera_id, line, station, source
        self._lock = threading.Lock()
        self.connected = False
        self.finished = False
        self.captured = 0
        self.inspected = 0
        self.committed = 0
        self.journaled = 0
        self.dropped = 0
        self.skipped = 0  # captured, tracked by motion, not inspected (tracking.looks)
        self.reconnects = 0  # recoveries: frames flowing again after a failure
        self.attempts = 0  # every open of the source, the first one included
        self.failures: dict[str, int] = {}  # failure class -> how many times
        self.error_kind: str | None = None  # the class of last_error
        self.queue_depth = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.last_frame_at: datetime | None = None
        self.last_frame_mono: float | None = None
        self.last_ng_inspection_id: int | None = None
        self.last_ng_frame_uid: str | None = None
        self.checkpoint: int | None = None
        self.resumed_from: int | None = None
        self.fps_in = RateMeter()
        self.fps_out = RateMeter()
        m.CAMERA_LABELS.register(camera_id)  # a configured camera: its own label in every series
        m.CAMERA_UP.labels(camera=camera_id).set(0)
        for stage in m.FRAME_STAGES:
            m.FRAMES_TOTAL.labels(camera=camera_id, stage=stage)
        m.FRAMES_DROPPED_TOTAL.labels(camera=camera_id)
        m.CAMERA_RECOVERIES_TOTAL.labels(camera=camera_id)
        m.QUEUE_DEPTH.labels(camera=camera_id).set(0)

    def set_connected(self, up: bool) -> None:
        with self._lock:
            self.connected = up
        m.CAMERA_UP.labels(camera=self.camera_id).set(1 if up else 0)

    def on_failure(self, message: str, kind: str) -> None:
        """The source failed: why (message and class) until it delivers frames again."""
        with self._lock:
            self.last_error = message
            self.error_kind = kind
            self.last_error_at = utcnow()
            self.failures[kind] = self.failures.get(kind, 0) + 1
        m.CAMERA_FAILURES_TOTAL.labels(camera=self.camera_id, kind=kind).inc()

    def set_error(self, message: str) -> None:
        """An error of this camera's frames that is no source failure (an inspection failed)."""
        with self._lock:
            self.last_error = message
            self.last_error_at = utcnow()

    def on_attempt(self) -> None:
        with self._lock:
            self.attempts += 1

    def on_flowing(self) -> None:
        """The first frame of a connection: after a failure this is a recovery; the error is over (its
        time stays in last_error_at)."""
        with self._lock:
            if self.last_error is None:
                return
            self.reconnects += 1
            self.last_error = None
            self.error_kind = None
        m.CAMERA_RECOVERIES_TOTAL.labels(camera=self.camera_id).inc()

    def on_captured(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.captured += 1
            self.last_frame_at = utcnow()
            self.last_frame_mono = now
        self.fps_in.add(now=now)
        m.FRAMES_TOTAL.labels(camera=self.camera_id, stage="captured").inc()

    def on_dropped(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n
        m.FRAMES_TOTAL.labels(camera=self.camera_id, stage="dropped").inc(n)
        m.FRAMES_DROPPED_TOTAL.labels(camera=self.camera_id).inc(n)

    def on_skipped(self, n: int = 1) -> None:
        """Captured, tracked by motion, not inspected (the camera's ``tracking.looks``)."""
        with self._lock:
            self.skipped += n
        m.FRAMES_TOTAL.labels(camera=self.camera_id, stage="skipped").inc(n)

    def on_inspected(self, n: int = 1) -> None:
        with self._lock:
            self.inspected += n
        self.fps_out.add(n)
        m.FRAMES_TOTAL.labels(camera=self.camera_id, stage="inspected").inc(n)

    def on_journaled(self, n: int = 1) -> None:
        with self._lock:
            self.journaled += n
        m.FRAMES_TOTAL.labels(camera=self.camera_id, stage="journaled").inc(n)

    def on_committed(self, n: int = 1, ng_inspection_id: int | None = None,
                     ng_frame_uid: str | None = None) -> None:
        with self._lock:
            self.committed += n
            if ng_inspection_id is not None:
                self.last_ng_inspection_id = ng_inspection_id
            if ng_frame_uid is not None:
                self.last_ng_frame_uid = ng_frame_uid
        m.FRAMES_TOTAL.labels(camera=self.camera_id, stage="committed").inc(n)

    def set_checkpoint(self, position: int, resumed_from: int | None = None) -> None:
        """A finite source's checkpoint (app.ingest.checkpoints): every frame before ``position`` is
        settled; ``resumed_from``: where this run started reading."""
        with self._lock:
            self.checkpoint = position
            if resumed_from is not None:
                self.resumed_from = resumed_from

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth = depth
        m.QUEUE_DEPTH.labels(camera=self.camera_id).set(depth)

    def snapshot(self) -> dict:
        """This camera's entry of GET /cameras (:class:`app.schemas.CameraCounters`), as JSON values."""
        with self._lock:
            view = CameraCounters(
                id=self.camera_id, line=self.line, station=self.station, source=self.source,
                connected=self.connected, finished=self.finished,
                fps_in=round(self.fps_in.rate(), 2), fps_out=round(self.fps_out.rate(), 2),
                captured=self.captured, inspected=self.inspected, committed=self.committed,
                journaled=self.journaled, dropped=self.dropped, skipped=self.skipped,
                reconnects=self.reconnects,
                attempts=self.attempts, failures=dict(self.failures), error_kind=self.error_kind,
                queue_depth=self.queue_depth, last_error=self.last_error, last_error_at=self.last_error_at,
                last_frame_at=self.last_frame_at, last_ng_inspection_id=self.last_ng_inspection_id,
                checkpoint=self.checkpoint, resumed_from=self.resumed_from,
            )
        return view.model_dump(mode="json")
