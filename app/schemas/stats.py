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
    """Review outcomes of the model's boxes, and the defects it missed (drawn by operators)."""

    pending: int
    confirmed: int
    rejected: int
    reclassified: int
    reviewed: int = Field(description="confirmed + rejected + reclassified")
    false_positive_rate: float | None = Field(description="rejected / reviewed; null before any review")
    fully_reviewed_frames: int = Field(0, description="frames an operator marked fully reviewed")
    missed: int = Field(0, description="defects drawn by operators (the model missed them) on fully "
                                       "reviewed frames")
    found: int = Field(0, description="the model's boxes confirmed or reclassified on fully reviewed "
                                      "frames")
    miss_rate: float | None = Field(None, description="missed / (missed + found): the share of real "
                                                      "defects the model missed, over fully reviewed "
                                                      "frames; null before any")


class StatsPublic(PublicModel):
    """Inspections captured in [from, to), grouped per UTC hour or day."""

    start: UtcDatetime = Field(alias="from")
    end: UtcDatetime = Field(alias="to")
    bucket: Literal["hour", "day"]
    buckets: list[UtcDatetime] = Field(description="the start of every bucket in the range")
    totals: Counts
    yield_target: float | None = Field(None, description="INSPECT_YIELD_TARGET: the yield a line should "
                                                          "reach (0-1)")
    lines: list[LineCounts]
    stations: list[StationCounts]
    classes: list[ClassCount] = Field(description="rejected boxes left out; most frequent first")
    timeline: list[TimelineCounts]
    class_timeline: list[ClassTimelineCount]
    reviews: ReviewCounts
