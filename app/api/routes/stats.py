"""GET /stats: counts and yield per line, station and class, bucketed per hour or day, and the
false-positive rate from reviews."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.api.deps import SessionDep, SettingsDep
from app.api.openapi import problem_responses
from app.api.params import QUERY_TIME, NameQuery
from app.db.queries import Filters
from app.db.stats import StatsRange, compute_stats
from app.schemas import StatsPublic
from app.schemas.common import DatetimeInput

router = APIRouter(tags=["mes"])


@router.get("/stats", response_model=StatsPublic,
            summary="Counts, yield and false-positive rate over a time range",
            responses=problem_responses(400, 422, s400="a bad range or bucket"))
def read_stats(
    session: SessionDep,
    settings: SettingsDep,
    start: Annotated[DatetimeInput | None, Query(
        alias="from", description="default: 24 h (hour) / 30 d (day) before 'to'"), QUERY_TIME] = None,
    end: Annotated[DatetimeInput | None, Query(alias="to", description="default: now"), QUERY_TIME] = None,
    bucket: Literal["hour", "day"] = "hour",
    line: NameQuery = None,
    station: NameQuery = None,
    camera_id: NameQuery = None,
) -> StatsPublic:
    """``yield`` = OK / inspections; ``reviews.false_positive_rate`` = rejected / reviewed (confirmed +
    rejected + reclassified). Class counts use the class after review and leave rejected boxes out."""
    rng = StatsRange.build(start, end, bucket)  # QueryError: a 400 problem
    stats = compute_stats(session, rng, Filters(line=line, station=station, camera_id=camera_id))
    return stats.model_copy(update={"yield_target": settings.yield_target})
