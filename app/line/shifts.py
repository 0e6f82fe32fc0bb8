"""Shift counters for the line integrations: inspected frames, NG, yield and tracked defects (cameras
with tracking: physical defects, counted when their track is stored) per camera since the start
of the current shift (INSPECT_SHIFTS, start times in INSPECT_SHIFT_TIMEZONE). A shift runs from one
start time to the next; the last one of the day runs past midnight into the first of the next day.
The counters reset when a shift starts; the clock is injected so the boundaries can be tested. A
process that starts in the middle of a shift seeds them from the database (``seed``), so a restart
does not reset them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def parse_starts(values: Sequence[str]) -> list[time]:
    """``HH:MM`` strings as sorted times; ValueError naming the bad entry, a repeat or none at all."""
    starts: list[time] = []
    for value in values:
        try:
            hours, minutes = value.strip().split(":")
            if len(minutes) != 2:
                raise ValueError
            starts.append(time(int(hours), int(minutes)))
        except ValueError:
            raise ValueError(f"{value!r} is not a start time HH:MM (00:00 to 23:59)") from None
    if not starts:
        raise ValueError("no shift start time given (e.g. 06:00,14:00,22:00)")
    if len(set(starts)) != len(starts):
        raise ValueError("a shift start time is given twice")
    return sorted(starts)


class ShiftCalendar:
    """When the shift running at a given moment started."""

    def __init__(self, starts: Sequence[str], timezone: str = "UTC") -> None:
        self.starts = parse_starts(starts)
        self.tz = ZoneInfo(timezone)

    def shift_start(self, now: datetime) -> datetime:
        """The start (aware, UTC) of the shift running at ``now`` (aware). Compared as moments, not
        as clock readings, so the hours the clocks change in count once."""
        now = now.astimezone(UTC)
        today = now.astimezone(self.tz).date()
        for day in (today, today - timedelta(days=1)):
            for start in reversed(self.starts):
                begun = self.moment(day, start)
                if begun <= now:
                    return begun
        raise AssertionError("unreachable: yesterday's last shift started before now")

    def moment(self, day: date, start: time) -> datetime:
        """When (UTC) the zone's clock first reads ``start`` on ``day``: in the hour the clocks go back,
        the first of the two; where they go forward past it, the moment they jump."""
        wall = datetime.combine(day, start, tzinfo=self.tz)
        first, other = (wall.replace(fold=fold).astimezone(UTC) for fold in (0, 1))
        if first <= other:  # one moment, or the first of two
            return first
        # skipped: ``other`` (the offset after the jump) reads before ``start``, ``first`` after it;
        # the jump lies between, on a whole second
        naive = wall.replace(tzinfo=None)
        before, after = int(other.timestamp()), int(first.timestamp())
        while after - before > 1:
            middle = (before + after) // 2
            if datetime.fromtimestamp(middle, self.tz).replace(tzinfo=None) >= naive:
                after = middle
            else:
                before = middle
        return datetime.fromtimestamp(after, UTC)


@dataclass
class Counts:
    """One camera's counts in the current shift."""

    inspected: int = 0
    ng: int = 0
    defects: int = 0  # tracked defects (cameras with tracking)

    @property
    def yield_(self) -> float:
        """Share of OK frames; 0.0 before the first frame of the shift."""
        return (self.inspected - self.ng) / self.inspected if self.inspected else 0.0


class ShiftCounters:
    """Counts per camera since the current shift started. ``add`` one stored inspection, ``add_defect``
    one stored track; ``roll`` (also called by both) starts a new shift when the clock has passed its
    start and says so."""

    def __init__(self, calendar: ShiftCalendar,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.calendar = calendar
        self.clock = clock
        self._lock = threading.Lock()
        self.started = calendar.shift_start(clock())
        self._counts: dict[str, Counts] = {}
        self._seeded_upto = 0  # inspection ids up to this one are in the seeded counts
        self._seeded_tracks_upto = 0  # and track ids up to this one

    def seed(self, counts: dict[str, Counts], started: datetime, upto_id: int,
             upto_track_id: int = 0) -> bool:
        """Counts read from the database for the shift that started at ``started``, covering the
        inspections up to id ``upto_id`` and the tracks up to ``upto_track_id``; those are not counted
        again by ``add`` and ``add_defect``. Ignored (False) when another shift has started meanwhile."""
        with self._lock:
            self._roll()
            if started != self.started:
                return False
            for camera, c in counts.items():
                mine = self._counts.setdefault(camera, Counts())
                mine.inspected += c.inspected
                mine.ng += c.ng
                mine.defects += c.defects
            self._seeded_upto = upto_id
            self._seeded_tracks_upto = upto_track_id
            return True

    def roll(self) -> bool:
        """Start a new shift (every count back to zero) when one has begun since; True when it did."""
        with self._lock:
            return self._roll()

    def _roll(self) -> bool:
        started = self.calendar.shift_start(self.clock())
        if started == self.started:
            return False
        self.started = started
        self._counts = {camera: Counts() for camera in self._counts}
        return True

    def add(self, camera: str, ng: bool, captured_at: datetime | None = None,
            inspection_id: int | None = None) -> Counts:
        """Count one inspection of ``camera`` (not one captured before the current shift started, nor
        one in the seeded counts); the camera's counts after it."""
        def bump(counts: Counts) -> None:
            counts.inspected += 1
            counts.ng += ng
        return self._count(camera, captured_at, inspection_id, self._seeded_upto, bump)

    def add_defect(self, camera: str, ended_at: datetime | None = None,
                   track_id: int | None = None) -> Counts:
        """Count one tracked defect of ``camera`` whose track ended at ``ended_at`` (its last frame's
        capture time; not one before the current shift started, nor one in the seeded counts)."""
        def bump(counts: Counts) -> None:
            counts.defects += 1
        return self._count(camera, ended_at, track_id, self._seeded_tracks_upto, bump)

    def _count(self, camera: str, when: datetime | None, row_id: int | None, seeded_upto: int,
               bump: Callable[[Counts], None]) -> Counts:
        with self._lock:
            self._roll()
            counts = self._counts.setdefault(camera, Counts())
            seeded = row_id is not None and row_id <= seeded_upto
            if not seeded and self._in_shift(when):
                bump(counts)
            return replace(counts)

    def _in_shift(self, captured_at: datetime | None) -> bool:
        if captured_at is not None and captured_at.tzinfo is None:
            captured_at = captured_at.replace(tzinfo=UTC)  # the database's naive times are UTC
        return captured_at is None or captured_at >= self.started

    def get(self, camera: str) -> Counts:
        with self._lock:
            self._roll()
            return replace(self._counts.get(camera, Counts()))

    def cameras(self) -> list[str]:
        with self._lock:
            return sorted(self._counts)
