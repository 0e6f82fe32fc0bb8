"""Counts and yield per line, station and class, bucketed per hour or day, plus the false-positive rate
of the model's boxes from operator reviews and the miss rate over frames marked fully reviewed. Grouping
happens in SQL (``strftime`` on SQLite, ``date_trunc`` on PostgreSQL, both in UTC) so the cost does not
grow with the number of rows sent to Python."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.db.models import Defect, Inspection
from app.db.queries import Filters, QueryError, effective_class, inspection_conditions
from app.schemas.stats import (
    ClassCount,
    ClassTimelineCount,
    Counts,
    LineCounts,
    ReviewCounts,
    StationCounts,
    StatsPublic,
    TimelineCounts,
)
from app.vocabulary import NG, round_rate, to_utc, utcnow

Bucket = Literal["hour", "day"]
BUCKET_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=30)}
MAX_BUCKETS = 2000


@dataclass(frozen=True)
class StatsRange:
    start: datetime
    end: datetime
    bucket: Bucket

    @classmethod
    def build(cls, start: datetime | None, end: datetime | None, bucket: str) -> StatsRange:
        if bucket not in BUCKET_STEP:
            raise QueryError(f"bucket must be hour or day, got {bucket!r}")
        end_ = to_utc(end) if end else utcnow()
        start_ = to_utc(start) if start else end_ - DEFAULT_SPAN[bucket]
        if start_ >= end_:
            raise QueryError("'from' must be before 'to'")
        rng = cls(start_, end_, bucket)  # type: ignore[arg-type]
        if len(rng.buckets()) > MAX_BUCKETS:
            raise QueryError(f"the range holds more than {MAX_BUCKETS} {bucket} buckets; narrow it")
        return rng

    def floor(self, t: datetime) -> datetime:
        t = to_utc(t)
        if self.bucket == "hour":
            return t.replace(minute=0, second=0, microsecond=0)
        return t.replace(hour=0, minute=0, second=0, microsecond=0)

    def buckets(self) -> list[datetime]:
        out, t, step = [], self.floor(self.start), BUCKET_STEP[self.bucket]
        while t < self.end:
            out.append(t)
            t += step
            if len(out) > MAX_BUCKETS:
                break
        return out


def _bucket_expr(session: Session, bucket: Bucket, col: Any) -> Any:
    """A 'YYYY-MM-DD HH:00:00' string of the UTC bucket start."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.date_trunc(bucket, func.timezone("UTC", col)), "YYYY-MM-DD HH24:00:00")
    fmt = "%Y-%m-%d %H:00:00" if bucket == "hour" else "%Y-%m-%d 00:00:00"
    return func.strftime(fmt, col)


def _parse_bucket(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def compute_stats(session: Session, rng: StatsRange, f: Filters) -> StatsPublic:
    """Stats over inspections captured in ``rng`` that match the inspection filters of ``f`` (line,
    station, camera_id, part_id)."""
    f = Filters(start=rng.start, end=rng.end, line=f.line, station=f.station, camera_id=f.camera_id,
                part_id=f.part_id)
    conds = inspection_conditions(f)
    ng = func.sum(case((Inspection.verdict == NG, 1), else_=0))
    b = _bucket_expr(session, rng.bucket, Inspection.captured_at)

    # Per bucket and line; line and grand totals are sums of these.
    by_bucket_line = session.execute(
        select(b, Inspection.line, func.count(), ng).where(*conds).group_by(b, Inspection.line)
    ).all()
    timeline: list[TimelineCounts] = []
    lines: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    for bucket, line, total, ngs in by_bucket_line:
        total, ngs = int(total), int(ngs or 0)
        timeline.append(TimelineCounts(bucket=_parse_bucket(bucket), line=line,
                                       **dict(Counts.of(total, ngs))))
        lines[line][0] += total
        lines[line][1] += ngs
    timeline.sort(key=lambda r: (r.bucket, r.line or ""))

    by_station = session.execute(
        select(Inspection.line, Inspection.station, func.count(), ng).where(*conds)
        .group_by(Inspection.line, Inspection.station)
    ).all()
    stations = sorted(
        (StationCounts(line=line, station=station, **dict(Counts.of(int(t), int(n or 0))))
         for line, station, t, n in by_station),
        key=lambda r: (r.line or "", r.station or ""),
    )

    cls = effective_class()
    db_ = _bucket_expr(session, rng.bucket, Inspection.captured_at)
    dconds = [*conds, Defect.review_status != "rejected"]
    by_bucket_class = session.execute(
        select(db_, cls, func.count()).join(Inspection, Inspection.id == Defect.inspection_id)
        .where(*dconds).group_by(db_, cls)
    ).all()
    classes: dict[str, int] = defaultdict(int)
    class_timeline = []
    for bucket, name, count in by_bucket_class:
        classes[name] += int(count)
        class_timeline.append(ClassTimelineCount(bucket=_parse_bucket(bucket), class_name=name,
                                                 defects=int(count)))
    class_timeline.sort(key=lambda r: (r.bucket, r.class_name))

    statuses = dict(session.execute(
        select(Defect.review_status, func.count()).join(Inspection, Inspection.id == Defect.inspection_id)
        .where(*conds, Defect.source == "model").group_by(Defect.review_status)
    ).all())
    misses = _miss_counts(session, conds)
    confirmed = int(statuses.get("confirmed", 0))
    rejected = int(statuses.get("rejected", 0))
    reclassified = int(statuses.get("reclassified", 0))
    reviewed = confirmed + rejected + reclassified

    total = sum(v[0] for v in lines.values())
    total_ng = sum(v[1] for v in lines.values())
    return StatsPublic(
        start=rng.start,
        end=rng.end,
        bucket=rng.bucket,
        buckets=rng.buckets(),
        totals=Counts.of(total, total_ng),
        lines=sorted((LineCounts(line=k, **dict(Counts.of(*v))) for k, v in lines.items()),
                     key=lambda r: r.line or ""),
        stations=stations,
        classes=sorted((ClassCount(class_name=k, defects=v) for k, v in classes.items()),
                       key=lambda r: (-r.defects, r.class_name)),
        timeline=timeline,
        class_timeline=class_timeline,
        reviews=ReviewCounts(pending=int(statuses.get("pending", 0)), confirmed=confirmed, rejected=rejected,
                             reclassified=reclassified, reviewed=reviewed,
                             false_positive_rate=round_rate(rejected, reviewed), **misses),
    )


def _miss_counts(session: Session, conds: list[Any]) -> dict[str, Any]:
    """Over the frames marked fully reviewed: the defects operators drew (still standing) and the
    model's boxes they kept; the miss rate is the share of the first among both."""
    done = [*conds, Inspection.fully_reviewed_at.is_not(None)]
    frames = session.scalar(select(func.count()).select_from(Inspection).where(*done)) or 0
    kept = case((Defect.source == "operator", "missed"), else_="found")
    counts = dict(session.execute(
        select(kept, func.count()).join(Inspection, Inspection.id == Defect.inspection_id)
        .where(*done, Defect.review_status.in_(("confirmed", "reclassified"))).group_by(kept)
    ).all())
    missed, found = int(counts.get("missed", 0)), int(counts.get("found", 0))
    return {"fully_reviewed_frames": int(frames), "missed": missed, "found": found,
            "miss_rate": round_rate(missed, missed + found)}
