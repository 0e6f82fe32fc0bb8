"""GET /tracks/{id} (one physical defect of a camera with tracking, with the frames it was seen in) and
GET /tracks (the defect map along the material: position, class, size and track of each defect of a
camera, part or time range)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from app.api.deps import SessionDep
from app.api.openapi import problem_responses
from app.api.params import QUERY_TIME, NameQuery, PartIdQuery, RowId
from app.api.problems import Problem
from app.db.models import Defect, Inspection, Track
from app.schemas.common import DatetimeInput
from app.schemas.tracks import TrackDetail, TrackMap, TrackPublic

router = APIRouter(tags=["mes"])
MAX_MAP = 5000


@router.get("/tracks/{track_id}", response_model=TrackDetail,
            summary="One tracked defect: class by vote, best frame and box, position, frames seen",
            responses=problem_responses(404, 422))
def read_track(track_id: RowId, session: SessionDep) -> TrackDetail:
    row = session.get(Track, track_id)
    if row is None:
        raise Problem(404, f"track {track_id} does not exist", reason="not_found")
    defect = session.scalars(select(Defect).where(Defect.track_id == track_id)).first()
    frames = session.scalars(select(Inspection).where(Inspection.frame_uid.in_(row.frame_uids))
                             .order_by(Inspection.captured_at, Inspection.id))
    return TrackDetail.from_row(row, defect, frames)


@router.get("/tracks", response_model=TrackMap,
            summary="The defect map: tracked defects of a camera, part or time range along the material",
            responses=problem_responses(422))
def list_tracks(
    session: SessionDep,
    camera_id: NameQuery = None,
    part_id: PartIdQuery = None,
    start: Annotated[DatetimeInput | None, Query(
        alias="from", description="first seen at or after"), QUERY_TIME] = None,
    end: Annotated[DatetimeInput | None, Query(
        alias="to", description="first seen before"), QUERY_TIME] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_MAP)] = 1000,
) -> TrackMap:
    stmt = select(Track, Defect).outerjoin(Defect, Defect.track_id == Track.id)
    if camera_id is not None:
        stmt = stmt.where(Track.camera_id == camera_id)
    if part_id is not None:
        stmt = stmt.where(Track.part_id == part_id)
    if start is not None:
        stmt = stmt.where(Track.started_at >= start)
    if end is not None:
        stmt = stmt.where(Track.started_at < end)
    rows = session.execute(stmt.order_by(Track.started_at, Track.id).limit(limit + 1)).all()
    return TrackMap(items=[TrackPublic.from_row(t, d) for t, d in rows[:limit]], truncated=len(rows) > limit)
