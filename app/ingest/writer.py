"""The database writer of the ingest pipeline: one thread, batched commits (N rows or T ms) through
the shared ``app.inspection.persist_results``, and the on-disk journal while the database is away.

Order is kept: while the journal holds anything, new results are journaled behind it; when the
database answers again the journal is replayed oldest first, then live results go straight in.
Replays are idempotent: ``persist_results`` skips frame_uids already stored.

A camera with tracking also hands the writer its ended tracks (``TrackItem``), each queued behind its
best frame (app.ingest.camera_tracking holds it until then), so it is stored (or journaled) after that
frame, in the same order a replay keeps; ``persist_tracks`` skips track_uids already stored.

The writer is the process's one way into the database and the journal: the HTTP door stores its
frames through ``store_now`` (in the request's thread: committed while the database answers,
journaled while it is away), and this thread replays them with the camera results. Whether the
database is away is the database's circuit breaker (app.db.breaker), shared with every request.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app import images
from app import metrics as m
from app.db.breaker import is_outage
from app.db.session import Database
from app.errors import Unavailable
from app.image_policy import ImagePolicy
from app.ingest.config import WriterConfig
from app.ingest.journal import Journal, JournalFull
from app.ingest.sources import derive_frame_uid
from app.inspection import (
    FrameUidConflict,
    InspectionResult,
    Stored,
    apply_upload_image_policy,
    persist_results,
)
from app.inspection.codec import from_record, to_record
from app.inspection.store import crop_file, image_file, write_crops, write_image_now
from app.inspection.tracks import TrackRecord, is_track_record, persist_tracks
from app.inspection.tracks import from_record as track_from_record
from app.inspection.tracks import to_record as track_to_record
from app.vocabulary import API_SOURCE

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One result on its way to the database, with what only this process needs to know."""

    result: InspectionResult
    t_capture: float | None = None  # time.perf_counter() at capture (latency); None after a restart
    crops: list[bytes] = field(default_factory=list)  # JPEG crops of the defects, stored with the row
    position: int | None = None  # the frame's index in its source, for its checkpoint; None after a restart


@dataclass
class TrackItem:
    """One ended track on its way to the database, behind its best frame, with the JPEG crop of its
    best box where its camera keeps crops (stored with it, as one more crop of the best frame)."""

    track: TrackRecord
    crop: bytes | None = None


Queued = Item | TrackItem


def frames_of(items: list[Queued]) -> list[Item]:
    return [i for i in items if isinstance(i, Item)]


def tracks_of(items: list[Queued]) -> list[TrackItem]:
    return [i for i in items if isinstance(i, TrackItem)]


JOURNAL_RETRY_AFTER_S = 10  # a full or failing journal: when to send the frame again
CROP_KEY = "crop_jpeg_b64"  # a journaled track's crop


class JournalUnwritable(Unavailable):
    """The database is away and the journal cannot take the result (full, or its disk fails)."""


def to_journal(item: Queued) -> dict:
    """The journal record of an item (its frame and crops are written to their files first; a track's
    crop, whose file name the database gives, travels in its record)."""
    if isinstance(item, TrackItem):
        rec = track_to_record(item.track)
        if item.crop is not None:
            rec[CROP_KEY] = base64.b64encode(item.crop).decode()
        return rec
    return to_record(item.result)


def from_journal(rec: dict) -> Queued:
    if is_track_record(rec):
        crop = rec.get(CROP_KEY)
        return TrackItem(track_from_record(rec), crop=base64.b64decode(crop) if crop else None)
    return Item(from_record(rec))


def other_image_uid(result: InspectionResult) -> str:
    """The uid of a camera frame whose derived uid is stored with another image (a file changed in
    place without changing its size or modification time, say): derived from that uid and the frame's
    own image digest, so this frame is kept, and kept once however often it is read again."""
    return derive_frame_uid(result.camera_id or "", f"{result.frame_uid}:image:{result.image_sha256}")


