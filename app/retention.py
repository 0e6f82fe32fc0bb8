"""Retention: how long frames, crops and rows are kept (the settings, each camera's ``retention``), and
the pruner that deletes what is past it, oldest first, in short transactions.

One pass (``Pruner.run_once``), each step in batches of ``INSPECT_PRUNE_BATCH`` inspections:

1. rows older than their row limit go, with their defects and any files left;
2. frames older than their frame limit go, their rows stay and say the image expired;
3. crops older than their crop limit go;
4. while the image store is above its cap ``INSPECT_IMAGE_STORE_MAX_GB`` (less room for what the next
   interval writes: ``cap_target``) or free space is below
   ``INSPECT_DISK_LOW_WATERMARK_MB``, the oldest images go, unreviewed before reviewed.

An inspection with a reviewed defect (confirmed, reclassified or drawn by an operator: every status
but ``pending`` and ``rejected``) is kept at least ``INSPECT_RETENTION_REVIEWED_DAYS`` by steps 1-3.
The frame and crops of a track's best frame (a camera with tracking: the image of a physical defect)
are kept as long as its row by steps 2-3; only step 4 (a full store, a full disk) takes them earlier.

Rows and files stay consistent: the files a batch will delete are listed in a file of its own,
``prune-pending-<uuid>.json``, first, then the rows are updated or deleted (one commit), then the files
are removed and the list with them. A crash in between leaves the list, and a later pass (of any
process sharing the data folder) removes those of its files that no row names any more, once the list
is older than any live batch (``STALE_PENDING_S``): no row ever names a deleted file, and no deleted
row leaves its files behind."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, exists, func, not_, or_, select, true, tuple_, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app import images, metrics
from app.background import BackgroundLoop
from app.db.models import Defect, Inspection, Track
from app.db.session import Database
from app.ingest.config import CameraConfig
from app.inspection.store import crop_name
from app.settings import Settings
from app.storage_health import HEALTH
from app.vocabulary import utcnow

log = logging.getLogger(__name__)

PENDING_GLOB = "prune-pending-*.json"
STALE_PENDING_S = 600.0  # a list this old belongs to no live batch (a batch takes well under a second)
NOT_REVIEWED = ("pending", "rejected")
KINDS = ("frame", "crop")
CAP_TARGET = 0.9  # a pass keeps the store at most at this share of its cap, and lower when more than the
# rest was written during the last interval (GROWTH_MARGIN times that): room for what is written until the
# next pass, so the store stays under the cap in between
GROWTH_MARGIN = 1.5
PAUSE_BETWEEN_BATCHES_S = 0.02  # the writer and the inspections get the database between two batches


@dataclass(frozen=True)
class KeepDays:
    """Days a camera's frames, crops and rows are kept (0: no age limit)."""

    frame: float
    crop: float
    row: float


@dataclass(frozen=True)
class RetentionPolicy:
    default: KeepDays
    reviewed_days: float
    per_camera: dict[str, KeepDays] = field(default_factory=dict)
    max_image_bytes: int = 0  # 0: no cap
    watermark_bytes: int = 0
    batch: int = 500

    @classmethod
    def from_settings(cls, settings: Settings, cameras: Iterable[CameraConfig] = ()) -> RetentionPolicy:
        default = KeepDays(settings.retention_frame_days, settings.retention_crop_days,
                           settings.retention_row_days)
        per_camera = {}
        for cam in cameras:
            r = cam.retention
            if (r.frame_days, r.crop_days, r.row_days) != (None, None, None):
                per_camera[cam.id] = KeepDays(
                    default.frame if r.frame_days is None else r.frame_days,
                    default.crop if r.crop_days is None else r.crop_days,
                    default.row if r.row_days is None else r.row_days)
        return cls(default, settings.retention_reviewed_days, per_camera,
                   int(settings.image_store_max_gb * 10**9), int(settings.disk_low_watermark_mb * 10**6),
                   settings.prune_batch)

    def groups(self) -> list[tuple[ColumnElement[bool], KeepDays]]:
        """(which inspections, their limits): one group per camera with its own, one for the rest."""
        out: list[tuple[ColumnElement[bool], KeepDays]] = [
            (Inspection.camera_id == cam, days) for cam, days in sorted(self.per_camera.items())]
        rest = (or_(Inspection.camera_id.is_(None), Inspection.camera_id.not_in(sorted(self.per_camera)))
                if self.per_camera else true())
        out.append((rest, self.default))
        return out


def reviewed() -> ColumnElement[bool]:
    """The inspection has a defect an operator confirmed, reclassified or drew."""
    return exists().where(Defect.inspection_id == Inspection.id, Defect.review_status.not_in(NOT_REVIEWED))


