"""A bounded on-disk journal of results the database could not take: append-only JSONL segments,
fsynced per append, replayed oldest first and deleted once committed.

Files: ``<dir>/<12-digit sequence>.jsonl``. A crash can leave a half-written last line; reading skips
it (it was never acknowledged, the frame was not yet counted as journaled). ``<dir>/.lock`` is held
(an OS file lock, released by the OS if the process dies) while a Journal is open: two processes
journaling into one folder would replay and delete each other's segments. Within a process one
Journal is shared by every thread that appends (the camera writer, HTTP uploads): appends, sealing
and removal take its lock, and a replay reads only the segments ``sealed_segments`` hands it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path

from app.errors import Conflict, Unavailable

log = logging.getLogger(__name__)


class JournalInUse(Conflict):
    """Another process (or another open Journal) holds the journal folder."""


def _lock(directory: Path):
    """An exclusive, non-blocking lock on ``directory/.lock``: the open file, or JournalInUse."""
    path = directory / ".lock"
    fh = open(path, "a+")  # noqa: SIM115 - held for the journal's lifetime
    try:
        # the Windows branch cannot run where the mutation tests run (Linux): not mutated
        if os.name == "nt":  # pragma: no mutate
            import msvcrt

            fh.seek(0)  # pragma: no mutate
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)  # pragma: no mutate
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        owner = fh.read().strip() or "unknown"
        fh.close()
        raise JournalInUse(
            f"journal folder {directory} is in use by another process (pid {owner}); give each service "
            "or `defect-inspect ingest` process its own INSPECT_DATA_DIR") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def ensure_journal_free(directory: str | Path) -> None:
    """Raise JournalInUse now if another process journals into ``directory`` (a start-up check, so a
    command can refuse with one line before it starts anything; the lock itself is taken later)."""
    directory = Path(directory)
    if (directory / ".lock").exists():
        _lock(directory).close()


class JournalFull(Unavailable):
    """Appending would exceed the journal's byte limit."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Journal:
    def __init__(self, directory: str | Path, max_bytes: int = 512 << 20,
                 segment_bytes: int = 8 << 20) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.dir)
        self._mutex = threading.Lock()  # appends from several threads; replay's sealed snapshot
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes)
        self._fh = None
        self._current: Path | None = None
        self.pending = 0  # records on disk not yet replayed
        self.bytes = 0
        for seg in self.segments():
            self.bytes += seg.stat().st_size
            self.pending += sum(1 for _ in self._iter_lines(seg))
        if self.pending:
            log.warning("journal %s holds %d results from an earlier run; they will be replayed",
                        self.dir, self.pending)

    def segments(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("*.jsonl") if p.stem.isdigit())

    def _next_segment(self) -> Path:
        segs = self.segments()
        n = int(segs[-1].stem) + 1 if segs else 1
        return self.dir / f"{n:012d}.jsonl"

    def append(self, records: list[dict]) -> None:
        """Write records durably (fsync) or raise JournalFull / OSError; all or nothing per call."""
        if not records:
            return
        data = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in records).encode()
        with self._mutex:
            self._append(data, len(records))

    def _append(self, data: bytes, count: int) -> None:
        if self._lock is None:
            raise OSError(f"journal {self.dir} is closed")
        if self.bytes + len(data) > self.max_bytes:
            raise JournalFull(f"journal {self.dir} would exceed {self.max_bytes} bytes")
        if self._fh is None or (self._current is not None and self._fh.tell() >= self.segment_bytes):
            self._seal()
            self._current = self._next_segment()
            self._fh = open(self._current, "ab")  # noqa: SIM115 - kept open across appends
            _fsync_dir(self.dir)
        start = self._fh.tell()
        try:
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError:
            with contextlib.suppress(OSError):  # leave no partial batch behind
                self._fh.truncate(start)
            raise
        self.bytes += len(data)
        self.pending += count

    def seal(self) -> None:
        """Close the segment being written, so every segment on disk is complete."""
        with self._mutex:
            self._seal()

    def sealed_segments(self) -> list[Path]:
        """Seal the segment being written and list the segments on disk, oldest first: complete, and
        never appended to again (a later append opens a new segment), so a replay may remove them."""
        with self._mutex:
            self._seal()
            return self.segments()

    def _seal(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._current = None

    @staticmethod
    def _iter_lines(path: Path):
        with open(path, "rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    log.warning("journal %s: skipping a half-written last line", path)
                    break
                yield raw

    def read(self, segment: Path) -> list[dict]:
        out = []
        for i, raw in enumerate(self._iter_lines(segment), 1):
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                log.error("journal %s:%d: unreadable record skipped", segment, i)
        return out

    def remove(self, segment: Path, count: int) -> None:
        """Forget a fully replayed segment."""
        with self._mutex:
            size = segment.stat().st_size
            segment.unlink()
            _fsync_dir(self.dir)
            self.bytes = max(0, self.bytes - size)
            self.pending = max(0, self.pending - count)

    def close(self) -> None:
        """Seal the open segment and release the folder (a closed journal cannot append)."""
        with self._mutex:
            self._seal()
            if self._lock is not None:
                self._lock.close()  # closing the file releases the OS lock
                self._lock = None
