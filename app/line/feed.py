"""What the line integrations announce, taken off the inspection path: :class:`InspectionFeed` gets
the ids of newly stored inspections from the database writer (a deque append, never blocking), loads
them in its own thread after the commit (one SELECT per batch) as their public models, watches the
cameras' states for up/down changes, and hands both to its subclass (the MQTT publisher, the OPC UA
server)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, selectinload

from app.db.models import Inspection
from app.line.shifts import Counts, ShiftCounters
from app.schemas import CameraCounters, InspectionPublic
from app.vocabulary import NG

log = logging.getLogger(__name__)

LOAD_BATCH = 200  # inspections loaded per SELECT


def load_inspections(session: Session, ids: list[int]) -> list[InspectionPublic]:
    """The stored inspections ``ids`` in id order, as GET /api/v1/inspections/{id} shows them."""
    rows = session.scalars(select(Inspection).where(Inspection.id.in_(ids))
                           .options(selectinload(Inspection.defects)).order_by(Inspection.id)).all()
    return [InspectionPublic.from_row(r) for r in rows]


class ShiftSoFar(NamedTuple):
    """One camera's inspections in the current shift, as stored, and where the camera sits."""

    counts: Counts
    line: str | None
    station: str | None


def shift_counts(session: Session, started: datetime) -> tuple[dict[str | None, ShiftSoFar], int]:
    """Per camera id: the inspections captured since ``started``; and the highest inspection id the
    counts cover (later ones are counted as they are delivered)."""
    upto = int(session.scalar(select(func.coalesce(func.max(Inspection.id), 0))) or 0)
    rows = session.execute(
        select(Inspection.camera_id, func.count(), func.sum(case((Inspection.verdict == NG, 1), else_=0)),
               func.max(Inspection.line), func.max(Inspection.station))
        .where(Inspection.captured_at >= started, Inspection.id <= upto)
        .group_by(Inspection.camera_id)).all()
    return {camera: ShiftSoFar(Counts(int(n), int(ng or 0)), line, station)
            for camera, n, ng, line, station in rows}, upto


class InspectionFeed:
    """The feed's thread and inbox; subclasses implement ``deliver_inspections``,
    ``deliver_camera`` and ``count_drops``. ``cameras``: the camera states
    (``CameraState.snapshot`` dicts), looked at every ``poll_s``."""

    thread_name = "line-feed"

    def __init__(self, session_factory: Callable[[], Session] | None, queue_size: int,
                 cameras: Callable[[], list[dict[str, Any]]] | None = None, poll_s: float = 0.5,
                 retry_max_s: float = 30.0) -> None:
        self.session_factory = session_factory
        self.queue_size = queue_size
        self.cameras = cameras
        self.poll_s = poll_s
        self.retry_max_s = retry_max_s
        self._inbox: deque[int] = deque()
        self._inbox_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop_feed = threading.Event()
        self._feed_thread: threading.Thread | None = None
        self._camera_up: dict[str, bool] = {}
        self.counters: ShiftCounters | None = None  # set by a subclass that shows shift counters

    # -- what subclasses do -----------------------------------------------------------------------
    def deliver_inspections(self, inspections: list[InspectionPublic]) -> None:
        raise NotImplementedError

    def deliver_camera(self, camera: CameraCounters) -> None:
        raise NotImplementedError

    def count_drops(self, n: int) -> None:
        raise NotImplementedError

    def show_counters(self, cameras: list[str]) -> None:
        """Show the shift counters of ``cameras`` (after seeding, at a shift start)."""

    def where(self, camera: str, line: str | None, station: str | None) -> None:
        """Where a camera seen in the seeded counts sits (for its topics)."""

    @staticmethod
    def camera_key(camera_id: str | None) -> str:
        """The counters' key of a camera; ``_`` for inspections without one."""
        return camera_id or "_"

    def tick(self) -> None:
        """Called by the feed's thread every round: a shift that started shows every counter at 0."""
        if self.counters is not None and self.counters.roll():
            self.show_counters(self.counters.cameras())

    def seed_counters(self) -> None:
        """Count what the current shift stored before this process started (the feed's thread, once)."""
        if self.counters is None or self.session_factory is None:
            return
        started = self.counters.started
        try:
            with self.session_factory() as session:
                found, upto = shift_counts(session, started)
        except Exception as exc:  # the database is away: the counters start from zero
            log.warning("%s: shift counters not read from the database (%s); counting from zero",
                        self.thread_name, type(exc).__name__)
            return
        counts = {self.camera_key(camera): so_far.counts for camera, so_far in found.items()}
        for camera, so_far in found.items():
            self.where(self.camera_key(camera), so_far.line, so_far.station)
        if self.counters.seed(counts, started, upto):
            self.show_counters(sorted(counts))

    # -- API --------------------------------------------------------------------------------------
    def inspections_stored(self, ids: list[int]) -> None:
        """The ids of newly stored inspections (after their commit). Never blocks: beyond
        ``queue_size`` waiting ids the newest are dropped and counted."""
        with self._inbox_lock:
            room = max(0, self.queue_size - len(self._inbox))
            self._inbox.extend(ids[:room])
        if len(ids) > room:
            self.count_drops(len(ids) - room)
        self._wake.set()

    @property
    def waiting(self) -> int:
        """Ids not loaded yet."""
        return len(self._inbox)

    def start_feed(self) -> None:
        self._feed_thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._feed_thread.start()

    def stop_feed(self, timeout: float = 5.0) -> None:
        """Deliver what waits (while the database answers), then end the thread."""
        self._stop_feed.set()
        self._wake.set()
        if self._feed_thread is not None:
            self._feed_thread.join(timeout)
            self._feed_thread = None

    # -- thread -----------------------------------------------------------------------------------
    def _take(self) -> list[int]:
        with self._inbox_lock:
            return [self._inbox.popleft() for _ in range(min(LOAD_BATCH, len(self._inbox)))]

    def _give_back(self, ids: list[int]) -> None:
        with self._inbox_lock:
            self._inbox.extendleft(reversed(ids))

    def _run(self) -> None:
        backoff = 0.5
        self.seed_counters()
        while True:
            stopping = self._stop_feed.is_set()
            try:
                self._watch_cameras()
                self.tick()
            except Exception:
                log.exception("%s: camera states or counters not delivered", self.thread_name)
            ids = self._take()
            if ids and self.session_factory is not None:
                try:
                    with self.session_factory() as session:
                        inspections = load_inspections(session, ids)
                except Exception as exc:  # the database went away after the commit: try again later
                    self._give_back(ids)
                    log.warning("%s: cannot load stored inspections (%s); retrying in %.1f s",
                                self.thread_name, type(exc).__name__, backoff)
                    if stopping:
                        return
                    self._stop_feed.wait(backoff)
                    backoff = min(backoff * 2, self.retry_max_s)
                    continue
                backoff = 0.5
                try:
                    self.deliver_inspections(inspections)
                except Exception:
                    log.exception("%s: %d inspections not delivered", self.thread_name, len(inspections))
                continue
            if stopping:
                return
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _watch_cameras(self) -> None:
        """Deliver a camera's state when it goes up or down, and once at the start."""
        if self.cameras is None:
            return
        for cam in self.cameras():
            up = bool(cam.get("connected"))
            if self._camera_up.get(cam["id"]) != up:
                self._camera_up[cam["id"]] = up
                self.deliver_camera(CameraCounters.model_validate(cam))