def best_frame_of_a_track() -> ColumnElement[bool]:
    """The inspection is a track's best frame: its image is the tracked defect's."""
    return exists().where(Track.inspection_id == Inspection.id)


@dataclass
class PruneReport:
    """What one pass deleted (or, dry, would delete): counts per kind and reason, and image bytes."""

    dry_run: bool = False
    deleted: dict[str, int] = field(default_factory=dict)  # "<kind>:<reason>" -> count
    bytes: int = 0

    def add(self, kind: str, reason: str, n: int) -> None:
        if n:
            key = f"{kind}:{reason}"
            self.deleted[key] = self.deleted.get(key, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "deleted": dict(sorted(self.deleted.items())), "bytes": self.bytes}


@dataclass(frozen=True)
class _Row:
    id: int
    frame_uid: str
    captured_at: datetime
    image_path: str | None
    image_size: int
    crop_count: int
    crop_size: int


_ROW_COLUMNS = (Inspection.id, Inspection.frame_uid, Inspection.captured_at, Inspection.image_path,
                Inspection.image_size, Inspection.crop_count, Inspection.crop_size)
HAS_FRAME = Inspection.image_path.is_not(None)
HAS_CROPS = Inspection.crop_count > 0
HAS_FILES = or_(HAS_FRAME, HAS_CROPS)  # the predicate of ix_inspections_images_captured


def crop_paths(row: _Row) -> list[str]:
    """Where the crops of a row are (``images/Y/M/D/<frame_uid>-crop<k>.jpg``, the capture date in UTC)."""
    return [crop_name(row.frame_uid, row.captured_at, k) for k in range(row.crop_count)]


def files_named_by_rows(session: Session) -> set[str]:
    """Every image file the rows name (frames and crops), relative to the data folder: what the image
    store must hold exactly, no more and no less, after any pass (the consistency drills and soaks)."""
    named: set[str] = set()
    for values in session.execute(select(*_ROW_COLUMNS).where(HAS_FILES)):
        row = _Row(*values)
        if row.image_path:
            named.add(row.image_path)
        named.update(crop_paths(row))
    return named


