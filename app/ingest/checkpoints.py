"""Checkpoints of finite sources (a video file, an image folder): where each camera's source stands, so a
restart after a stop or a crash goes on after the frames already stored instead of reading (decoding,
inferring) the source from its start again.

One file per camera, ``<data_dir>/checkpoints/<camera>.json``, replaced atomically::

    {"camera": "line1", "source": "/data/line.avi", "key": "file:/data/line.avi:1234:1700000000",
     "position": 268, "finished": false}

``position``: every frame before it is stored, journaled or dropped by the camera's buffer policy (the
writer's callbacks advance it, so it is never ahead of what is durable; frames read again after a crash
are replays of stored frame_uids, not duplicates). ``key``: the source as it was read up to
``position`` (``Source.resume_key``): a file's path, size and modification time, a folder's files up
to ``position``; a key that no longer matches (the file changed) starts the camera over.
``finished``: the source ran out and every frame of it is settled.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from app import images
from app.ingest.sources import Source

log = logging.getLogger(__name__)


def checkpoints_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "checkpoints"


@dataclass(frozen=True)
class Checkpoint:
    key: str
    position: int
    finished: bool = False


class CheckpointStore:
    """The checkpoint files of one data folder."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def path(self, camera_id: str) -> Path:
        return self.dir / f"{camera_id}.json"

    def load(self, camera_id: str) -> Checkpoint | None:
        """The camera's checkpoint; None when there is none, or it cannot be read (a warning: the
        camera then starts over, which stores nothing twice)."""
        path = self.path(camera_id)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return Checkpoint(str(raw["key"]), int(raw["position"]), bool(raw.get("finished", False)))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("checkpoint %s is unreadable (%s); camera %s starts over", path, exc, camera_id)
            return None

    def save(self, camera_id: str, checkpoint: Checkpoint, source: str = "") -> None:
        body = {"camera": camera_id, "source": source, **asdict(checkpoint)}
        images.write_atomic(self.path(camera_id), (json.dumps(body) + "\n").encode())

    def forget(self, camera_ids: Iterable[str]) -> list[str]:
        """Remove the checkpoints of these cameras (their sources are read from the start again);
        returns the cameras that had one."""
        removed = []
        for camera_id in camera_ids:
            path = self.path(camera_id)
            if path.is_file():
                path.unlink()
                removed.append(camera_id)
        return removed


class Progress:
    """One camera's frames in flight, in the order they were read, and ``position``: the source position
    before which every frame is settled (stored, journaled or dropped). Frames settle in any order
    (several workers); the position advances over the settled frames at the head only."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.position = start
        self._lock = threading.Lock()
        self._in_flight: deque[tuple[int, int]] = deque()  # (frame index, source position after it)
        self._settled: set[int] = set()
        self._end: int | None = None

    def restart(self) -> None:
        """The source was opened again (at ``position``): what was in flight is read again."""
        with self._lock:
            self._in_flight.clear()
            self._end = None

    def read(self, index: int, after: int) -> None:
        """Frame ``index`` was read; the source stands at ``after`` now."""
        with self._lock:
            self._in_flight.append((index, after))

    def ended(self, end: int) -> None:
        """The source ran out at position ``end``."""
        with self._lock:
            self._end = end
            self._advance()

    def settle(self, index: int) -> None:
        with self._lock:
            self._settled.add(index)
            self._advance()

    @property
    def finished(self) -> bool:
        with self._lock:
            return self._end is not None and not self._in_flight

    def _advance(self) -> None:
        while self._in_flight and self._in_flight[0][0] in self._settled:
            index, after = self._in_flight.popleft()
            self._settled.discard(index)
            self.position = after
        if self._end is not None and not self._in_flight:
            self.position = max(self.position, self._end)


class CameraCheckpoint:
    """One camera's checkpoint: loaded at the first open of its source (the capture thread), advanced
    as its frames settle and saved by the writer thread after each commit or journal append.
    ``on_saved(position, resumed_from)`` reports it to the camera's state."""

    def __init__(self, camera_id: str, source: Source, store: CheckpointStore,
                 on_saved: Callable[[int, int | None], None]) -> None:
        self.camera_id, self.source, self.store, self.on_saved = camera_id, source, store, on_saved
        self.progress: Progress | None = None
        self.disabled = False
        self._lock = threading.Lock()
        self._saved: tuple[int, bool] | None = None

    def opened(self) -> None:
        """Right after the source opened: the first time, go on from the checkpoint if the source is
        still the one it names; after a reconnect, from the first frame not yet settled."""
        if self.disabled:
            return
        if self.progress is None:
            if self.source.resume_key(0) is None:  # this kind of source does not resume
                self.disabled = True
                return
            saved = self.store.load(self.camera_id)
            start = 0
            if saved is not None and self.source.resume_key(saved.position) == saved.key:
                start = saved.position
            elif saved is not None:
                log.info("camera %s: the source changed since its checkpoint; reading it from the start",
                         self.camera_id)
            self.progress = Progress(start)
            self.on_saved(start, start)
            if start:
                log.info("camera %s: going on from its checkpoint at frame %d", self.camera_id, start)
        else:
            self.progress.restart()
        if self.progress.position:
            self.source.seek(self.progress.position)

    def read(self, index: int) -> None:
        """Frame ``index`` was read (before it is queued)."""
        if self.progress is not None:
            self.progress.read(index, self.source.position)

    def ended(self) -> None:
        """The source ran out."""
        if self.progress is not None:
            self.progress.ended(self.source.position)
            self.save()

    def settle(self, index: int | None) -> None:
        """Frame ``index`` of this run is stored, journaled or dropped (``save`` after)."""
        if self.progress is not None and index is not None:
            self.progress.settle(index)

    def save(self) -> None:
        """Write the checkpoint if it moved."""
        progress = self.progress
        if progress is None:
            return
        with self._lock:
            position, finished = progress.position, progress.finished
            if self._saved == (position, finished):
                return
            key = self.source.resume_key(position)
            if key is None:
                return
            try:
                self.store.save(self.camera_id, Checkpoint(key, position, finished), self.source.describe())
            except OSError as exc:  # behind is safe: a restart reads a little more again
                log.warning("camera %s: cannot write its checkpoint: %s", self.camera_id, exc)
                return
            self._saved = (position, finished)
        self.on_saved(position, None)
