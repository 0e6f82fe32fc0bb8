"""GET /parts/{part_id}: a part's verdict across all stations (NG if any station's verdict is NG) with the
latest result per station, and how many tracked defects the part has (its defect map: GET /tracks)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app.api.deps import SessionDep
from app.api.openapi import problem_responses
from app.api.params import PartIdPath
from app.api.problems import Problem
from app.db.models import Inspection, Track
from app.schemas import InspectionPublic, PartPublic, PartStation
from app.vocabulary import API_SOURCE, NG, OK, Verdict, to_utc

router = APIRouter(tags=["mes"])


def part_verdict(inspections: list[Inspection]) -> tuple[Verdict, list[PartStation]]:
    """Latest inspection per (line, station) -- camera id where no station is set -- and the verdict.
    A station's verdict is its latest inspection's (a posted part inspected again after rework), NG
    when any frame a camera streamed of the part is NG (each frame shows another stretch of it)."""
    latest: dict[tuple[str | None, str | None], Inspection] = {}
    counts: dict[tuple[str | None, str | None], int] = {}
    streamed_ng: set[tuple[str | None, str | None]] = set()
    for row in inspections:
        key = (row.line, row.station or (f"camera:{row.camera_id}" if row.camera_id else None))
        counts[key] = counts.get(key, 0) + 1
        if row.source != API_SOURCE and row.verdict == NG:
            streamed_ng.add(key)
        best = latest.get(key)
        if best is None or (to_utc(row.captured_at), row.id) > (to_utc(best.captured_at), best.id):
            latest[key] = row
    stations = [
        PartStation(line=key[0], station=row.station, camera_id=row.camera_id,
                    verdict=NG if key in streamed_ng else row.verdict,
                    inspections=counts[key], latest=InspectionPublic.from_row(row))
        for key, row in sorted(latest.items(), key=lambda kv: (to_utc(kv[1].captured_at), kv[1].id))
    ]
    verdict: Verdict = NG if any(s.verdict == NG for s in stations) else OK
    return verdict, stations


@router.get("/parts/{part_id}", response_model=PartPublic, summary="A part's verdict across all stations",
            responses=problem_responses(404, 422, s404="no inspection of this part"))
def read_part(part_id: PartIdPath,
              session: SessionDep) -> PartPublic:
    rows = list(session.scalars(
        select(Inspection).where(Inspection.part_id == part_id).options(selectinload(Inspection.defects))
    ))
    if not rows:
        raise Problem(404, f"part {part_id!r} has no inspections", reason="not_found")
    verdict, stations = part_verdict(rows)
    tracked = session.scalar(select(func.count()).select_from(Track).where(Track.part_id == part_id))
    return PartPublic(part_id=part_id, verdict=verdict, inspections=len(rows), stations=stations,
                      tracked_defects=int(tracked or 0))