class Pruner:
    """Deletes what the policy no longer keeps; ``run_once`` for one pass (the ``prune`` command),
    ``start``/``stop`` for a background thread in the service."""

    def __init__(self, db: Database, data_dir: Path, policy: RetentionPolicy) -> None:
        self.db, self.data_dir, self.policy = db, Path(data_dir), policy
        self._loop: BackgroundLoop | None = None
        self.passes = 0
        self.last_error: str | None = None
        self.usage: dict[str, dict[str, dict[str, int]]] = {}  # the last pass's store_usage()
        self._store_after_pass: int | None = None  # image store bytes when the last pass ended
        self._cap_target = 0

    # -- the thread --------------------------------------------------------------------------------
    def start(self, interval_s: float) -> Pruner:
        self._loop = BackgroundLoop("retention-pruner", self._pass, interval_s)
        self._loop.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None:
            self._loop.stop(timeout)

    def _stopping(self) -> bool:
        return self._loop is not None and self._loop.stopping

    def _pause(self, seconds: float) -> None:
        """Between batches: the writer and the API get the database; a stop ends the pause."""
        if self._loop is not None:
            self._loop.wait(seconds)
        else:
            time.sleep(seconds)

    def _pass(self) -> bool:
        """One pass of the service's thread; the next waits the interval, whatever this one did."""
        try:
            report = self.run_once()
            self.last_error = None
            if report.deleted:
                log.info("pruned %s (%d bytes of images)", report.deleted, report.bytes)
        except Exception as exc:  # a database away, a file system error: try again next time
            self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("pruning pass failed: %s", self.last_error)
        self.passes += 1
        return False

    # -- one pass ------------------------------------------------------------------------------------
    def run_once(self, dry_run: bool = False, now: datetime | None = None) -> PruneReport:
        report = PruneReport(dry_run=dry_run)
        now = now or utcnow()
        if not dry_run:
            self.finish_pending()
        self._cap_target = self.cap_target(self.store_bytes()) if self.policy.max_image_bytes else 0
        for where, days in self.policy.groups():
            self._by_age(report, dry_run, "row", where, days.row, now)
            self._by_age(report, dry_run, "frame", where, days.frame, now)
            self._by_age(report, dry_run, "crop", where, days.crop, now)
        self._by_pressure(report, dry_run)
        if not dry_run:
            usage = self.update_store_metrics()
            self._store_after_pass = sum(k["bytes"] for kinds in usage.values() for k in kinds.values())
        return report

    def cap_target(self, store_now: int) -> int:
        """Where a pass takes the store under its cap: ``CAP_TARGET`` of it, or lower by
        ``GROWTH_MARGIN`` times what was written since the last pass ended, whichever is less."""
        cap = self.policy.max_image_bytes
        written = 0 if self._store_after_pass is None else max(0, store_now - self._store_after_pass)
        return max(0, int(min(cap * CAP_TARGET, cap - GROWTH_MARGIN * written)))

    def _age_condition(self, days: float, now: datetime) -> ColumnElement[bool] | None:
        if days <= 0:
            return None
        old = Inspection.captured_at < now - timedelta(days=days)
        keep = self.policy.reviewed_days
        if keep <= 0:
            return and_(old, not_(reviewed()))
        return and_(old, or_(not_(reviewed()), Inspection.captured_at < now - timedelta(days=keep)))

    def _by_age(self, report: PruneReport, dry_run: bool, kind: str, where: ColumnElement[bool],
                days: float, now: datetime) -> None:
        cond = self._age_condition(days, now)
        if cond is None:
            return
        has = {"row": true(), "frame": HAS_FRAME, "crop": HAS_CROPS}[kind]
        if kind != "row":  # a tracked defect's image lives as long as its row
            has = and_(has, not_(best_frame_of_a_track()))
        for batch in self._walk(and_(where, cond, has), with_files=kind != "row"):
            if self._stopping():
                return
            self._delete(batch, kind, "age", report, dry_run)

    def _over(self, dry_freed: int) -> str | None:
        """Why images must go now: ``cap`` (the store is above ``CAP_TARGET`` of its cap) or
        ``watermark`` (free space is low); None when neither holds. ``dry_freed``: bytes a dry run has
        pretended to delete."""
        cap = self._cap_target
        if self.policy.max_image_bytes and self.store_bytes() - dry_freed > cap:
            return "cap"
        if self.policy.watermark_bytes:
            HEALTH.forget_disk()
            free, _ = HEALTH.disk(self.data_dir)
            if free + dry_freed < self.policy.watermark_bytes:
                return "watermark"
        return None

    def _by_pressure(self, report: PruneReport, dry_run: bool) -> None:
        freed = 0
        for scope in (not_(reviewed()), reviewed()):
            for batch in self._walk(and_(HAS_FILES, scope), with_files=True):
                reason = self._over(freed if dry_run else 0)
                if reason is None or self._stopping():
                    return
                if reason == "cap":
                    excess = self.store_bytes() - (freed if dry_run else 0) - self._cap_target
                    batch = self._trim_to(batch, excess)
                freed += self._delete(batch, "image", reason, report, dry_run)

    @staticmethod
    def _trim_to(batch: list[_Row], excess: int) -> list[_Row]:
        """The oldest rows of ``batch`` whose images free at least ``excess`` bytes."""
        out, total = [], 0
        for row in batch:
            if total >= excess:
                break
            out.append(row)
            total += row.image_size + row.crop_size
        return out

    def _walk(self, cond: ColumnElement[bool], with_files: bool) -> Iterator[list[_Row]]:
        """The matching inspections oldest first, a batch at a time (keyset on captured_at, id, so a
        dry run that deletes nothing walks on too)."""
        after: tuple[datetime, int] | None = None
        while True:
            q = select(*_ROW_COLUMNS).where(cond)
            if with_files:
                q = q.where(HAS_FILES)
            if after is not None:
                q = q.where(tuple_(Inspection.captured_at, Inspection.id) > tuple_(*after))
            q = q.order_by(Inspection.captured_at, Inspection.id).limit(self.policy.batch)
            with self.db.session() as session:
                rows = [_Row(*r) for r in session.execute(q)]
            if not rows:
                return
            yield rows
            after = (rows[-1].captured_at, rows[-1].id)
            if len(rows) < self.policy.batch:
                return
            self._pause(PAUSE_BETWEEN_BATCHES_S)

    # -- deleting ------------------------------------------------------------------------------------
    def _delete(self, batch: list[_Row], kind: str, reason: str, report: PruneReport, dry_run: bool) -> int:
        """Delete ``kind`` (row | frame | crop | image = frame and crops) of ``batch``; returns the image
        bytes freed."""
        frames = kind in ("row", "frame", "image")
        crops = kind in ("row", "crop", "image")
        files: list[dict[str, str]] = []
        freed = 0
        n_frames = n_crops = 0
        for row in batch:
            if frames and row.image_path:
                files.append({"path": row.image_path, "uid": row.frame_uid, "kind": "frame"})
                freed += row.image_size
                n_frames += 1
            if crops and row.crop_count:
                files += [{"path": p, "uid": row.frame_uid, "kind": "crop"} for p in crop_paths(row)]
                freed += row.crop_size
                n_crops += row.crop_count
        if not dry_run and batch:
            self._commit(batch, kind, files)
        if kind == "row":
            report.add("row", reason, len(batch))
        report.add("frame", reason, n_frames)
        report.add("crop", reason, n_crops)
        report.bytes += freed
        if not dry_run:
            if kind == "row":
                metrics.PRUNED_TOTAL.labels(kind="row", reason=reason).inc(len(batch))
            metrics.PRUNED_TOTAL.labels(kind="frame", reason=reason).inc(n_frames)
            metrics.PRUNED_TOTAL.labels(kind="crop", reason=reason).inc(n_crops)
            metrics.PRUNED_BYTES_TOTAL.inc(freed)
        return freed

    def _commit(self, batch: list[_Row], kind: str, files: list[dict[str, str]]) -> None:
        ids = [r.id for r in batch]
        pending = self.data_dir / f"prune-pending-{uuid.uuid4().hex}.json"
        if files:
            images.write_atomic(pending, json.dumps(files).encode())
        with self.db.session() as session:
            if kind == "row":
                session.execute(delete(Inspection).where(Inspection.id.in_(ids)))
            else:
                values: dict[str, Any] = {}
                if kind in ("frame", "image"):
                    values.update(image_path=None, image_size=0, image_expired_at=utcnow())
                if kind in ("crop", "image"):
                    values.update(crop_count=0, crop_size=0)
                q = update(Inspection).where(Inspection.id.in_(ids))
                if kind == "frame":
                    q = q.where(HAS_FRAME)
                session.execute(q.values(**values).execution_options(synchronize_session=False))
            session.commit()
        self._unlink(files)
        pending.unlink(missing_ok=True)
        HEALTH.forget_disk()

    def _unlink(self, files: list[dict[str, str]]) -> None:
        for entry in files:
            try:
                images.remove_quietly(images.resolve(self.data_dir, entry["path"]))
            except ValueError:
                log.error("pruner: refusing to delete %r, outside the data folder", entry["path"])

    def finish_pending(self) -> None:
        """After a crash between a batch's commit and its file deletions: remove the files of stale
        lists that no row names any more (the rows of a batch that never committed keep theirs)."""
        for pending in sorted(self.data_dir.glob(PENDING_GLOB)):
            try:
                stale = time.time() - pending.stat().st_mtime >= STALE_PENDING_S
            except FileNotFoundError:
                continue  # its batch just finished
            if stale:
                self._finish(pending)

    def _finish(self, pending: Path) -> None:
        try:
            files = json.loads(pending.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("pruner: unreadable %s (%s), set aside", pending, exc)
            os.replace(pending, pending.with_suffix(".broken"))
            return
        uids = sorted({f["uid"] for f in files})
        with self.db.session() as session:
            rows = {r.frame_uid: r for r in session.execute(
                select(Inspection.frame_uid, Inspection.image_path, Inspection.crop_count)
                .where(Inspection.frame_uid.in_(uids)))}
        gone = []
        for f in files:
            row = rows.get(f["uid"])
            kept = row is not None and (row.image_path == f["path"] if f["kind"] == "frame"
                                        else row.crop_count > 0)
            if not kept:
                gone.append(f)
        self._unlink(gone)
        pending.unlink(missing_ok=True)
        log.info("pruner: finished an interrupted batch (%d of %d files removed)", len(gone), len(files))

    # -- the store's size ----------------------------------------------------------------------------
    def store_bytes(self) -> int:
        with self.db.session() as session:
            size = func.sum(Inspection.image_size + Inspection.crop_size)
            total = session.execute(select(func.coalesce(size, 0)).where(HAS_FILES)).scalar_one()
        return int(total)

    def store_usage(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per camera ("" for none) and kind: ``{"files": n, "bytes": n}``."""
        q = (select(Inspection.camera_id, func.count(Inspection.image_path),
                    func.coalesce(func.sum(Inspection.image_size), 0),
                    func.coalesce(func.sum(Inspection.crop_count), 0),
                    func.coalesce(func.sum(Inspection.crop_size), 0))
             .where(HAS_FILES).group_by(Inspection.camera_id))
        with self.db.session() as session:
            rows = session.execute(q).all()
        return {cam or "": {"frame": {"files": int(nf), "bytes": int(bf)},
                            "crop": {"files": int(nc), "bytes": int(bc)}}
                for cam, nf, bf, nc, bc in rows}

    def update_store_metrics(self) -> dict[str, dict[str, dict[str, int]]]:
        usage = self.store_usage()
        metrics.IMAGE_STORE_BYTES.clear()
        metrics.IMAGE_STORE_FILES.clear()
        for cam, kinds in usage.items():
            for kind in KINDS:
                metrics.IMAGE_STORE_BYTES.labels(camera=cam, kind=kind).set(kinds[kind]["bytes"])
                metrics.IMAGE_STORE_FILES.labels(camera=cam, kind=kind).set(kinds[kind]["files"])
        self.usage = usage
        return usage