def holds_other_image(item: Item, data_dir: Path) -> bool:
    """While the database is away the image store is the witness of a frame_uid in use: True when a
    file of this uid (its frame, else its first crop) holds other bytes than the item would write (an
    identical file is the same frame sent again)."""
    result = item.result
    if result.image_bytes is not None:
        rel, data = image_file(result), result.image_bytes
    elif item.crops:
        rel, data = crop_file(result, 0), item.crops[0]
    else:
        return False
    try:
        return images.resolve(data_dir, rel).read_bytes() != data
    except OSError:  # no such file, or the store cannot be read: its write will tell
        return False


def written_names(result: InspectionResult) -> list[str]:
    """The files of a result whose files are written: its frame (when stored), then its crops."""
    frame = [result.image_path] if result.image_path is not None else []
    return frame + [crop_file(result, k) for k in range(result.crop_count)]


def move_written_files(item: Item, new_uid: str, data_dir: Path) -> None:
    """Give an item's result the uid ``new_uid``; the files a journaled frame wrote already (its
    image bytes and crops are gone from the item then) move to the new uid's names, so the row and
    its files agree."""
    result = item.result
    written = result.image_bytes is None and not item.crops
    old = written_names(result) if written else []
    result.frame_uid = new_uid
    if not written:
        return
    if result.image_path is not None:
        result.image_path = image_file(result)
    for before, after in zip(old, written_names(result), strict=True):
        with contextlib.suppress(FileNotFoundError):  # skipped or pruned: the row says so
            images.resolve(data_dir, before).replace(images.resolve(data_dir, after))


def store_crops(item: Item, data_dir: Path) -> None:
    """Write the item's defect crops next to its frame, once."""
    crops, item.crops = item.crops, []
    write_crops(item.result, crops, data_dir)


