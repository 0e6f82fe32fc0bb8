"""GET /stats: counts, yield and the false-positive rate of reviews over a time range."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.schemas.common import PublicModel, UtcDatetime
from app.vocabulary import round_rate


class Counts(PublicModel):
    inspections: int
    ok: int
    ng: int
    yield_: float | None = Field(alias="yield", description="ok / inspections; null without inspections")

    @classmethod
    def of(cls, total: int, ng: int) -> Counts:
        return cls(inspections=total, ok=total - ng, ng=ng, yield_=round_rate(total - ng, total))


class LineCounts(Counts):
    line: str | None


class StationCounts(Counts):
    line: str | None
    station: str | None


class TimelineCounts(Counts):
    bucket: UtcDatetime
    line: str | None


class ClassCount(PublicModel):
    class_name: str = Field(description="the class after review")
    defects: int


class ClassTimelineCount(ClassCount):
    bucket: UtcDatetime


class ReviewCounts(PublicModel):
    pending: int
    confirmed: int
    rejected: int
    reclassified: int
    reviewed: int = Field(description="confirmed + rejected + reclassified")
    false_positive_rate: float | None = Field(description="rejected / reviewed; null before any review")


class StatsPublic(PublicModel):
    """Inspections captured in [from, to), grouped per UTC hour or day."""

    start: UtcDatetime = Field(alias="from")
    end: UtcDatetime = Field(alias="to")
    bucket: Literal["hour", "day"]
    buckets: list[UtcDatetime] = Field(description="the start of every bucket in the range")
    totals: Counts
    lines: list[LineCounts]
    stations: list[StationCounts]
    classes: list[ClassCount] = Field(description="rejected boxes left out; most frequent first")
    timeline: list[TimelineCounts]
    class_timeline: list[ClassTimelineCount]
    reviews: ReviewCounts
