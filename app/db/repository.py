"""Queries and inserts of the defect log, shared by the API, ingest and the MES routes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from app.db.models import Camera, Defect, Inspection


def get_camera(session: Session, camera_id: str) -> Camera | None:
    return session.get(Camera, camera_id)


def ensure_camera(session: Session, camera_id: str, line: str | None = None,
                  station: str | None = None, name: str | None = None) -> Camera:
    """The camera row, created on first use (line/station taken from the first sighting)."""
    camera = session.get(Camera, camera_id)
    if camera is None:
        camera = Camera(id=camera_id, line=line, station=station, name=name)
        session.add(camera)
        session.flush()
    else:
        if camera.line is None and line is not None:
            camera.line = line
        if camera.station is None and station is not None:
            camera.station = station
    return camera


def get_inspection(session: Session, inspection_id: int) -> Inspection | None:
    stmt = select(Inspection).where(Inspection.id == inspection_id).options(selectinload(Inspection.defects))
    return session.scalars(stmt).first()


def get_inspection_by_uid(session: Session, frame_uid: str) -> Inspection | None:
    stmt = select(Inspection).where(Inspection.frame_uid == frame_uid).options(
        selectinload(Inspection.defects))
    return session.scalars(stmt).first()


def existing_frame_uids(session: Session, frame_uids: Iterable[str]) -> set[str]:
    uids = list(frame_uids)
    if not uids:
        return set()
    return set(session.scalars(select(Inspection.frame_uid).where(Inspection.frame_uid.in_(uids))))


def add_inspection(session: Session, fields: Mapping[str, Any],
                   defects: Iterable[Mapping[str, Any]]) -> Inspection:
    """Add one inspection and its defects (not committed)."""
    row = Inspection(**fields)
    row.defects = [Defect(**d) for d in defects]
    row.defect_count = len(row.defects)
    session.add(row)
    return row


def count_rows(session: Session, model: type) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)
