"""Storing tracked defects: a camera with tracking stores each physical defect once, when its track
ends, as a ``tracks`` row and ONE defect row on the inspection of the track's best frame (the
sighting with the highest confidence; that frame's image and crops are the defect's). The frames the
defect was seen in keep their inspection rows (verdict, detection count) without defect rows.

A ``TrackRecord`` is the track as plain values: it travels through the ingest writer's queue and
journal like a frame (``to_record`` / ``from_record``), behind the frame it needs, and
``persist_tracks`` stores it exactly once (``track_uid``). It also queues ``inspection.ng`` for the
new defect, so webhook receivers hear of each physical defect once, and stores the crop of its best
box (where the camera keeps crops) as the next crop of the best frame (``crop_count`` counts it):
written before the commit and removed when the commit fails, so no row names a missing crop and no
crop outlives a rolled-back row. The frames themselves carry no crops (app.ingest.frame_images)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import images, metrics
from app.db.models import Defect, Inspection, Track
from app.inspection.store import crop_name
from app.storage_health import HEALTH
from app.webhooks import inspection_payload, queue_deliveries, subscribers

log = logging.getLogger(__name__)

RECORD_KIND = "track"  # the journal record's ``kind`` (a frame's record has none)


@dataclass
class TrackRecord:
    """One ended track of one camera. Boxes in the best frame's pixels; positions and sizes on the
    material (pixels from the start of its part, app.ingest.parts, or from where the stream began
    without one; mm with ``mm_per_px``)."""

    track_uid: str
    track_number: int
    camera_id: str | None
    line: str | None
    station: str | None
    part_id: str | None
    class_id: int
    class_name: str
    confidence: float
    frames_seen: int
    first_frame_uid: str
    best_frame_uid: str
    last_frame_uid: str
    started_at: datetime
    ended_at: datetime
    box: list[float]
    position_px: list[float]
    size_px: list[float]
    mm_per_px: float | None = None
    frame_uids: list[str] = field(default_factory=list)


_TIMES = ("started_at", "ended_at")


def to_record(track: TrackRecord) -> dict[str, Any]:
    """The journal record of a track (told from a frame's record by ``kind``)."""
    rec = asdict(track)
    for name in _TIMES:
        rec[name] = getattr(track, name).isoformat()
    return {"kind": RECORD_KIND, **rec}


def is_track_record(rec: dict[str, Any]) -> bool:
    return rec.get("kind") == RECORD_KIND


def from_record(rec: dict[str, Any]) -> TrackRecord:
    """The track a journal record holds; raises KeyError/TypeError/ValueError for a broken record."""
    values = {f.name: rec[f.name] for f in fields(TrackRecord) if f.name in rec}
    for name in _TIMES:
        values[name] = datetime.fromisoformat(rec[name])
    return TrackRecord(**values)


@dataclass
class StoredTrack:
    """A stored track: its ``id``, its defect row's ``defect_id``, and ``created`` (False: a replay)."""

    id: int
    defect_id: int | None
    created: bool


def persist_tracks(session: Session, tracks: Sequence[TrackRecord], crops: Sequence[bytes | None] = (),
                   data_dir: Path | None = None) -> list[StoredTrack | None]:
    """Store ``tracks`` in one transaction (committed): per track its ``tracks`` row and its defect row
    on the best frame's inspection, unless its ``track_uid`` is stored already, and its crop (``crops``,
    in the same order; none without ``data_dir``) next to the best frame. None for a track whose best
    frame is not stored (the caller keeps or sets it aside). In input order."""
    if not tracks:
        return []
    written: list[Path] = []
    try:
        out = _persist_tracks(session, tracks, crops, data_dir, written)
        session.commit()
    except BaseException:
        for path in written:
            images.remove_quietly(path)
        session.rollback()
        raise
    for t, s in zip(tracks, out, strict=True):
        if s is not None and s.created:
            metrics.DEFECTS_TOTAL.labels(class_name=t.class_name).inc()
    return out


def _persist_tracks(session: Session, tracks: Sequence[TrackRecord], crops: Sequence[bytes | None],
                    data_dir: Path | None, written: list[Path]) -> list[StoredTrack | None]:
    uids = [t.track_uid for t in tracks]
    stored = {uid: (track_id, defect_id) for uid, track_id, defect_id in session.execute(
        select(Track.track_uid, Track.id, Defect.id).outerjoin(Defect, Defect.track_id == Track.id)
        .where(Track.track_uid.in_(uids)))}
    frames = {row.frame_uid: row for row in session.scalars(
        select(Inspection).where(Inspection.frame_uid.in_({t.best_frame_uid for t in tracks})))}
    hooks = subscribers(session, "inspection.ng")
    out: list[StoredTrack | None] = []
    for k, t in enumerate(tracks):
        if t.track_uid in stored:
            track_id, defect_id = stored[t.track_uid]
            out.append(StoredTrack(track_id, defect_id, False))
            continue
        inspection = frames.get(t.best_frame_uid)
        if inspection is None:
            out.append(None)
            continue
        row = _track_row(t, inspection.id)
        defect = Defect(inspection_id=inspection.id, class_id=t.class_id, class_name=t.class_name,
                        confidence=t.confidence, x1=t.box[0], y1=t.box[1], x2=t.box[2], y2=t.box[3],
                        source="model", review_status="pending", track=row)
        session.add_all([row, defect])
        session.flush()
        if hooks:
            queue_deliveries(session, hooks, "inspection.ng", inspection_payload(inspection, [defect]))
        stored[t.track_uid] = (row.id, defect.id)  # a track twice in one batch is stored once
        out.append(StoredTrack(row.id, defect.id, True))
        crop = crops[k] if k < len(crops) else None
        if crop is not None and data_dir is not None:
            _add_crop(session, inspection, crop, data_dir, written)
    return out


def _add_crop(session: Session, inspection: Inspection, crop: bytes, data_dir: Path,
              written: list[Path]) -> None:
    """Write ``crop`` as the next crop of ``inspection`` and count it in its row (in the caller's
    transaction); nothing while images are skipped (low disk, failing writes) or when the write fails."""
    if HEALTH.image_skip_reason(data_dir) is not None:
        return
    size = images.disk_bytes(len(crop))
    k = session.execute(update(Inspection).where(Inspection.id == inspection.id)
                        .values(crop_count=Inspection.crop_count + 1, crop_size=Inspection.crop_size + size)
                        .returning(Inspection.crop_count)
                        .execution_options(synchronize_session=False)).scalar_one() - 1
    path = images.resolve(data_dir, crop_name(inspection.frame_uid, inspection.captured_at, k))
    try:
        images.write_atomic(path, crop)
    except OSError as exc:
        HEALTH.write_failed(exc)
        log.warning("cannot store the crop of a tracked defect on %s: %s", inspection.frame_uid, exc)
        session.execute(update(Inspection).where(Inspection.id == inspection.id)
                        .values(crop_count=Inspection.crop_count - 1, crop_size=Inspection.crop_size - size)
                        .execution_options(synchronize_session=False))
        return
    HEALTH.write_succeeded()
    written.append(path)


def _track_row(t: TrackRecord, inspection_id: int) -> Track:
    (x1, y1, x2, y2), (px, py), (w, h) = t.box, t.position_px, t.size_px
    return Track(track_uid=t.track_uid, camera_id=t.camera_id, line=t.line, station=t.station,
                 part_id=t.part_id, inspection_id=inspection_id, track_number=t.track_number,
                 class_id=t.class_id, class_name=t.class_name, confidence=t.confidence,
                 frames_seen=t.frames_seen, first_frame_uid=t.first_frame_uid,
                 best_frame_uid=t.best_frame_uid, last_frame_uid=t.last_frame_uid,
                 frame_uids=list(t.frame_uids), started_at=t.started_at, ended_at=t.ended_at,
                 x1=x1, y1=y1, x2=x2, y2=y2, position_x_px=px, position_y_px=py, width_px=w, height_px=h,
                 mm_per_px=t.mm_per_px)
