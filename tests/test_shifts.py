"""Shift counters: which shift a moment belongs to (past midnight, in a time zone with daylight
saving) and the reset at each shift start, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.line.shifts import ShiftCalendar, ShiftCounters, parse_starts
from app.settings import SettingsError, load_settings


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize(("now", "started"), [
    ("2026-03-10T06:00:00", "2026-03-10T06:00:00"),  # a start belongs to the shift it starts
    ("2026-03-10T05:59:59", "2026-03-09T22:00:00"),  # the night shift runs past midnight
    ("2026-03-10T00:30:00", "2026-03-09T22:00:00"),
    ("2026-03-10T13:59:59", "2026-03-10T06:00:00"),
    ("2026-03-10T14:00:00", "2026-03-10T14:00:00"),
    ("2026-03-10T23:00:00", "2026-03-10T22:00:00"),
])
def test_the_shift_running_at_a_moment(now: str, started: str) -> None:
    calendar = ShiftCalendar(["22:00", "06:00", "14:00"])  # any order
    assert calendar.shift_start(utc(now)) == utc(started)


def test_start_times_are_local_to_the_shift_time_zone() -> None:
    calendar = ShiftCalendar(["06:00", "18:00"], "Europe/Berlin")
    # winter: UTC+1; summer: UTC+2 (the clocks went forward on 2026-03-29)
    assert calendar.shift_start(utc("2026-01-15T05:30:00")) == utc("2026-01-15T05:00:00")
    assert calendar.shift_start(utc("2026-07-15T04:30:00")) == utc("2026-07-15T04:00:00")
    assert calendar.shift_start(utc("2026-07-15T03:59:00")) == utc("2026-07-14T16:00:00")


@pytest.mark.parametrize(("now", "started"), [
    # the clocks go forward 02:00 -> 03:00 (01:00 UTC): a 02:30 start falls in the skipped hour, its
    # shift starts when the clocks jump
    ("2026-03-29T00:59:59", "2026-03-28T01:30:00"),
    ("2026-03-29T01:00:00", "2026-03-29T01:00:00"),
    ("2026-03-29T01:10:00", "2026-03-29T01:00:00"),
    ("2026-03-29T01:45:00", "2026-03-29T01:00:00"),
    # the clocks go back 03:00 -> 02:00 (01:00 UTC): 02:30 comes twice, the shift starts at the first
    # and runs on through the second
    ("2026-10-25T00:29:59", "2026-10-24T00:30:00"),
    ("2026-10-25T00:30:00", "2026-10-25T00:30:00"),
    ("2026-10-25T01:15:00", "2026-10-25T00:30:00"),
    ("2026-10-25T01:30:00", "2026-10-25T00:30:00"),
    ("2026-10-25T02:00:00", "2026-10-25T00:30:00"),
])
def test_a_start_in_the_hour_the_clocks_change(now: str, started: str) -> None:
    calendar = ShiftCalendar(["02:30"], "Europe/Berlin")
    assert calendar.shift_start(utc(now)) == utc(started)


def test_any_start_in_the_skipped_hour_begins_when_the_clocks_jump() -> None:
    for start in ("02:00", "02:01", "02:10", "02:59"):
        calendar = ShiftCalendar([start], "America/New_York")  # forward 02:00 -> 03:00 (07:00 UTC)
        assert calendar.shift_start(utc("2026-03-08T07:20:00")) == utc("2026-03-08T07:00:00"), start


def test_counters_reset_once_when_the_clocks_go_back_through_a_start() -> None:
    clock = Clock(utc("2026-10-25T00:00:00"))  # 02:00 summer time, before the start at 02:30
    counters = ShiftCounters(ShiftCalendar(["02:30"], "Europe/Berlin"), clock)
    resets = []
    for minute in range(0, 150, 5):  # 00:00 to 02:25 UTC: 02:30 summer time, then 02:30 winter time
        clock.now = utc("2026-10-25T00:00:00") + timedelta(minutes=minute)
        resets += [clock.now] if counters.roll() else []
    assert resets == [utc("2026-10-25T00:30:00")]


def test_one_shift_a_day() -> None:
    calendar = ShiftCalendar(["06:00"])
    assert calendar.shift_start(utc("2026-03-10T05:00:00")) == utc("2026-03-09T06:00:00")


def test_counters_reset_when_a_shift_starts() -> None:
    clock = Clock(utc("2026-03-10T13:58:00"))
    counters = ShiftCounters(ShiftCalendar(["06:00", "14:00", "22:00"]), clock)
    counters.add("cam1", ng=True)
    counters.add("cam1", ng=False)
    after = counters.add("cam2", ng=False)
    assert (after.inspected, after.ng) == (1, 0)
    c1 = counters.get("cam1")
    assert (c1.inspected, c1.ng, c1.yield_) == (2, 1, 0.5)
    assert counters.roll() is False
    clock.now = utc("2026-03-10T14:00:00")
    assert counters.roll() is True and counters.started == utc("2026-03-10T14:00:00")
    assert counters.roll() is False  # once per shift
    assert [(counters.get(c).inspected, counters.get(c).ng) for c in counters.cameras()] == [(0, 0), (0, 0)]
    assert counters.get("cam1").yield_ == 0.0  # nothing inspected yet: no yield
    assert counters.add("cam1", ng=True).inspected == 1


def test_counting_itself_notices_a_new_shift() -> None:
    clock = Clock(utc("2026-03-10T21:59:59"))
    counters = ShiftCounters(ShiftCalendar(["06:00", "14:00", "22:00"]), clock)
    counters.add("cam1", ng=False)
    clock.now += timedelta(seconds=2)
    assert counters.add("cam1", ng=False).inspected == 1


def test_an_inspection_captured_before_the_shift_is_not_counted_in_it() -> None:
    clock = Clock(utc("2026-03-10T14:00:01"))
    counters = ShiftCounters(ShiftCalendar(["06:00", "14:00", "22:00"]), clock)
    assert counters.add("cam1", ng=True, captured_at=utc("2026-03-10T13:59:59")).inspected == 0
    naive = datetime(2026, 3, 10, 14, 0, 1)  # the database's naive times are UTC
    assert counters.add("cam1", ng=True, captured_at=naive).inspected == 1


@pytest.mark.parametrize(("starts", "message"), [
    (["6"], "'6' is not a start time"),
    (["24:00"], "'24:00' is not a start time"),
    (["06:0"], "'06:0' is not a start time"),
    (["06:00", "6:00"], "given twice"),
    ([], "no shift start time"),
])
def test_bad_start_times_are_refused(starts: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_starts(starts)


@pytest.mark.parametrize(("env", "message"), [
    ({"shifts": "06:00,25:00"}, "INSPECT_SHIFTS"),
    ({"shift_timezone": "Mars/Olympus"}, "INSPECT_SHIFT_TIMEZONE"),
])
def test_bad_shift_settings_name_the_variable(env: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(**env)


def test_shift_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECT_SHIFTS", "07:00, 19:00")
    monkeypatch.setenv("INSPECT_SHIFT_TIMEZONE", "Europe/Berlin")
    settings = load_settings()
    assert (settings.shifts, settings.shift_timezone) == (["07:00", "19:00"], "Europe/Berlin")


def test_seeded_counts_are_not_counted_again() -> None:
    from app.line.shifts import Counts

    clock = Clock(utc("2026-03-10T15:00:00"))
    counters = ShiftCounters(ShiftCalendar(["06:00", "14:00", "22:00"]), clock)
    assert counters.seed({"cam1": Counts(5, 2)}, utc("2026-03-10T14:00:00"), upto_id=40) is True
    assert counters.add("cam1", ng=True, inspection_id=40).inspected == 5  # in the seed already
    after = counters.add("cam1", ng=True, inspection_id=41)
    assert (after.inspected, after.ng) == (6, 3)
    # counts read for a shift that has ended meanwhile are ignored
    clock.now = utc("2026-03-10T22:00:00")
    assert counters.seed({"cam1": Counts(9, 9)}, utc("2026-03-10T14:00:00"), upto_id=50) is False
    assert counters.get("cam1").inspected == 0


def test_tracked_defects_count_in_the_shift_their_track_ended_in() -> None:
    from app.line.shifts import Counts

    clock = Clock(utc("2026-03-10T15:00:00"))
    counters = ShiftCounters(ShiftCalendar(["06:00", "14:00", "22:00"]), clock)
    assert counters.seed({"cam1": Counts(5, 2, defects=3)}, utc("2026-03-10T14:00:00"), upto_id=40,
                         upto_track_id=7) is True
    assert counters.add_defect("cam1", utc("2026-03-10T14:30:00"), track_id=7).defects == 3  # seeded
    assert counters.add_defect("cam1", utc("2026-03-10T13:59:00"), track_id=8).defects == 3  # last shift
    after = counters.add_defect("cam1", utc("2026-03-10T14:59:00"), track_id=9)
    assert (after.inspected, after.ng, after.defects) == (5, 2, 4)  # a defect is no inspection
    clock.now = utc("2026-03-10T22:00:00")
    assert counters.get("cam1") == Counts()
