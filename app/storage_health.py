"""The health of what the service writes to: free space on the data folder's file system (the
low-disk floor below which new images are skipped), image writes that fail (full disk, read-only
folder), and the SQLite file the service opened (deleted or replaced underneath it). Inspection goes
on without images; rows that cannot be made durable are refused (``DatabaseFileGone``), never
acknowledged.

One ``StorageHealth`` per process (``HEALTH``), configured by the service from the settings; the
image store (``app.inspection.store``), the pruner, ``/readyz`` and ``/api/v1/cameras`` read it."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app import metrics
from app.errors import Unavailable

log = logging.getLogger(__name__)

FREE_SPACE_TTL_S = 1.0  # how long one statvfs answer is reused (a frame at 30 FPS does not need more)
WRITE_FAILURE_HOLD_S = 10.0  # after a failed image write, images are skipped this long before trying again
DISK_FULL_BYTES = 1 << 20  # less free than this: the disk counts as full
LOG_EVERY_S = 60.0  # a repeated skip is logged once a minute, counted always
SKIP_REASONS = ("low_disk", "write_failed")


class DatabaseFileGone(Unavailable, SQLAlchemyError):
    """The SQLite file the service opened was deleted or replaced: a commit would land in a file no
    one will read again. A ``SQLAlchemyError`` too, so the ingest writer journals instead."""

    reason = "database_file_gone"


@dataclass(frozen=True)
class FileIdentity:
    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        st = os.stat(path)
        return cls(st.st_dev, st.st_ino)


@dataclass
class StorageOptions:
    """What the image store is told by the settings (the defaults are the settings' defaults)."""

    jpeg_quality: int = 90
    store_frames: bool = True
    floor_bytes: int = 512 * 10**6
    watermark_bytes: int = 2048 * 10**6


class StorageHealth:
    def __init__(self) -> None:
        self.options = StorageOptions()
        self.data_dir = Path("./data")  # the service's INSPECT_DATA_DIR, once configured
        self._lock = threading.Lock()
        self._free: dict[Path, tuple[float, int, int]] = {}  # data dir -> (checked at, free, total)
        self._write_failed_at: float | None = None
        self._write_error: str | None = None
        self._last_log: dict[str, float] = {}  # skip reason -> when it was last logged
        self._faults_seen: set[str] = set()  # faults logged and not yet cleared
        self._databases: dict[Path, FileIdentity] = {}
        self.skipped: Counter[str] = Counter()  # camera ("" for uploads without one) -> images skipped

    # -- settings ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget failures, skips, watched files and cached free space (a new service, a test)."""
        with self._lock:
            self.data_dir = Path("./data")
            self._free.clear()
            self._write_failed_at = self._write_error = None
            self._last_log.clear()
            self._faults_seen.clear()
            self._databases.clear()
            self.skipped.clear()

    def configure(self, *, jpeg_quality: int, store_frames: bool, floor_mb: float,
                  watermark_mb: float, data_dir: Path | None = None) -> None:
        if data_dir is not None:
            self.data_dir = Path(data_dir)
        self.options = StorageOptions(jpeg_quality, store_frames, int(floor_mb * 10**6),
                                      int(watermark_mb * 10**6))

    # -- free space ---------------------------------------------------------------------------------
    def disk(self, data_dir: Path) -> tuple[int, int]:
        """Free and total bytes of the file system holding ``data_dir`` (cached for a second)."""
        key = Path(data_dir)
        now = time.monotonic()
        with self._lock:
            cached = self._free.get(key)
        if cached is not None and now - cached[0] < FREE_SPACE_TTL_S:
            return cached[1], cached[2]
        probe = key.absolute()
        while not probe.exists() and probe != probe.parent:  # a data dir not created yet: its disk
            probe = probe.parent
        usage = shutil.disk_usage(probe)
        with self._lock:
            self._free[key] = (now, usage.free, usage.total)
        metrics.DISK_FREE_BYTES.set(usage.free)
        metrics.DISK_TOTAL_BYTES.set(usage.total)
        return usage.free, usage.total

    def forget_disk(self) -> None:
        """Read free space afresh at the next question (after the pruner deleted files)."""
        with self._lock:
            self._free.clear()

    def low_disk(self, data_dir: Path) -> bool:
        return self.disk(data_dir)[0] < self.options.floor_bytes

    def below_watermark(self, data_dir: Path) -> bool:
        return self.disk(data_dir)[0] < self.options.watermark_bytes

    # -- image writes ---------------------------------------------------------------------------------
    def image_skip_reason(self, data_dir: Path) -> str | None:
        """Why no new image may be written now: ``low_disk`` (free space under the floor),
        ``write_failed`` (a write failed moments ago: full disk, read-only folder), or None."""
        with self._lock:
            failed_at = self._write_failed_at
        if failed_at is not None and time.monotonic() - failed_at < WRITE_FAILURE_HOLD_S:
            return "write_failed"
        try:
            return "low_disk" if self.low_disk(data_dir) else None
        except OSError:
            return "write_failed"

    def image_skipped(self, camera: str | None, reason: str, frame_uid: str) -> None:
        """Count (and now and then log) an image that inspection went on without."""
        metrics.IMAGES_SKIPPED_TOTAL.labels(camera=camera or "", reason=reason).inc()
        with self._lock:
            self.skipped[camera or ""] += 1
            due = time.monotonic() - self._last_log.get(reason, -LOG_EVERY_S) >= LOG_EVERY_S
            if due:
                self._last_log[reason] = time.monotonic()
            error = self._write_error
        if due:
            why = ("free space is below INSPECT_DISK_FLOOR_MB" if reason == "low_disk"
                   else f"image writes fail ({error})")
            log.warning("storing inspections without their images: %s (frame %s; counted in "
                        "inspect_images_skipped_total, logged once a minute)", why, frame_uid)

    def write_failed(self, exc: OSError) -> None:
        with self._lock:
            self._write_failed_at = time.monotonic()
            self._write_error = f"{errno.errorcode.get(exc.errno or 0, 'OSError')}: {exc.strerror or exc}"

    def write_succeeded(self) -> None:
        if self._write_failed_at is not None:
            with self._lock:
                self._write_failed_at = None

    # -- the SQLite file ------------------------------------------------------------------------------
    def watch_database_file(self, path: Path | None) -> None:
        """Remember which file a SQLite database is, so a deletion or replacement is noticed."""
        if path is None:
            return
        try:
            identity = FileIdentity.of(path)
        except OSError:
            return  # not created yet: nothing to guard
        with self._lock:
            self._databases[path.resolve()] = identity

    def database_file_problem(self, path: Path | None) -> str | None:
        """``deleted`` or ``replaced`` for a watched SQLite file that is no longer the one opened."""
        if path is None:
            return None
        key = path.resolve()
        with self._lock:
            expected = self._databases.get(key)
        if expected is None:
            return None
        try:
            now = FileIdentity.of(key)
        except FileNotFoundError:
            return "deleted"
        except OSError:
            return None
        return None if now == expected else "replaced"

    def check_database_file(self, path: Path | None) -> None:
        """Raise ``DatabaseFileGone`` when a watched SQLite file was deleted or replaced."""
        problem = self.database_file_problem(path)
        if problem is not None:
            metrics.STORAGE_FAULT.labels(kind="database_file").set(1)
            raise DatabaseFileGone(f"the database file was {problem} while the service was running; "
                                   "nothing can be stored until the service restarts")

    # -- faults, for /readyz -------------------------------------------------------------------------------
    def faults(self, data_dir: Path, database_file: Path | None) -> dict[str, str]:
        """The storage faults now, kind -> a message free of paths and hosts: ``database_file``
        (deleted or replaced), ``read_only`` (the data folder refuses writes), ``disk_full``. Each
        kind's ``inspect_storage_fault`` gauge follows; a new fault is logged once."""
        found: dict[str, str] = {}
        problem = self.database_file_problem(database_file)
        if problem is not None:
            found["database_file"] = f"database file {problem}"
        try:
            with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".probe-"):
                pass
        except FileNotFoundError:
            found["read_only"] = "data folder missing"
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                found["disk_full"] = "disk full"
            else:
                found["read_only"] = "data folder not writable"
        try:
            free, _ = self.disk(data_dir)
            if free < DISK_FULL_BYTES:
                found["disk_full"] = "disk full"
        except OSError:
            found.setdefault("read_only", "data folder not readable")
        for kind in ("database_file", "read_only", "disk_full"):
            seen = kind in self._faults_seen
            if kind in found and not seen:
                log.error("storage fault: %s (%s)", found[kind], data_dir if kind != "database_file"
                          else database_file)
                self._faults_seen.add(kind)
            elif kind not in found and seen:
                log.info("storage fault cleared: %s", kind)
                self._faults_seen.discard(kind)
            metrics.STORAGE_FAULT.labels(kind=kind).set(1 if kind in found else 0)
        return found

    def snapshot(self, data_dir: Path) -> dict[str, Any]:
        """Free space, the low-disk state and skipped images, for /readyz and /api/v1/cameras."""
        try:
            free, total = self.disk(data_dir)
        except OSError:
            free = total = 0
        with self._lock:
            skipped = sum(self.skipped.values())
        return {"free_bytes": free, "total_bytes": total, "floor_bytes": self.options.floor_bytes,
                "watermark_bytes": self.options.watermark_bytes,
                "low_disk": free < self.options.floor_bytes, "images_skipped": skipped}


HEALTH = StorageHealth()
