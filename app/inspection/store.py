"""Storing inspections: which image of a result is stored and where, and one transaction per batch
for the camera rows, the inspection and defect rows, their image files and the ``inspection.ng``
webhook events.

The image policy is applied once, at the door a frame comes in by (``apply_image_policy``: the REST
upload through ``persist_results(..., image_policy=...)``, a camera frame in the ingest worker); from
then on a result carries the one image that is stored, and every file is written here."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from app import images, metrics
from app.db import repository
from app.db.models import Inspection
from app.db.session import sqlite_file
from app.detections import Detections
from app.errors import Conflict
from app.image_policy import ImagePolicy, should_store
from app.inspection.rules import InspectionResult, Timings
from app.storage_health import HEALTH
from app.vocabulary import NG, to_utc
from app.webhooks import enqueue_inspection, subscribers

log = logging.getLogger(__name__)


# -- the image of a result --------------------------------------------------------------------------
def apply_image_policy(result: InspectionResult, policy: ImagePolicy, as_verdict: str | None = None) -> None:
    """Decide which image of ``result`` is stored: none when ``policy`` skips its verdict (or
    ``as_verdict``, where the frame is to be kept as one of that verdict would be); else the original
    upload as-is (``image_bytes`` with its ``image_ext``), or the frame encoded as JPEG. The BGR frame is
    dropped either way (JPEG bytes are small to queue)."""
    frame, result.image = result.image, None
    if not should_store(policy, as_verdict or result.verdict):
        result.image_bytes = None
    elif result.image_bytes is None and frame is not None:
        result.image_bytes = images.encode_jpeg(frame, HEALTH.options.jpeg_quality)
        result.image_ext = ".jpg"


def apply_upload_image_policy(result: InspectionResult, policy: ImagePolicy) -> None:
    """An upload's image policy: ``apply_image_policy``, and no image at all when only crops are kept
    (INSPECT_STORE_FRAMES=false), since an upload has none."""
    apply_image_policy(result, policy)
    if not HEALTH.options.store_frames:
        result.image_bytes = None


def skip_image_if_unwritable(result: InspectionResult, data_dir: Path) -> bool:
    """Drop the images (frame and crops) a result is about to write when none can be written now (low
    disk, failing writes): inspection goes on, the answer says ``image_stored: false`` and the skip is
    counted. True when the result still carries its frame. A result whose files are written already
    (a journal replay) is left as it is."""
    if result.image_bytes is None and (result.image_path is not None or not result.crop_count):
        return False
    reason = HEALTH.image_skip_reason(data_dir)
    if reason is None:
        return result.image_bytes is not None
    skip_image(result, reason)
    return False


def skip_image(result: InspectionResult, reason: str) -> None:
    """The result goes on without its frame and crops (``image_skipped``: why), counted and logged."""
    result.image_bytes, result.image_path, result.image_size = None, None, 0
    result.crop_count = result.crop_size = 0
    result.image_skipped = reason
    HEALTH.image_skipped(result.camera_id, reason, result.frame_uid)


def image_file(result: InspectionResult) -> str:
    """Where the image a result carries is stored: ``images/Y/M/D/<frame_uid><image_ext>``."""
    return images.relative_path(result.frame_uid, result.captured_at, result.image_ext)


def crop_file(result: InspectionResult, k: int) -> str:
    """Where the crop of its defect ``k`` is stored: ``images/Y/M/D/<frame_uid>-crop<k>.jpg``."""
    return crop_name(result.frame_uid, result.captured_at, k)


def crop_name(frame_uid: str, captured_at: datetime, k: int) -> str:
    """Where crop ``k`` of a frame is stored: ``images/Y/M/D/<frame_uid>-crop<k>.jpg`` (the capture
    date in UTC; a stored row's crops are ``k`` = 0 .. crop_count - 1)."""
    return images.relative_path(f"{frame_uid}-crop{k}", to_utc(captured_at), ".jpg")


def _write_image(result: InspectionResult, data_dir: Path) -> Path:
    if result.image_path is None or result.image_bytes is None:
        raise ValueError(f"inspection {result.frame_uid!r} carries no image to write")
    path = images.resolve(data_dir, result.image_path)
    images.write_atomic(path, result.image_bytes)
    HEALTH.write_succeeded()
    return path


def write_image_now(result: InspectionResult, data_dir: Path) -> None:
    """Write the image a result carries before its row exists (the database is away): the result
    then names its file in ``image_path`` and no longer holds the bytes, so a journaled result keeps
    its image through the replay."""
    if not skip_image_if_unwritable(result, data_dir):
        return
    result.image_path = image_file(result)
    result.image_size = images.disk_bytes(len(result.image_bytes or b""))
    try:
        _write_image(result, data_dir)
    except OSError as exc:  # the row is journaled without its image
        HEALTH.write_failed(exc)
        skip_image(result, "write_failed")
        return
    result.image_bytes = None


def write_crops(result: InspectionResult, crops: Sequence[bytes], data_dir: Path) -> None:
    """The defect crops of a stored frame, next to it (a crop that cannot be written is logged; none is
    written while images are skipped)."""
    if crops and HEALTH.image_skip_reason(data_dir) is not None:
        return
    for k, data in enumerate(crops):
        rel = crop_file(result, k)
        try:
            images.write_atomic(images.resolve(data_dir, rel), data)
        except OSError as exc:
            HEALTH.write_failed(exc)
            log.warning("cannot store crop %s: %s", rel, exc)
            return


# -- rows -------------------------------------------------------------------------------------------
_INSPECTION_COLUMNS = frozenset(Inspection.__table__.columns.keys())
_RESULT_COLUMNS = tuple(f.name for f in fields(InspectionResult) if f.name in _INSPECTION_COLUMNS)
_TIMING_COLUMNS = tuple(f.name for f in fields(Timings))


def _row_fields(r: InspectionResult) -> dict:
    """The inspection row: every field of the result that is a column, and its stage timings."""
    row = {name: getattr(r, name) for name in _RESULT_COLUMNS}
    row.update((name, getattr(r.timings, name)) for name in _TIMING_COLUMNS)
    return row


def _defect_rows(dets: Detections) -> list[dict]:
    # tolist() gives the same Python floats/ints as iterating Detection objects, without building them
    return [{"class_id": c, "class_name": dets.class_name(c), "confidence": conf,
             "x1": x1, "y1": y1, "x2": x2, "y2": y2}
            for (x1, y1, x2, y2), conf, c in zip(dets.xyxy.tolist(), dets.confidence.tolist(),
                                                 dets.class_id.tolist(), strict=True)]


def _rows_of(r: InspectionResult) -> tuple[dict, list[dict]]:
    """The inspection row and its defect rows; a tracked frame counts its detections and stores none
    (its defects are stored per track, app.inspection.tracks)."""
    if r.tracked:
        return {**_row_fields(r), "defect_count": len(r.detections)}, []
    return _row_fields(r), _defect_rows(r.detections)


class FrameUidConflict(Conflict):
    """Results whose ``frame_uid`` is stored already (or comes earlier in the same batch) with a
    different image: another frame under a used uid, not a replay. Nothing of the batch is written.
    ``results``: the clashing results; ``stored``: frame_uid -> the stored inspection id, where known."""

    reason = "frame-uid-conflict"

    def __init__(self, results: Sequence[InspectionResult], stored: dict[str, int]) -> None:
        named = ", ".join(repr(r.frame_uid) + (f" (inspection {stored[r.frame_uid]})"
                                               if r.frame_uid in stored else "") for r in results[:3])
        more = f" and {len(results) - 3} more" if len(results) > 3 else ""
        super().__init__(f"frame_uid {named}{more} is already stored with a different image; "
                         "a replay must carry the same image, a new frame needs a new frame_uid")
        self.results = list(results)
        self.stored = stored


def _other_image(a: str | None, b: str | None) -> bool:
    """Two digests of one frame_uid that tell two images apart (a row stored before digests were
    kept, or a result without one, cannot be told apart: it counts as a replay)."""
    return a is not None and b is not None and a != b


def _refuse_other_images(results: Sequence[InspectionResult], first: dict[str, InspectionResult],
                         stored: dict[str, tuple[int, str | None]]) -> None:
    """Raise FrameUidConflict for results whose uid is stored with another image, or, when it is not
    stored yet, comes first in the batch with another image."""
    clashing = [r for r in results
                if _other_image(stored[r.frame_uid][1] if r.frame_uid in stored
                                else first[r.frame_uid].image_sha256, r.image_sha256)]
    if clashing:
        raise FrameUidConflict(clashing, {uid: v[0] for uid, v in stored.items()})


@dataclass
class Stored:
    """One stored result: its inspection ``id``, ``created`` (False: the frame_uid was already stored,
    an idempotent replay) and, unless ``persist_results(..., load_rows=False)``, the ``row`` itself
    (with its defects)."""

    id: int
    created: bool
    loaded: Inspection | None = field(default=None, repr=False)

    @property
    def row(self) -> Inspection:
        if self.loaded is None:
            raise LookupError(f"inspection {self.id} was stored without loading its row (load_rows=False)")
        return self.loaded


def persist_results(session: Session, results: Sequence[InspectionResult], *, data_dir: Path,
                    image_policy: ImagePolicy | None = None, load_rows: bool = True) -> list[Stored]:
    """Store a batch in one transaction: camera rows on first use, images, inspections and defects.
    ``image_policy``: applied to the results first (the REST door); None when their door applied it
    already (the ingest writer): each result's image is then the one it carries (``image_bytes``,
    or a file written before, named in ``image_path``). Frames whose ``frame_uid`` is already stored
    are not written again (their existing rows come back with ``created=False``), also when a
    concurrent writer (another service instance) stores the same frame or creates the same camera at
    the same moment: both inserts are ``INSERT ... ON CONFLICT DO NOTHING``, so such a race ends in a
    replay, never in an error. Image files of a failed transaction are removed. Returns one
    ``Stored`` per result, in input order, after the commit; with ``load_rows=False`` (callers that
    need only ids, e.g. the ingest writer) the ORM rows are not loaded back (``Stored.row`` raises)."""
    if image_policy is not None:
        for r in results:
            apply_upload_image_policy(r, image_policy)
    undecided = [r.frame_uid for r in results if r.image is not None]
    if undecided:
        raise ValueError(f"no image policy was applied to {undecided[:3]} (apply_image_policy first)")
    written: list[Path] = []
    database_file = sqlite_file(session.get_bind().engine.url)
    try:
        HEALTH.check_database_file(database_file)  # DatabaseFileGone: a 503, or the writer's journal
        stored = _persist_once(session, results, data_dir, written, load_rows)
        HEALTH.check_database_file(database_file)  # deleted or replaced while this batch was written
        session.commit()
    except BaseException:
        # remove the files while this transaction still holds its rows: a concurrent writer of the
        # same frame_uid waits on them, and writes its own file only after our rollback
        for path in written:
            images.remove_quietly(path)
        for r in results:
            if r.image_bytes is not None:  # a path this attempt gave (a file written earlier stays)
                r.image_path = None
        session.rollback()
        raise
    for s, r in zip(stored, results, strict=True):
        if s.created:
            camera = metrics.camera_label(r.camera_id)  # bounded: caller-chosen ids beyond a cap are "other"
            metrics.INSPECTIONS_TOTAL.labels(verdict=r.verdict, camera=camera).inc()
            if r.tracked:  # its defects are counted once each, when their tracks are stored
                continue
            per_class = Counter(map(r.detections.class_name, r.detections.class_id.tolist()))
            for class_name, n in per_class.items():
                metrics.DEFECTS_TOTAL.labels(class_name=class_name).inc(n)
    return stored


def _persist_once(session: Session, results: Sequence[InspectionResult], data_dir: Path,
                  written: list[Path], load_rows: bool) -> list[Stored]:
    existing = repository.stored_frames_by_uid(session, (r.frame_uid for r in results))
    first: dict[str, InspectionResult] = {}  # frame_uid -> its first result in this batch
    for r in results:
        first.setdefault(r.frame_uid, r)
    _refuse_other_images(results, first, existing)
    new = [first[uid] for uid in sorted(first) if uid not in existing]
    # rows are inserted in a fixed order (cameras by id, then frames by frame_uid), so two batches
    # that overlap wait on each other instead of deadlocking
    cameras: dict[str, tuple[str | None, str | None]] = {}
    for r in new:
        if r.camera_id:
            cameras.setdefault(r.camera_id, (r.line, r.station))
    for camera_id in sorted(cameras):
        repository.ensure_camera(session, camera_id, *cameras[camera_id])
    for r in new:
        if r.image_bytes is not None and skip_image_if_unwritable(r, data_dir):
            r.image_path = image_file(r)
            r.image_size = images.disk_bytes(len(r.image_bytes or b""))
    created = repository.insert_inspections(session, [_rows_of(r) for r in new])
    for r in new:
        if r.frame_uid not in created:
            r.image_path = None  # stored meanwhile by a concurrent writer: a replay, its file stays
        elif r.image_bytes is not None:  # our own row is in: now its file
            try:
                written.append(_write_image(r, data_dir))
            except OSError as exc:  # full disk, read-only folder: the row is kept without its image
                HEALTH.write_failed(exc)
                skip_image(r, "write_failed")
                session.execute(update(Inspection).where(Inspection.frame_uid == r.frame_uid)
                                .values(image_path=None, image_size=0, crop_count=0, crop_size=0))
    raced = [uid for uid in first if uid not in existing and uid not in created]
    if raced:  # stored meanwhile by a concurrent writer: a replay, unless its image is another
        existing = {**existing, **repository.stored_frames_by_uid(session, raced)}
        _refuse_other_images(results, first, existing)
    # NG results: queue the inspection.ng webhook event in this transaction (hooks asked once a batch,
    # payloads built only when someone listens)
    new_ng = [uid for uid in created if first[uid].verdict == NG and not first[uid].tracked]
    hooks = subscribers(session, "inspection.ng") if new_ng else []
    if load_rows:
        rows = repository.get_inspections_by_uid(session, first)
        ids = {uid: row.id for uid, row in rows.items()}
    else:
        rows = repository.get_inspections_by_uid(session, new_ng) if hooks else {}
        ids = {**{uid: v[0] for uid, v in existing.items()}, **created}
    out: list[Stored] = []
    for r in results:
        if r.frame_uid not in ids:
            raise RuntimeError(f"inspection {r.frame_uid!r} is missing right after it was stored")
        is_new = r.frame_uid in created and first[r.frame_uid] is r
        out.append(Stored(ids[r.frame_uid], is_new, rows.get(r.frame_uid) if load_rows else None))
        if is_new and hooks and r.verdict == NG and not r.tracked:
            enqueue_inspection(session, rows[r.frame_uid], hooks)
    return out