class BatchBuffer:
    """The writer's bounded inbox. Producers block while it is full (back-pressure, nothing dropped).
    The writer is woken only when a batch can start (the first result after an empty spell) and when
    ``batch_rows`` are waiting, not once per result: at a few hundred results a second that keeps
    the writer from preempting the inference workers for every frame."""

    def __init__(self, capacity: int, batch_rows: int) -> None:
        self.capacity, self.batch_rows = capacity, batch_rows
        self._items: deque[Queued] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # writer: something to do
        self._room = threading.Condition(self._lock)  # producers: space again
        self.wakeups = 0  # times a producer woke the writer (a batch can start, or one is full)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, items: list[Queued], timeout: float | None = None) -> None:
        """Append ``items`` in order (a batch larger than the capacity goes in as room appears);
        raises TimeoutError when ``timeout`` passes while full (items appended before stay queued)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        at = 0
        with self._lock:
            while at < len(items):
                while len(self._items) >= self.capacity:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"writer queue full ({self.capacity} results)")
                    self._room.wait(remaining)
                was_empty = not self._items
                n = min(len(items) - at, self.capacity - len(self._items))
                self._items.extend(items[at:at + n])
                at += n
                if was_empty or len(self._items) >= self.batch_rows:
                    self.wakeups += 1
                    self._ready.notify()

    def take_batch(self, window_s: float, idle_s: float, draining: Callable[[], bool]) -> list[Queued]:
        with self._lock:
            if not self._items and not draining():
                self._ready.wait(idle_s)
            if not self._items:
                return []
            deadline = time.monotonic() + window_s
            while len(self._items) < self.batch_rows and not draining():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._ready.wait(remaining)
            n = min(len(self._items), self.batch_rows)
            batch = [self._items.popleft() for _ in range(n)]
            self._room.notify_all()
            return batch

    def wake(self) -> None:
        with self._lock:
            self._ready.notify_all()


class DbWriter:
    """``submit(item)`` from any thread. ``on_committed(items, stored)`` and ``on_journaled(items)`` are
    called from the writer thread (``stored[i].created`` is False for a replayed duplicate)."""

    def __init__(self, db: Database, journal: Journal, data_dir: Path, *, batch_rows: int = 64,
                 batch_ms: float = 200.0, queue_size: int = 1024, retry_s: float = 1.0,
                 on_committed: Callable[[list[Item], list[Stored]], None] | None = None,
                 on_journaled: Callable[[list[Item]], None] | None = None,
                 on_tracks_committed: Callable[[list[TrackRecord]], None] | None = None) -> None:
        self.db = db
        self.journal = journal
        self.data_dir = Path(data_dir)
        self.batch_rows, self.batch_s = batch_rows, batch_ms / 1000.0
        self.retry_s = retry_s
        self.on_committed = on_committed
        self.on_journaled = on_journaled
        self.on_tracks_committed = on_tracks_committed  # newly stored tracks, in the writer's thread
        # called with the ids of newly stored inspections after each commit (camera frames, replays and
        # HTTP uploads alike), in this writer's or the request's thread: must not block (app.line.mqtt)
        self.stored_listeners: list[Callable[[list[int]], None]] = []
        # called with the ids of newly stored tracks, after the inspections of their batch were announced;
        # in this writer's thread, must not block (app.line.mqtt)
        self.track_listeners: list[Callable[[list[int]], None]] = []
        self._tracks_to_announce: list[int] = []
        self._buffer = BatchBuffer(queue_size, batch_rows)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_retry = 0.0
        self.committed = 0
        self.journaled = 0
        self.replayed = 0
        self.rejected = 0
        self.rekeyed = 0  # frames stored under other_image_uid
        self.tracks_committed = 0  # tracks stored (replays not counted)
        self.last_error: str | None = None  # for the log: may name hosts and ports
        # frame_uids of HTTP uploads waiting in the journal (GET .../by-frame/{uid} answers 202 for them)
        self._pending_uploads: set[str] = {
            rec["frame_uid"] for seg in journal.segments() for rec in journal.read(seg)
            if rec.get("source") == API_SOURCE and isinstance(rec.get("frame_uid"), str)}
        m.JOURNAL_PENDING.set(journal.pending)

    @property
    def db_up(self) -> bool:
        return not self.db.breaker.is_open

    # -- API ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest-db-writer", daemon=True)
        self._thread.start()

    def submit(self, item: Item, timeout: float | None = None) -> None:
        """Queue one result; blocks while the writer is full (back-pressure, nothing dropped)."""
        self.submit_many([item], timeout)

    def submit_many(self, items: list[Queued], timeout: float | None = None) -> None:
        """Queue the results of one inference batch at once (one hand-off instead of one per item).
        Their image policy is applied already (``apply_image_policy``: no BGR frame is queued)."""
        undecided = [i.result.frame_uid for i in frames_of(items) if i.result.image is not None]
        if undecided:
            raise ValueError(f"no image policy was applied to {undecided[:3]} (apply_image_policy first)")
        self._buffer.put(items, timeout)

    def pending(self) -> int:
        return len(self._buffer)

    def is_pending(self, frame_uid: str) -> bool:
        """An HTTP upload with this frame_uid waits in the journal (not stored yet)."""
        return frame_uid in self._pending_uploads

    def store_now(self, result: InspectionResult, image_policy: ImagePolicy) -> Stored | None:
        """Store one result in the caller's thread (the HTTP door): its ``Stored`` (row loaded) while
        the database answers; None once it is journaled because the database is away (replayed by
        this writer's thread, exactly once); JournalUnwritable when neither can take it. Uploads go
        straight in while the database answers, also while the journal still drains: uploads from
        different clients have no order to keep, and a frame_uid in both is stored once."""
        apply_upload_image_policy(result, image_policy)
        if self.db.breaker.available():
            try:
                with self.db.session() as session:
                    [stored] = persist_results(session, [result], data_dir=self.data_dir)
                self._announce([stored])
                return stored
            except SQLAlchemyError as exc:
                if not is_outage(exc):
                    raise
                self._db_error(exc)  # the session opened the breaker; journal it below
        item = Item(result)
        try:
            self._journal_items([item])
        except (JournalFull, OSError) as exc:
            log.error("database away and the journal cannot take %s: %s", result.frame_uid, exc)
            raise JournalUnwritable("the database is unavailable and the journal cannot take the frame "
                                    "(full or not writable); send it again later",
                                    reason="journal_unavailable",
                                    retry_after_s=JOURNAL_RETRY_AFTER_S) from None
        return None

    def stop(self, timeout: float | None = 60.0) -> None:
        """Drain: commit (or journal) everything submitted so far, then end the thread."""
        self._stop.set()
        self._buffer.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("database writer did not finish within %.0f s", timeout or 0)
        self.journal.close()

    # -- thread ------------------------------------------------------------------------------
    def _collect(self) -> list[Queued]:
        """The next batch: up to ``batch_rows`` results, waiting at most ``batch_ms`` after the first
        one for more; [] after 0.1 s without any (so the loop can retry the journal and see stop)."""
        return self._buffer.take_batch(self.batch_s, idle_s=0.1, draining=self._stop.is_set)

    def _run(self) -> None:
        held: list[Queued] = []  # a batch neither the database nor the full journal could take
        while True:
            if self.journal.pending and time.monotonic() >= self._next_retry:
                self._replay()
            if held:
                if self._store(held):
                    held = []
                else:
                    if self._stop.is_set() and time.monotonic() > self._stop_deadline():
                        log.error("shutting down with %d results neither committed nor journaled", len(held))
                        break
                    time.sleep(min(self.retry_s, 0.2))
                continue
            batch = self._collect()
            if batch:
                if not self._store(batch):
                    held = batch
                continue
            if self._stop.is_set() and not len(self._buffer):
                break
        # shutdown: one last attempt to empty the journal while the database answers
        if self.journal.pending and self.db_up:
            self._replay()

    _stop_at: float | None = None

    def _stop_deadline(self) -> float:
        if self._stop_at is None:
            self._stop_at = time.monotonic() + 10.0
        return self._stop_at

    def _set_db(self, up: bool, error: str | None = None) -> None:
        if up:
            self.db.breaker.close()
            self.last_error = None
        else:
            self.db.breaker.trip(error or "")
            self.last_error = error

    def _persist(self, items: list[Item]) -> list[Stored]:
        """One transaction; a frame whose derived uid is stored with another image is stored under
        ``other_image_uid`` instead (see there)."""
        for attempt in range(3):
            try:
                with self.db.session() as session:
                    return persist_results(session, [i.result for i in items], data_dir=self.data_dir,
                                           load_rows=False)
            except FrameUidConflict as exc:
                if attempt == 2:
                    raise
                for result in exc.results:
                    new_uid = other_image_uid(result)
                    log.warning("frame_uid %s of camera %s is stored with another image; this frame is "
                                "stored as %s", result.frame_uid, result.camera_id, new_uid)
                    move_written_files(next(i for i in items if i.result is result), new_uid, self.data_dir)
                    self.rekeyed += 1
        raise AssertionError("unreachable")  # pragma: no mutate

    def _commit(self, items: list[Item]) -> list[Stored | None]:
        """One transaction; when it fails for one row (an IntegrityError that is no duplicate, or a
        frame whose uid still holds another image after two re-keys), each row on its own, and a row
        that fails alone too is set aside in ``journal/rejected.jsonl`` so it cannot block the line."""
        t0 = time.perf_counter()
        try:
            stored: list[Stored | None] = list(self._persist(items))
        except (IntegrityError, FrameUidConflict):
            stored = []
            for item in items:
                try:
                    stored.extend(self._persist([item]))
                except (IntegrityError, FrameUidConflict) as exc:
                    log.error("result %s refused by the database, set aside in rejected.jsonl: %s",
                              item.result.frame_uid, str(exc).splitlines()[0])
                    self._reject(item)
                    stored.append(None)
        m.DB_WRITE_SECONDS.observe(time.perf_counter() - t0)
        return stored

    def _commit_tracks(self, items: list[TrackItem]) -> None:
        """One transaction for the tracks (their best frames are committed already); a track the
        database refuses for good, or whose best frame is not stored (it was set aside itself), goes to
        ``journal/rejected.jsonl``."""
        if not items:
            return
        refused: set[str] = set()
        try:
            with self.db.session() as session:
                stored = persist_tracks(session, [i.track for i in items], [i.crop for i in items],
                                        self.data_dir)
        except IntegrityError:
            stored = []
            for item in items:
                try:
                    with self.db.session() as session:
                        stored.extend(persist_tracks(session, [item.track], [item.crop], self.data_dir))
                except IntegrityError as exc:
                    log.error("track %s refused by the database, set aside in rejected.jsonl: %s",
                              item.track.track_uid, str(exc).splitlines()[0])
                    refused.add(item.track.track_uid)
                    stored.append(None)
        new: list[TrackRecord] = []
        for item, s in zip(items, stored, strict=True):
            if s is None:
                if item.track.track_uid not in refused:
                    log.error("track %s: its best frame %s is not stored; set aside in rejected.jsonl",
                              item.track.track_uid, item.track.best_frame_uid)
                self._reject(item)
            elif s.created:
                new.append(item.track)
                self._tracks_to_announce.append(s.id)
        self.tracks_committed += len(new)
        if new and self.on_tracks_committed is not None:
            self.on_tracks_committed(new)

    def _commit_batch(self, items: list[Queued]) -> tuple[list[Item], list[Stored | None]]:
        """The frames of ``items``, then its tracks (each behind its best frame); the frames and what
        became of them."""
        frames = frames_of(items)
        stored = self._commit(frames) if frames else []
        self._commit_tracks(tracks_of(items))
        return frames, stored

    def _reject(self, item: Queued) -> None:
        self.rejected += 1
        with open(self.journal.dir / "rejected.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(to_journal(item)) + "\n")

    def _report(self, items: list[Item], stored: list[Stored | None]) -> None:
        for item, s in zip(items, stored, strict=True):
            if item.crops and s is not None and s.created:
                store_crops(item, self.data_dir)
        pairs = [(i, s) for i, s in zip(items, stored, strict=True) if s is not None]
        self.committed += sum(1 for _, s in pairs if s.created)
        if self.on_committed and pairs:
            self.on_committed([i for i, _ in pairs], [s for _, s in pairs])
        self._announce([s for _, s in pairs])
        tracks, self._tracks_to_announce = self._tracks_to_announce, []
        self._tell(self.track_listeners, tracks, "tracks")

    def _announce(self, stored: list[Stored]) -> None:
        self._tell(self.stored_listeners, [s.id for s in stored if s.created], "inspections")

    @staticmethod
    def _tell(listeners: list[Callable[[list[int]], None]], new_ids: list[int], what: str) -> None:
        if new_ids:
            for listener in listeners:
                try:
                    listener(new_ids)
                except Exception:  # the rows are committed: a listener (MQTT, OPC UA) never costs the writer
                    log.exception("a listener of stored %s failed on %d ids", what, len(new_ids))

    def _db_error(self, exc: Exception) -> None:
        text = str(exc).splitlines()[0] if str(exc) else ""
        self._set_db(False, f"{type(exc).__name__}: {text}")
        self._next_retry = time.monotonic() + self.retry_s

    def _store(self, batch: list[Queued]) -> bool:
        """Commit, or journal behind the pending ones; False when neither is possible right now."""
        if not self.journal.pending and (self.db_up or time.monotonic() >= self._next_retry):
            try:
                frames, stored = self._commit_batch(batch)
            except SQLAlchemyError as exc:
                self._db_error(exc)
            else:
                self._set_db(True)
                self._report(frames, stored)
                return True
        try:
            self._journal_items(batch)
        except JournalFull as exc:
            self.last_error = str(exc)
            log.error("%s; holding results until the database returns", exc)
            return False
        except OSError as exc:
            self.last_error = f"journal write failed: {exc}"
            log.error("journal write failed: %s", exc)
            return False
        if self.on_journaled:
            self.on_journaled(frames_of(batch))
        return True

    def _journal_items(self, items: list[Queued]) -> None:
        """Write the items' images (and crops) to their files, then their records to the journal;
        raises JournalFull or OSError, and FrameUidConflict for an upload whose uid holds another image."""
        for item in frames_of(items):
            self._claim_uid(item)
            write_image_now(item.result, self.data_dir)
            store_crops(item, self.data_dir)
        uploads = {i.result.frame_uid for i in frames_of(items)
                   if i.result.source == API_SOURCE} - self._pending_uploads
        self._pending_uploads.update(uploads)  # before the append: a replay may take them right after it
        try:
            self.journal.append([to_journal(i) for i in items])
        except BaseException:
            self._pending_uploads.difference_update(uploads)
            raise
        self.journaled += len(items)
        m.JOURNAL_PENDING.set(self.journal.pending)

    def _claim_uid(self, item: Item) -> None:
        """Before a journaled frame writes its files: when its uid's files hold another image (the
        database cannot be asked), an upload is refused as a conflict, nothing journaled, and a camera
        frame is kept under ``other_image_uid``, as its replay would; the other frame's files stay."""
        if not holds_other_image(item, self.data_dir):
            return
        result = item.result
        if result.source == API_SOURCE:
            raise FrameUidConflict([result], {})
        new_uid = other_image_uid(result)
        log.warning("frame_uid %s of camera %s holds another image; this frame is journaled as %s",
                    result.frame_uid, result.camera_id, new_uid)
        result.frame_uid = new_uid
        self.rekeyed += 1

    def _replay(self) -> None:
        """Replay sealed segments oldest first; stop at the first database failure."""
        if not self.db.breaker.check_now():
            self._next_retry = time.monotonic() + self.retry_s
            return
        for segment in self.journal.sealed_segments():
            records = self.journal.read(segment)
            items = [from_journal(r) for r in records]
            frames: list[Item] = []
            done: list[Stored | None] = []
            try:
                for start in range(0, len(items), self.batch_rows):
                    chunk_frames, chunk_done = self._commit_batch(items[start:start + self.batch_rows])
                    frames += chunk_frames
                    done += chunk_done
            except SQLAlchemyError as exc:
                self._report(frames, done)
                self._db_error(exc)
                return
            self._set_db(True)
            self.journal.remove(segment, len(records))
            self._pending_uploads.difference_update(i.result.frame_uid for i in frames)
            before = self.committed
            self._report(frames, done)
            self.replayed += self.committed - before
            m.JOURNAL_PENDING.set(self.journal.pending)
            log.info("replayed %d journaled results from %s", len(records), segment.name)


def open_writer(db: Database, data_dir: Path, config: WriterConfig,
                on_committed: Callable[[list[Item], list[Stored]], None] | None = None,
                on_journaled: Callable[[list[Item]], None] | None = None,
                on_tracks_committed: Callable[[list[TrackRecord]], None] | None = None) -> DbWriter:
    """The writer and its journal (``data_dir/journal``, held by this process) as ``config`` says;
    not started. Raises JournalInUse when another process journals into that folder."""
    journal = Journal(Path(data_dir) / "journal", int(config.journal_max_mb * 2**20),
                      int(config.journal_segment_mb * 2**20))
    return DbWriter(db, journal, data_dir, batch_rows=config.batch_rows, batch_ms=config.batch_ms,
                    queue_size=config.queue_size, retry_s=config.retry_s, on_committed=on_committed,
                    on_journaled=on_journaled, on_tracks_committed=on_tracks_committed)
