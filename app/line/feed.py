"""What the line integrations announce, taken off the inspection path: :class:`InspectionFeed` gets
the ids of newly stored inspections and tracked defects (a camera with tracking: one per physical
defect, when its track is stored) from the database writer (a deque append, never blocking), loads
them in its own thread after the commit (one SELECT per kind and batch) as their public models, in
the order they were stored (a track after its best frame), watches the cameras' states for up/down
changes, and hands them to its subclass (the MQTT publisher, the OPC UA server)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, selectinload

from app.background import BackgroundLoop
from app.db.models import Defect, Inspection, Track
from app.line.shifts import Counts, ShiftCounters
from app.schemas import CameraCounters, InspectionPublic
from app.schemas.tracks import TrackPublic
from app.vocabulary import NG

log = logging.getLogger(__name__)

LOAD_BATCH = 200  # stored records loaded per batch
RETRY_FIRST_S = 0.5  # the first wait after the database failed a load; doubled up to retry_max_s
INSPECTION, TRACK = "inspection", "track"  # the kinds of record the inbox names


class StoredRecord(NamedTuple):
    """A newly stored record the feed is told of: its kind (INSPECTION or TRACK) and id."""

    kind: str
    id: int


def load_inspections(session: Session, ids: list[int]) -> list[InspectionPublic]:
    """The stored inspections ``ids`` in id order, as GET /api/v1/inspections/{id} shows them."""
    rows = session.scalars(select(Inspection).where(Inspection.id.in_(ids))
                           .options(selectinload(Inspection.defects)).order_by(Inspection.id)).all()
    return [InspectionPublic.from_row(r) for r in rows]


def load_tracks(session: Session, ids: list[int]) -> list[TrackPublic]:
    """The stored tracks ``ids`` in id order, as GET /api/v1/tracks lists them."""
    rows = session.execute(select(Track, Defect).outerjoin(Defect, Defect.track_id == Track.id)
                           .where(Track.id.in_(ids)).order_by(Track.id)).all()
    return [TrackPublic.from_row(t, d) for t, d in rows]


class ShiftSoFar(NamedTuple):
    """One camera's inspections and tracked defects in the current shift, as stored, and where the
    camera sits."""

    counts: Counts
    line: str | None
    station: str | None


class SeededCounts(NamedTuple):
    """What the current shift stored before this process started: per camera id its counts and where
    it sits, and the highest inspection and track ids the counts cover (later ones are counted as they
    are delivered)."""

    cameras: dict[str | None, ShiftSoFar]
    upto_inspection: int
    upto_track: int


def shift_counts(session: Session, started: datetime) -> SeededCounts:
    """Per camera id: the inspections captured since ``started`` and the tracked defects whose track
    ended (its last frame captured) since then."""
    upto = int(session.scalar(select(func.coalesce(func.max(Inspection.id), 0))) or 0)
    upto_track = int(session.scalar(select(func.coalesce(func.max(Track.id), 0))) or 0)
    rows = session.execute(
        select(Inspection.camera_id, func.count(), func.sum(case((Inspection.verdict == NG, 1), else_=0)),
               func.max(Inspection.line), func.max(Inspection.station))
        .where(Inspection.captured_at >= started, Inspection.id <= upto)
        .group_by(Inspection.camera_id)).all()
    found = {camera: ShiftSoFar(Counts(int(n), int(ng or 0)), line, station)
             for camera, n, ng, line, station in rows}
    tracked = session.execute(
        select(Track.camera_id, func.count(), func.max(Track.line), func.max(Track.station))
        .where(Track.ended_at >= started, Track.id <= upto_track).group_by(Track.camera_id)).all()
    for camera, n, line, station in tracked:
        so_far = found.get(camera, ShiftSoFar(Counts(), line, station))
        found[camera] = so_far._replace(counts=replace(so_far.counts, defects=int(n)))
    return SeededCounts(found, upto, upto_track)


class InspectionFeed:
    """The feed's thread and inbox; subclasses implement ``deliver_inspections``, ``deliver_tracks``,
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
        self._inbox: deque[StoredRecord] = deque()
        self._inbox_lock = threading.Lock()
        # on stop it delivers what waits (while the database answers), then ends
        self._feed_loop = BackgroundLoop(self.thread_name, self._feed_step, poll_s, drain=True)
        self._seeded = False
        self._backoff = RETRY_FIRST_S
        self._camera_shown: dict[str, tuple[bool, str | None]] = {}  # up, part id: as last delivered
        self.counters: ShiftCounters | None = None  # set by a subclass that shows shift counters

    # -- what subclasses do -----------------------------------------------------------------------
    def deliver_inspections(self, inspections: list[InspectionPublic]) -> None:
        raise NotImplementedError

    def deliver_tracks(self, tracks: list[TrackPublic]) -> None:
        """Tracked defects, each after its best frame's inspection was delivered."""
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
                seeded = shift_counts(session, started)
        except Exception as exc:  # the database is away: the counters start from zero
            log.warning("%s: shift counters not read from the database (%s); counting from zero",
                        self.thread_name, type(exc).__name__)
            return
        counts = {self.camera_key(camera): so_far.counts for camera, so_far in seeded.cameras.items()}
        for camera, so_far in seeded.cameras.items():
            self.where(self.camera_key(camera), so_far.line, so_far.station)
        if self.counters.seed(counts, started, seeded.upto_inspection, seeded.upto_track):
            self.show_counters(sorted(counts))

    # -- API --------------------------------------------------------------------------------------
    def inspections_stored(self, ids: list[int]) -> None:
        """The ids of newly stored inspections (after their commit). Never blocks: beyond
        ``queue_size`` waiting records the newest are dropped and counted."""
        self._receive([StoredRecord(INSPECTION, i) for i in ids])

    def tracks_stored(self, ids: list[int]) -> None:
        """The ids of newly stored tracks (tracked defects), after their commit; as above."""
        self._receive([StoredRecord(TRACK, i) for i in ids])

    def _receive(self, records: list[StoredRecord]) -> None:
        with self._inbox_lock:
            room = max(0, self.queue_size - len(self._inbox))
            self._inbox.extend(records[:room])
        if len(records) > room:
            self.count_drops(len(records) - room)
        self._feed_loop.wake()

    @property
    def waiting(self) -> int:
        """Ids not loaded yet."""
        return len(self._inbox)

    def start_feed(self) -> None:
        self._feed_loop.start()

    def stop_feed(self, timeout: float = 5.0) -> None:
        """Deliver what waits (while the database answers), then end the thread."""
        self._feed_loop.stop(timeout)

    @property
    def feed_stopping(self) -> bool:
        return self._feed_loop.stopping

    # -- thread -----------------------------------------------------------------------------------
    def _take(self) -> list[StoredRecord]:
        with self._inbox_lock:
            return [self._inbox.popleft() for _ in range(min(LOAD_BATCH, len(self._inbox)))]

    def _give_back(self, records: list[StoredRecord]) -> None:
        with self._inbox_lock:
            self._inbox.extendleft(reversed(records))

    def _feed_step(self) -> bool:
        """One step of the feed's loop: camera states and counters, then one batch of stored records
        loaded and delivered; True when it delivered (more may wait)."""
        if not self._seeded:
            self._seeded = True
            self.seed_counters()
        try:
            self._watch_cameras()
            self.tick()
        except Exception:
            log.exception("%s: camera states or counters not delivered", self.thread_name)
        records = self._take()
        if not records or self.session_factory is None:
            return False
        try:
            with self.session_factory() as session:
                inspections, tracks = self._load(session, records)
        except Exception as exc:  # the database went away after the commit: try again later
            self._give_back(records)
            log.warning("%s: cannot load stored records (%s); retrying in %.1f s",
                        self.thread_name, type(exc).__name__, self._backoff)
            if self._feed_loop.stopping or self._feed_loop.wait(self._backoff):
                return False  # stopping: what is left stays undelivered
            self._backoff = min(self._backoff * 2, self.retry_max_s)
            return True
        self._backoff = RETRY_FIRST_S
        try:
            if inspections:
                self.deliver_inspections(inspections)
        except Exception:
            log.exception("%s: %d inspections not delivered", self.thread_name, len(inspections))
        try:
            if tracks:  # after the inspections: a track's best frame came before it
                self.deliver_tracks(tracks)
        except Exception:
            log.exception("%s: %d tracked defects not delivered", self.thread_name, len(tracks))
        return True

    @staticmethod
    def _load(session: Session,
              records: list[StoredRecord]) -> tuple[list[InspectionPublic], list[TrackPublic]]:
        inspections = [r.id for r in records if r.kind == INSPECTION]
        tracks = [r.id for r in records if r.kind == TRACK]
        return (load_inspections(session, inspections) if inspections else [],
                load_tracks(session, tracks) if tracks else [])

    def _watch_cameras(self) -> None:
        """Deliver a camera's state when it goes up or down or its part changes, and once at the start."""
        if self.cameras is None:
            return
        for cam in self.cameras():
            part = cam.get("part")
            shown = (bool(cam.get("connected")), None if part is None else part["part_id"])
            if self._camera_shown.get(cam["id"]) != shown:
                self._camera_shown[cam["id"]] = shown
                self.deliver_camera(CameraCounters.model_validate(cam))
