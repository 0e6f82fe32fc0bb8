"""app.db.stats straight on the database (SQLite and PostgreSQL): yield per line and station, hour and
day buckets (the range's start is in, its end is out), class counts by the reviewed class without
rejected boxes, the false-positive rate, and the range's own limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from db_helpers import NAMES, Frame, store_frames

from app.db.models import Defect
from app.db.queries import Filters, QueryError
from app.db.session import Database
from app.db.stats import MAX_BUCKETS, StatsRange, compute_stats
from app.reviews import ReviewRequest, review_defect

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
BOX = (10.0, 10.0, 30.0, 30.0)
US = timedelta(microseconds=1)


def review(db: Database, defect_id: int, action: str, class_name: str | None = None) -> None:
    with db.session() as s:
        review_defect(s, s.get(Defect, defect_id), ReviewRequest(action, class_name), "op", NAMES)
        s.commit()


def seed_hours(db: Database) -> None:
    """Frames around a range [T0, T0 + 3 h), reviewed; what the stats must say is spelled out below."""
    stored = store_frames(db, [
        Frame("a", T0, [("patches", 0.9, BOX), ("scratches", 0.8, BOX)], "L1", "S1"),  # on the start
        Frame("b", T0 + timedelta(hours=1) - US, [], "L1", "S1"),  # last microsecond of hour 0
        Frame("c", T0 + timedelta(hours=1), [("crazing", 0.7, BOX)], "L1", "S2"),  # first of hour 1
        Frame("d", T0 + timedelta(hours=3), [("patches", 0.9, BOX)], "L1", "S1"),  # on the end: out
        Frame("e", T0 - US, [("patches", 0.9, BOX)], "L1", "S1"),  # before the start: out
        Frame("f", T0 + timedelta(hours=2, minutes=30), [("patches", 0.6, BOX), ("patches", 0.5, BOX)],
              "L2", "S1"),
        Frame("g", T0 + timedelta(hours=2, minutes=31), [], "L2", "S1"),
    ])
    ids = {x.row.frame_uid: [d.id for d in sorted(x.row.defects, key=lambda d: d.id)] for x in stored}
    review(db, ids["a"][0], "reject")  # patches: a false positive, counted nowhere in classes
    review(db, ids["a"][1], "reclassify", "crazing")  # scratches -> crazing
    review(db, ids["c"][0], "confirm")
    review(db, ids["f"][1], "confirm")  # f's first box stays pending (still counted as detected)
    review(db, ids["d"][0], "reject")  # outside the range: no effect
    review(db, ids["e"][0], "reject")


def hour(h: int) -> datetime:
    return T0 + timedelta(hours=h)


def test_hourly_stats_over_a_range(db):
    seed_hours(db)
    with db.session() as s:
        stats = compute_stats(s, StatsRange.build(T0, T0 + timedelta(hours=3), "hour"), Filters())
    doc = stats.model_dump(mode="json", by_alias=True)
    assert stats.buckets == [hour(0), hour(1), hour(2)]
    assert doc["totals"] == {"inspections": 5, "ok": 2, "ng": 3, "yield": 0.4}
    assert [(r.bucket, r.line, r.inspections, r.ng) for r in stats.timeline] == [
        (hour(0), "L1", 2, 1), (hour(1), "L1", 1, 1), (hour(2), "L2", 2, 1)]
    assert [(r["line"], r["inspections"], r["ng"], r["yield"]) for r in doc["lines"]] == [
        ("L1", 3, 2, 0.333333), ("L2", 2, 1, 0.5)]
    assert [(r.line, r.station, r.inspections, r.ng) for r in stats.stations] == [
        ("L1", "S1", 2, 1), ("L1", "S2", 1, 1), ("L2", "S1", 2, 1)]
    # reviewed class counts (a's scratches as crazing), a's rejected patches left out, f's pending kept
    assert [(c.class_name, c.defects) for c in stats.classes] == [("crazing", 2), ("patches", 2)]
    assert [(r.bucket, r.class_name, r.defects) for r in stats.class_timeline] == [
        (hour(0), "crazing", 1), (hour(1), "crazing", 1), (hour(2), "patches", 2)]
    assert doc["reviews"] == {"pending": 1, "confirmed": 2, "rejected": 1, "reclassified": 1, "reviewed": 4,
                              "false_positive_rate": 0.25, "fully_reviewed_frames": 0, "missed": 0,
                              "found": 0, "miss_rate": None}


def test_stats_filter_by_line_and_station(db):
    seed_hours(db)
    with db.session() as s:
        stats = compute_stats(s, StatsRange.build(T0, T0 + timedelta(hours=3), "hour"),
                              Filters(line="L1", station="S1"))
    assert (stats.totals.inspections, stats.totals.ng) == (2, 1)
    assert [(c.class_name, c.defects) for c in stats.classes] == [("crazing", 1)]
    assert (stats.reviews.rejected, stats.reviews.reclassified, stats.reviews.reviewed) == (1, 1, 2)
    assert stats.reviews.false_positive_rate == 0.5


def test_daily_buckets_split_at_utc_midnight(db):
    midnight = datetime(2026, 5, 4, tzinfo=UTC)
    store_frames(db, [
        Frame("late", midnight - US, [("patches", 0.9, BOX)], "L1", "S1"),
        Frame("midnight", midnight, [], "L1", "S1"),
        Frame("end-of-day", midnight + timedelta(days=1) - US, [("crazing", 0.9, BOX)], "L1", "S1"),
        Frame("next-day", midnight + timedelta(days=1), [], "L1", "S1"),  # == end: out
    ])
    rng = StatsRange.build(midnight - timedelta(hours=2), midnight + timedelta(days=1), "day")
    with db.session() as s:
        stats = compute_stats(s, rng, Filters())
    day0, day1 = midnight - timedelta(days=1), midnight
    assert stats.buckets == [day0, day1]
    assert [(r.bucket, r.inspections, r.ng) for r in stats.timeline] == [(day0, 1, 1), (day1, 2, 1)]
    assert [(r.bucket, r.class_name) for r in stats.class_timeline] == [(day0, "patches"), (day1, "crazing")]


def test_without_inspections_yield_and_false_positive_rate_are_null(db):
    with db.session() as s:
        stats = compute_stats(s, StatsRange.build(T0, T0 + timedelta(hours=1), "hour"), Filters())
    assert (stats.totals.inspections, stats.totals.yield_) == (0, None)
    assert stats.reviews.false_positive_rate is None and stats.timeline == [] and stats.classes == []


def test_range_limits():
    assert len(StatsRange.build(T0, T0 + timedelta(hours=MAX_BUCKETS), "hour").buckets()) == MAX_BUCKETS
    with pytest.raises(QueryError, match=f"more than {MAX_BUCKETS} hour buckets"):
        StatsRange.build(T0, T0 + timedelta(hours=MAX_BUCKETS) + US, "hour")
    with pytest.raises(QueryError, match="'from' must be before 'to'"):
        StatsRange.build(T0, T0, "hour")
    with pytest.raises(QueryError, match="bucket must be hour or day, got 'week'"):
        StatsRange.build(T0, T0 + timedelta(days=7), "week")
    # a start inside a bucket: the first bucket is the one it falls in; the end's own bucket is out
    rng = StatsRange.build(T0 + timedelta(minutes=30), T0 + timedelta(hours=2), "hour")
    assert rng.buckets() == [hour(0), hour(1)]
    assert StatsRange.build(T0, T0 + timedelta(hours=2) + US, "hour").buckets() == [hour(0), hour(1), hour(2)]
    default = StatsRange.build(None, T0, "day")
    assert (default.start, default.end) == (T0 - timedelta(days=30), T0)
