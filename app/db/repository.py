"""Queries and inserts of the defect log, shared by the API, ingest and the MES routes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from app.db.models import Camera, Defect, Inspection


def _insert_or_skip(session: Session, model: type) -> Any:
    """The dialect's INSERT with ``on_conflict_do_nothing`` (PostgreSQL and SQLite). On PostgreSQL a
    conflict with a concurrent transaction's uncommitted row waits for that transaction and then
    skips (or inserts, when it rolled back) instead of raising a duplicate-key error."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"INSERT ... ON CONFLICT is not wired for the {dialect} dialect")


def get_camera(session: Session, camera_id: str) -> Camera | None:
    return session.get(Camera, camera_id)


def ensure_camera(session: Session, camera_id: str, line: str | None = None,
                  station: str | None = None, name: str | None = None) -> Camera:
    """The camera row, created on first use (line/station taken from the first sighting). Writers
    creating the same camera at the same moment both succeed and share one row."""
    camera = session.get(Camera, camera_id)
    if camera is None:
        session.execute(_insert_or_skip(session, Camera)
                        .values(id=camera_id, line=line, station=station, name=name)
                        .on_conflict_do_nothing(index_elements=[Camera.id]))
        camera = session.get(Camera, camera_id)
        if camera is None:
            raise RuntimeError(f"camera {camera_id!r} is missing right after its insert")
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


def stored_frames_by_uid(session: Session, frame_uids: Iterable[str]) -> dict[str, tuple[int, str | None]]:
    """frame_uid -> (inspection id, image_sha256) for those of ``frame_uids`` that are stored (no ORM
    objects; the digest is None for rows stored before it was kept)."""
    uids = list(frame_uids)
    if not uids:
        return {}
    stmt = (select(Inspection.frame_uid, Inspection.id, Inspection.image_sha256)
            .where(Inspection.frame_uid.in_(uids)))
    return {uid: (int(inspection_id), digest) for uid, inspection_id, digest in session.execute(stmt)}


def get_inspections_by_uid(session: Session, frame_uids: Iterable[str]) -> dict[str, Inspection]:
    """frame_uid -> inspection (with its defects) for those of ``frame_uids`` that are stored."""
    uids = list(frame_uids)
    if not uids:
        return {}
    stmt = select(Inspection).where(Inspection.frame_uid.in_(uids)).options(
        selectinload(Inspection.defects))
    return {row.frame_uid: row for row in session.scalars(stmt)}


def insert_inspections(session: Session,
                       items: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]]
                       ) -> dict[str, int]:
    """Insert inspections (``fields``, ``defects``) and their defects (not committed), each unless
    its ``frame_uid`` is already stored, also by a concurrent transaction (which this waits for on
    PostgreSQL). One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` for all inspections (rows in the
    given order: callers sort them by frame_uid so overlapping batches wait instead of deadlocking) and
    one for all their defects. The frame_uids must be distinct. Returns frame_uid -> new inspection id
    for the rows inserted; frame_uids that were there are missing from it (nothing is written for them)."""
    if not items:
        return {}
    table = Inspection.__table__
    stmt = (_insert_or_skip(session, table)
            .on_conflict_do_nothing(index_elements=[table.c.frame_uid])
            .returning(table.c.id, table.c.frame_uid))
    params = [{"defect_count": len(defects), **fields} for fields, defects in items]  # or the fields' own
    new_ids = {uid: int(new_id) for new_id, uid in session.execute(stmt, params)}
    defect_rows = [{**d, "inspection_id": new_ids[fields["frame_uid"]]}
                   for fields, defects in items if fields["frame_uid"] in new_ids for d in defects]
    if defect_rows:
        session.execute(insert(Defect.__table__), defect_rows)
    return new_ids


def count_rows(session: Session, model: type) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)
