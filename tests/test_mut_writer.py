"""The ingest database writer step by step (cases found by mutation testing of app/ingest/writer.py).

Every writer here is fed before ``start()`` and drained by ``stop()``, so the writer thread sees a fixed
sequence of batches; the database goes away and comes back from inside that thread (from the writer's
own callbacks and log records), never on a timer. SQLite loses its database folder; PostgreSQL refuses
connections to the test database (``ALLOW_CONNECTIONS false``). Both use a fresh connection per session,
as a restarted server forces."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import PG_ENV
from db_helpers import refuse
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from app import metrics
from app.db.migrate import upgrade
from app.db.models import Defect, Inspection, Track, Webhook
from app.db.session import Database
from app.detections import Detections
from app.ingest.config import WriterConfig
from app.ingest.journal import Journal
from app.ingest.writer import (
    BatchBuffer,
    DbWriter,
    Item,
    JournalUnwritable,
    TrackItem,
    from_journal,
    open_writer,
    other_image_uid,
    to_journal,
)
from app.inspection import (
    CameraContext,
    FrameUidConflict,
    InspectionResult,
    apply_image_policy,
    inspect_frame,
)
from app.inspection.codec import to_record
from app.inspection.store import crop_file
from app.inspection.tracks import TrackRecord
from app.vocabulary import API_SOURCE

NAMES = ("crazing", "patches")
CTX = CameraContext(camera_id="cam-w", line="line-w", station="st-w")
FRAME = np.full((24, 32, 3), 120, np.uint8)
WRITER_LOG = "app.ingest.writer"
BREAKER_LOG = "app.db.breaker"
HOUR_MS = 3_600_000.0


def make_result(k: int, *, ng: bool = True, pixel: int = 120, source: str = "stream",
                uid: str | None = None) -> InspectionResult:
    """A result with its BGR frame (no image policy applied); ``pixel`` sets the image (and its digest)."""
    dets = Detections([[1 + k, 2, 20, 22]], [0.8], [1], NAMES) if ng else Detections.empty(NAMES)
    return inspect_frame(np.full_like(FRAME, pixel), dets, model_version="m-1", context=CTX, source=source,
                         frame_uid=uid or f"f{k:03d}")


def make_item(k: int, *, ng: bool = True, crops: int = 0, image: bool = False, pixel: int = 120) -> Item:
    """A result whose image policy is applied: JPEG bytes to store when ``image``, else none."""
    result = make_result(k, ng=ng, pixel=pixel)
    apply_image_policy(result, "always" if image else "never")
    return Item(result, crops=[f"crop-{k}-{c}".encode() for c in range(crops)])


def uids(items: list[Item]) -> list[str]:
    return [i.result.frame_uid for i in items]


def rows(db: Database) -> list[tuple[str, str | None]]:
    with db.session() as s:
        return [(r.frame_uid, r.image_path) for r in s.scalars(select(Inspection).order_by(Inspection.id))]


def sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


def commits() -> float:
    return sample("inspect_db_write_seconds_count")


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == WRITER_LOG]


def segment_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.jsonl") if p.name != "rejected.jsonl")


def journal_records(folder: Path) -> list[dict]:
    journal = Journal(folder)  # also proves the writer let go of the folder
    try:
        return [r for s in journal.segments() for r in journal.read(s)]
    finally:
        journal.close()


class OnLog(logging.Handler):
    """Runs ``action`` on the writer thread when the writer or the database's circuit breaker logs a
    message containing ``text``."""

    def __init__(self, text: str, action: Callable[[], None]) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.action = text, action

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.action()


@pytest.fixture
def on_log() -> Iterator[Callable[[str, Callable[[], None]], None]]:
    handlers: list[OnLog] = []

    def add(text_: str, action: Callable[[], None]) -> None:
        handlers.append(OnLog(text_, action))
        for name in (WRITER_LOG, BREAKER_LOG):
            logging.getLogger(name).addHandler(handlers[-1])

    yield add
    for handler in handlers:
        for name in (WRITER_LOG, BREAKER_LOG):
            logging.getLogger(name).removeHandler(handler)


@pytest.fixture(autouse=True)
def writer_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=WRITER_LOG)


# -- a database that goes away on demand ---------------------------------------------------------------
@dataclass
class Outage:
    db: Database
    down: Callable[[], None]
    up: Callable[[], None]
    unreachable: str  # how the start of the error of a connection attempt reads while it is down


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    if request.param == "sqlite":
        folder, away = tmp_path / "db", tmp_path / "db-away"
        url = f"sqlite:///{folder / 'inspect.db'}"
        upgrade(url)
        db = Database(url, poolclass=NullPool)
        yield Outage(db, lambda: folder.rename(away), lambda: away.rename(folder),
                     "OperationalError: (sqlite3.OperationalError) unable to open database file")
        db.dispose()
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set (run through .ci/run, or point it at a PostgreSQL server)")
    name = f"inspect_w_{uuid.uuid4().hex[:10]}"

    def admin(*statements: str) -> None:
        engine = create_engine(make_url(base), isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                for sql in statements:
                    conn.execute(text(sql))
        finally:
            engine.dispose()

    admin(f'CREATE DATABASE "{name}"')
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    db = Database(url, poolclass=NullPool)
    try:  # new connections are refused; the writer opens one per session
        yield Outage(db, lambda: admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'),
                     lambda: admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'),
                     "OperationalError: (psycopg.OperationalError) ")
    finally:
        db.dispose()
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def once(action: Callable[[], None]) -> Callable[..., None]:
    done: list[bool] = []

    def run(*_args: object) -> None:
        if not done:
            done.append(True)
            action()

    return run


# -- the items and their records -------------------------------------------------------------------------
def test_an_item_carries_its_result_and_a_journal_record_gives_it_back(tmp_path: Path) -> None:
    item = make_item(1)
    assert (item.t_capture, item.crops, item.position) == (None, [], None)
    assert Item(item.result).crops == [] and Item(item.result).crops is not Item(item.result).crops
    assert to_journal(Item(item.result, 1.5, [b"crop"])) == to_record(item.result)  # the crops are files
    back = from_journal(json.loads(json.dumps(to_journal(item))))
    assert to_record(back.result) == to_record(item.result) and (back.t_capture, back.crops) == (None, [])


# -- the inbox ---------------------------------------------------------------------------------------------
def never() -> bool:
    return False


def watching(stop: threading.Event | None = None) -> tuple[threading.Event, Callable[[], bool]]:
    """A ``draining`` for ``take_batch`` that announces each look at the inbox (it is called under the
    inbox lock, so a put can only follow once the writer waits); draining once ``stop`` is set."""
    looked = threading.Event()

    def draining() -> bool:
        looked.set()
        return stop is not None and stop.is_set()

    return looked, draining


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.append(target()), daemon=True)
    thread.start()
    return thread, got


def at_once(call: Callable[[], object]) -> object:
    """``call()``, which must not block (a take from an empty inbox without an idle wait, a put refused
    at its timeout), run in a helper thread: its result or its exception; a call still blocked after
    20 s fails the test instead of hanging it."""
    got: list[object] = []
    raised: list[BaseException] = []

    def run() -> None:
        try:
            got.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "the call blocked"
    if raised:
        raise raised[0]
    return got[0]


def test_an_empty_inbox_gives_nothing_and_a_short_one_what_it_has() -> None:
    buf = BatchBuffer(capacity=10, batch_rows=4)
    assert (buf.capacity, buf.batch_rows, buf.wakeups, len(buf)) == (10, 4, 0, 0)
    assert at_once(lambda: buf.take_batch(0.0, idle_s=0.0, draining=never)) == []
    assert buf.take_batch(0.0, idle_s=0.0, draining=lambda: True) == []
    buf.put([1, 2])
    assert buf.wakeups == 1
    assert buf.take_batch(0.0, idle_s=0.0, draining=never) == [1, 2] and len(buf) == 0
    buf.put([3])
    assert at_once(lambda: buf.take_batch(0.01, idle_s=0.0, draining=never)) == [3]  # the window ends


def test_the_writer_waits_in_the_window_until_the_batch_is_full() -> None:
    """The writer announces each look at the inbox; the producer adds rows only while it waits."""
    buf = BatchBuffer(capacity=100, batch_rows=5)
    buf.put([0, 1])
    looked, draining = watching()
    thread, got = in_thread(lambda: buf.take_batch(3600.0, idle_s=3600.0, draining=draining))
    assert looked.wait(30)
    buf.put([2, 3])  # not full yet: the writer goes on waiting
    buf.put([4])  # exactly full: the writer is woken
    thread.join(30)
    assert not thread.is_alive() and got == [[0, 1, 2, 3, 4]]
    assert len(buf) == 0 and buf.wakeups == 2  # the first rows, then the full batch


def test_a_writer_idle_on_an_empty_inbox_is_woken_by_the_first_rows() -> None:
    buf = BatchBuffer(capacity=100, batch_rows=3)
    looked, draining = watching()
    thread, got = in_thread(lambda: buf.take_batch(3600.0, idle_s=3600.0, draining=draining))
    assert looked.wait(30)
    buf.put([7, 8, 9])
    thread.join(30)
    assert not thread.is_alive() and got == [[7, 8, 9]]


def test_wake_ends_an_idle_wait_once_draining() -> None:
    buf = BatchBuffer(capacity=100, batch_rows=3)
    stopping = threading.Event()
    looked, draining = watching(stopping)
    thread, got = in_thread(lambda: buf.take_batch(3600.0, idle_s=3600.0, draining=draining))
    assert looked.wait(30)
    stopping.set()
    buf.wake()
    thread.join(30)
    assert not thread.is_alive() and got == [[]]


def test_a_full_inbox_refuses_after_the_timeout_and_keeps_what_fitted() -> None:
    buf = BatchBuffer(capacity=3, batch_rows=2)
    with pytest.raises(TimeoutError, match=r"^writer queue full \(3 results\)$"):
        at_once(lambda: buf.put([0, 1, 2, 3, 4], timeout=0.0))
    assert len(buf) == 3
    with pytest.raises(TimeoutError):
        at_once(lambda: buf.put([5], timeout=0.01))  # no room comes: refused once the timeout has passed
    assert buf.wakeups == 1  # one wake-up for the first rows, which also filled a batch
    assert buf.take_batch(0.0, idle_s=0.0, draining=never) == [0, 1]
    buf.put([5], timeout=0.0)
    assert buf.take_batch(0.0, idle_s=0.0, draining=never) == [2, 5]


def test_a_partly_filled_inbox_takes_only_what_fits_before_refusing() -> None:
    buf = BatchBuffer(capacity=3, batch_rows=3)
    buf.put([0, 1])
    with pytest.raises(TimeoutError):
        at_once(lambda: buf.put([2, 3, 4], timeout=0.0))
    assert len(buf) == 3 and buf.take_batch(0.0, idle_s=0.0, draining=never) == [0, 1, 2]


def test_a_producer_with_a_timeout_waits_for_the_room_a_waiting_writer_makes() -> None:
    buf = BatchBuffer(capacity=2, batch_rows=2)
    looked, draining = watching()
    writer, got = in_thread(lambda: buf.take_batch(3600.0, idle_s=3600.0, draining=draining))
    assert looked.wait(30)  # the writer waits for rows
    buf.put([0, 1, 2], timeout=30.0)  # full after two: waits while the woken writer takes them
    writer.join(30)
    assert got == [[0, 1]] and len(buf) == 1


def test_a_blocked_producer_goes_on_as_soon_as_the_writer_takes_a_batch() -> None:
    buf = BatchBuffer(capacity=2, batch_rows=2)
    buf.put([0, 1])
    producer, _ = in_thread(lambda: buf.put([2, 3, 4]))
    taken: list[object] = []
    for _ in range(3):  # each take makes room; the idle wait ends at the producer's next rows
        taken += buf.take_batch(0.0, idle_s=30.0, draining=never)
    producer.join(30)
    assert not producer.is_alive() and taken == [0, 1, 2, 3, 4]


def test_a_full_inbox_refuses_only_once_the_whole_timeout_has_passed() -> None:
    buf = BatchBuffer(capacity=1, batch_rows=1)
    buf.put([0])
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        at_once(lambda: buf.put([1], timeout=0.3))  # a timeout under a second is waited out too
    assert time.monotonic() - t0 >= 0.3 and len(buf) == 1


def test_a_short_batch_is_taken_only_once_the_whole_window_has_passed() -> None:
    buf = BatchBuffer(capacity=10, batch_rows=4)
    buf.put([0])
    t0 = time.monotonic()
    assert at_once(lambda: buf.take_batch(0.3, idle_s=0.0, draining=never)) == [0]  # a window under a second
    assert time.monotonic() - t0 >= 0.3


# -- committing --------------------------------------------------------------------------------------------
def test_a_drain_commits_everything_in_order_in_batches_of_batch_rows(outage: Outage, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[list[str], list[bool]]] = []
    loaded: list[object] = []

    def on_committed(items: list[Item], stored: list) -> None:
        calls.append((uids(items), [s.created for s in stored]))
        loaded.extend(s.loaded for s in stored)

    journal_dir, data = tmp_path / "journal", tmp_path / "data"
    writer = DbWriter(outage.db, Journal(journal_dir), data, batch_rows=3, batch_ms=HOUR_MS, retry_s=3600,
                      on_committed=on_committed)
    items = [make_item(k, ng=k != 2, crops=2 if k == 0 else 0, image=True) for k in range(7)]
    jpeg = items[3].result.image_bytes
    writer.submit_many(items[:4])
    writer.submit(items[4])
    writer.submit_many(items[5:])
    assert writer.pending() == 7
    before, seconds_before = commits(), sample("inspect_db_write_seconds_sum")
    started = time.perf_counter()
    writer.start()
    writer.stop()
    drained_s = time.perf_counter() - started
    assert calls == [(["f000", "f001", "f002"], [True] * 3), (["f003", "f004", "f005"], [True] * 3),
                     (["f006"], [True])]
    assert commits() - before == 3
    # the three commits are timed one after another, inside the drain
    assert 0 < sample("inspect_db_write_seconds_sum") - seconds_before <= drained_s
    assert loaded == [None] * 7  # the callback gets ids; no row is read back for it
    assert (writer.committed, writer.journaled, writer.replayed, writer.rejected) == (7, 0, 0, 0)
    assert (writer.db_up, writer.last_error, writer.pending()) == (True, None, 0)
    assert [uid for uid, _ in rows(outage.db)] == uids(items)
    assert rows(outage.db) == [(i.result.frame_uid, i.result.image_path) for i in items]
    assert all(i.result.image_path for i in items)
    assert (data / items[3].result.image_path).read_bytes() == jpeg
    crops = [(data / crop_file(items[0].result, c)).read_bytes() for c in range(2)]
    assert crops == [b"crop-0-0", b"crop-0-1"]
    assert items[0].crops == []
    assert (sample("inspect_db_up"), sample("inspect_journal_pending")) == (1, 0)
    assert segment_names(journal_dir) == [] and journal_records(journal_dir) == []
    assert messages(caplog) == []


def test_the_defaults_are_batches_of_64_and_an_inbox_of_1024(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'inspect.db'}"
    upgrade(url)
    db = Database(url)
    sizes: list[int] = []
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data",
                      on_committed=lambda items, _s: sizes.append(len(items)))
    writer.submit_many([make_item(k, ng=False) for k in range(65)])
    writer.start()
    writer.stop()
    assert sizes == [64, 1] and writer.committed == 65
    assert (writer.batch_rows, writer.batch_s, writer.retry_s) == (64, 0.2, 1.0)  # 200 ms, 1 s

    idle = DbWriter(db, Journal(tmp_path / "journal-2"), tmp_path / "data")
    one = make_item(0, ng=False)
    idle.submit_many([one] * 1024)
    with pytest.raises(TimeoutError, match=r"^writer queue full \(1024 results\)$"):
        at_once(lambda: idle.submit(one, timeout=0.0))
    assert idle.pending() == 1024
    idle.stop()  # never started: nothing drained, the journal folder let go
    assert idle.pending() == 1024 and journal_records(tmp_path / "journal-2") == []
    db.dispose()


def test_results_whose_image_policy_was_not_applied_are_refused_whole(tmp_path: Path) -> None:
    writer = DbWriter(Database(f"sqlite:///{tmp_path / 'x.db'}"), Journal(tmp_path / "journal"), tmp_path)
    items = [make_item(k) for k in range(5)]
    for k in (0, 2, 3, 4):
        items[k].result.image = FRAME
    with pytest.raises(ValueError, match=r"^no image policy was applied to \['f000', 'f002', 'f003'\] "
                                         r"\(apply_image_policy first\)$"):
        writer.submit_many(items)
    with pytest.raises(ValueError, match=r"^no image policy was applied to \['f004'\]"):
        writer.submit(items[4])
    writer.submit(items[1])
    assert writer.pending() == 1
    writer.stop()


def test_the_writer_thread_is_a_named_daemon_and_a_slow_stop_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'inspect.db'}"
    upgrade(url)
    db = Database(url)
    entered, release = threading.Event(), threading.Event()

    def slow(_items: list[Item], _stored: list) -> None:
        entered.set()
        release.wait(60)

    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=1, on_committed=slow)
    writer.submit(make_item(1))
    writer.start()
    assert entered.wait(30)
    [thread] = [t for t in threading.enumerate() if t.name == "ingest-db-writer"]
    assert thread.daemon
    writer.stop(timeout=0.6)
    writer.stop(timeout=0.0)
    slow = "database writer did not finish within {} s"
    assert messages(caplog) == [(logging.ERROR, slow.format(s)) for s in (1, 0)]
    release.set()
    thread.join(30)
    assert not thread.is_alive() and writer.committed == 1
    db.dispose()


def test_a_result_stored_before_counts_once_and_keeps_its_first_crops(outage: Outage, tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = DbWriter(outage.db, Journal(tmp_path / "j1"), data, batch_rows=4, batch_ms=HOUR_MS)
    first.submit(make_item(1, crops=1))
    first.start()
    first.stop()
    calls: list[list[bool]] = []
    writer = DbWriter(outage.db, Journal(tmp_path / "j2"), data, batch_rows=4, batch_ms=HOUR_MS,
                      on_committed=lambda _i, st: calls.append([s.created for s in st]))
    again = make_item(1, crops=1)
    again.crops = [b"other"]
    writer.submit_many([again, make_item(2, crops=1)])
    writer.start()
    writer.stop()
    assert calls == [[False, True]] and writer.committed == 1
    assert (data / crop_file(again.result, 0)).read_bytes() == b"crop-1-0"
    assert again.crops == [b"other"]  # a duplicate's crops are not written
    assert [uid for uid, _ in rows(outage.db)] == ["f001", "f002"]


# -- rows the database refuses for good ---------------------------------------------------------------
def test_refused_rows_are_set_aside_one_line_each_and_the_rest_commits(
        database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = Database(database_url)
    with db.session() as s:
        s.add(Webhook(url="http://127.0.0.1:9/ng", events=["inspection.ng"], secret="s" * 32))
        s.commit()
    refuse(db, "delivery")  # every NG row queues a delivery, which the database refuses
    calls: list[list[str]] = []
    journal_dir, data = tmp_path / "journal", tmp_path / "data"
    writer = DbWriter(db, Journal(journal_dir), data, batch_rows=2, batch_ms=HOUR_MS,
                      on_committed=lambda items, _s: calls.append(uids(items)))
    items = [make_item(1, crops=1), make_item(2, ng=False), make_item(3, crops=1), make_item(4, crops=1)]
    before = commits()
    writer.submit_many(items)
    writer.start()
    writer.stop()
    assert calls == [["f002"]]  # the all-refused second batch reports nothing
    assert commits() - before == 2  # one observation per batch, its row-by-row retry included
    assert (writer.rejected, writer.committed, writer.journaled, writer.db_up) == (3, 1, 0, True)
    assert writer.last_error is None
    lines = (journal_dir / "rejected.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [to_journal(items[k]) for k in (0, 2, 3)]
    assert segment_names(journal_dir) == [] and not data.exists()  # no crops of refused rows
    logged = messages(caplog)
    assert [(level, text.split(": (")[0]) for level, text in logged] == [
        (logging.ERROR, f"result f00{k} refused by the database, set aside in rejected.jsonl")
        for k in (1, 3, 4)]
    assert all(text.endswith("deliveries refused") for _, text in logged)
    db.dispose()


# -- the journal while the database is away --------------------------------------------------------------
def test_while_the_database_is_away_everything_is_journaled_with_its_files(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journaled: list[list[str]] = []
    committed: list[list[str]] = []
    journal_dir, data = tmp_path / "journal", tmp_path / "data"
    outage.down()
    writer = DbWriter(outage.db, Journal(journal_dir, segment_bytes=1), data, batch_rows=2, batch_ms=HOUR_MS,
                      retry_s=3600, on_committed=lambda items, _s: committed.append(uids(items)),
                      on_journaled=lambda items: journaled.append(uids(items)))
    items = [make_item(k, ng=k != 1, crops=1 if k != 1 else 0, image=True) for k in range(5)]
    jpegs = [i.result.image_bytes for i in items]
    before = commits()
    writer.submit_many(items)
    writer.start()
    writer.stop()
    assert journaled == [["f000", "f001"], ["f002", "f003"], ["f004"]] and committed == []
    assert commits() == before
    assert (writer.journaled, writer.committed, writer.replayed, writer.db_up) == (5, 0, 0, False)
    assert writer.last_error.startswith(outage.unreachable) and "\n" not in writer.last_error
    assert (sample("inspect_db_up"), sample("inspect_journal_pending")) == (0, 5)
    assert outage.db.breaker.is_open and outage.db.breaker.trips == 1
    assert messages(caplog) == []
    [opened] = [r.getMessage() for r in caplog.records if r.name == BREAKER_LOG]
    assert opened.endswith(f"): {writer.last_error}")  # the breaker logs why
    # on disk: the records, each naming its image file, and the crops next to them
    assert journal_records(journal_dir) == [to_journal(i) for i in items]
    for item, jpeg in zip(items, jpegs, strict=True):
        assert item.result.image_bytes is None and (data / item.result.image_path).read_bytes() == jpeg
        assert item.crops == []
    assert (data / crop_file(items[4].result, 0)).read_bytes() == b"crop-4-0"

    # the database is back: a new writer replays the journal in order, the images named in the rows
    outage.up()
    calls: list[tuple[list[str], list[bool]]] = []
    again = DbWriter(outage.db, Journal(journal_dir), data, batch_rows=2, batch_ms=HOUR_MS, retry_s=3600,
                     on_committed=lambda items_, st: calls.append((uids(items_), [s.created for s in st])))
    assert sample("inspect_journal_pending") == 5
    assert not again.db_up and sample("inspect_db_up") == 0  # the breaker is the database's: still open
    caplog.clear()
    before = commits()
    again.start()
    again.stop()
    assert calls == [(["f000", "f001"], [True] * 2), (["f002", "f003"], [True] * 2), (["f004"], [True])]
    assert commits() - before == 3  # one report and one commit per segment (one per journaled batch)
    assert (again.replayed, again.committed, again.journaled) == (5, 5, 0)
    assert (again.db_up, again.last_error) == (True, None)
    assert rows(outage.db) == [(i.result.frame_uid, i.result.image_path) for i in items]
    assert sample("inspect_journal_pending") == 0 and segment_names(journal_dir) == []
    assert messages(caplog) == [(logging.INFO, f"replayed {n} journaled results from 00000000000{k}.jsonl")
                                for k, n in ((1, 2), (2, 2), (3, 1))]


def test_an_outage_mid_run_is_journaled_then_replayed_before_newer_results(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    committed: list[list[str]] = []
    journaled: list[list[str]] = []

    def on_committed(items: list[Item], _stored: list) -> None:
        committed.append(uids(items))
        if len(committed) == 1:
            outage.down()  # right after the first batch

    writer = DbWriter(outage.db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=2,
                      batch_ms=HOUR_MS, retry_s=0.0, on_committed=on_committed,
                      on_journaled=lambda items: (journaled.append(uids(items)), outage.up()))
    items = [make_item(k) for k in range(6)]
    writer.submit_many(items)
    writer.start()
    writer.stop()
    assert committed == [["f000", "f001"], ["f002", "f003"], ["f004", "f005"]]
    assert journaled == [["f002", "f003"]]
    assert (writer.committed, writer.journaled, writer.replayed, writer.db_up) == (6, 2, 2, True)
    assert writer.last_error is None  # cleared once the database is back
    assert outage.db.breaker.trips == 1 and not outage.db.breaker.is_open
    assert [uid for uid, _ in rows(outage.db)] == uids(items)
    assert (sample("inspect_db_up"), sample("inspect_journal_pending")) == (1, 0)
    assert messages(caplog) == [(logging.INFO, "replayed 2 journaled results from 000000000001.jsonl")]


def test_no_retry_before_retry_s_and_newer_results_queue_behind_the_journal(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    committed: list[list[str]] = []
    journaled: list[list[str]] = []

    def on_committed(items: list[Item], _stored: list) -> None:
        committed.append(uids(items))
        outage.down()

    journal_dir = tmp_path / "journal"
    up_once = once(outage.up)
    writer = DbWriter(outage.db, Journal(journal_dir), tmp_path / "data", batch_rows=2, batch_ms=HOUR_MS,
                      retry_s=3600, on_committed=on_committed,
                      on_journaled=lambda items: (journaled.append(uids(items)), up_once()))
    items = [make_item(k) for k in range(6)]
    writer.submit_many(items)
    writer.start()
    writer.stop()
    # the database answers again after the first journaled batch, but the next try is an hour away:
    # the rest is journaled behind it, and shutting down does not try either
    assert committed == [["f000", "f001"]] and journaled == [["f002", "f003"], ["f004", "f005"]]
    assert (writer.committed, writer.journaled, writer.replayed, writer.db_up) == (2, 4, 0, False)
    assert [uid for uid, _ in rows(outage.db)] == ["f000", "f001"]
    assert [r["frame_uid"] for r in journal_records(journal_dir)] == uids(items[2:])
    assert writer.last_error.startswith(outage.unreachable)
    assert outage.db.breaker.trips == 1 and messages(caplog) == []


def test_a_failed_ping_postpones_the_replay_by_retry_s(outage: Outage, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    journal_dir = tmp_path / "journal"
    earlier = Journal(journal_dir)
    earlier.append([to_journal(make_item(0))])
    earlier.close()
    outage.down()
    journaled: list[list[str]] = []
    up_once = once(outage.up)
    writer = DbWriter(outage.db, Journal(journal_dir), tmp_path / "data", batch_rows=1, batch_ms=HOUR_MS,
                      retry_s=3600, on_journaled=lambda items: (journaled.append(uids(items)), up_once()))
    assert sample("inspect_journal_pending") == 1
    writer.submit_many([make_item(1), make_item(2)])
    writer.start()
    writer.stop()
    assert journaled == [["f001"], ["f002"]]  # behind the journal, without trying the database
    assert writer.last_error is None  # the ping's reason goes to the breaker's log, not to the writer
    assert outage.db.breaker.is_open and outage.db.breaker.trips == 1
    assert (writer.db_up, writer.journaled, writer.replayed, writer.committed) == (False, 2, 0, 0)
    assert (sample("inspect_db_up"), sample("inspect_journal_pending")) == (0, 3)
    assert [r["frame_uid"] for r in journal_records(journal_dir)] == ["f000", "f001", "f002"]
    assert rows(outage.db) == []
    assert messages(caplog) == []


def test_a_replay_that_fails_part_way_keeps_its_segment_and_reports_what_it_committed(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal_dir = tmp_path / "journal"
    earlier = Journal(journal_dir, segment_bytes=1)  # one segment per append
    earlier.append([to_journal(make_item(k)) for k in (0, 1)])
    earlier.append([to_journal(make_item(k)) for k in (2, 3, 4)])
    earlier.close()
    calls: list[tuple[list[str], list[bool]]] = []

    def on_committed(items: list[Item], stored: list) -> None:
        calls.append((uids(items), [s.created for s in stored]))

    state = {"commits": 0}

    def after_commit(*_args: object) -> None:
        state["commits"] += 1
        if state["commits"] == 2:  # the first chunk of the second segment is in: the database goes
            outage.down()

    from sqlalchemy import event

    event.listen(outage.db.engine, "commit", after_commit)
    writer = DbWriter(outage.db, Journal(journal_dir), tmp_path / "data", batch_rows=2, batch_ms=HOUR_MS,
                      retry_s=3600, on_committed=on_committed)
    writer.start()
    writer.stop()
    event.remove(outage.db.engine, "commit", after_commit)
    assert calls == [(["f000", "f001"], [True, True]), (["f002", "f003"], [True, True])]
    assert (writer.replayed, writer.committed, writer.db_up) == (2, 4, False)
    assert writer.last_error.startswith(outage.unreachable)
    assert sample("inspect_journal_pending") == 3 and sample("inspect_db_up") == 0
    assert [r["frame_uid"] for r in journal_records(journal_dir)] == ["f002", "f003", "f004"]
    assert outage.db.breaker.is_open and outage.db.breaker.trips == 1
    assert messages(caplog) == [(logging.INFO, "replayed 2 journaled results from 000000000001.jsonl")]

    outage.up()
    calls.clear()
    again = DbWriter(outage.db, Journal(journal_dir), tmp_path / "data", batch_rows=2, batch_ms=HOUR_MS,
                     on_committed=on_committed)
    again.start()
    again.stop()
    assert calls == [(["f002", "f003", "f004"], [False, False, True])]
    assert (again.replayed, again.committed) == (1, 1)
    assert [uid for uid, _ in rows(outage.db)] == [f"f{k:03d}" for k in range(5)]


def test_a_full_journal_holds_the_batch_until_the_database_takes_it(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture, on_log) -> None:
    journal_dir = tmp_path / "journal"
    committed: list[list[str]] = []
    seen: list[str | None] = []
    outage.down()
    writer = DbWriter(outage.db, Journal(journal_dir, max_bytes=10), tmp_path / "data", batch_rows=2,
                      batch_ms=HOUR_MS, retry_s=0.0,
                      on_committed=lambda items, _s: committed.append(uids(items)))
    stopper = threading.Thread(target=writer.stop, kwargs={"timeout": 30.0}, daemon=True)

    def holding() -> None:
        seen.append(writer.last_error)
        if len(seen) == 1:  # the first hold, while taking the batch: stop is asked for (the journal stays
            stopper.start()  # open while stop() waits for the thread)
            assert writer._stop.wait(30)  # noqa: SLF001 - the stop request, the one thing stop() sets first
        else:  # the second, in the held-batch loop of a stopping writer (its grace period runs): back
            outage.up()

    on_log("holding results", holding)
    writer.submit_many([make_item(0), make_item(1)])
    writer.start()
    [thread] = [t for t in threading.enumerate() if t.name == "ingest-db-writer"]
    thread.join(30)
    stopper.join(30)
    assert not thread.is_alive() and not stopper.is_alive()
    full = f"journal {journal_dir} would exceed 10 bytes"
    assert seen == [full, full]
    assert committed == [["f000", "f001"]] and writer.journaled == 0 and writer.db_up
    assert writer.last_error is None and outage.db.breaker.trips == 1
    holding_text = (logging.ERROR, f"{full}; holding results until the database returns")
    assert messages(caplog) == [holding_text, holding_text]


def test_a_failed_journal_write_holds_the_batch_and_tries_again(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture, on_log) -> None:
    journal_dir, data = tmp_path / "journal", tmp_path / "data"
    journaled: list[list[str]] = []
    seen: list[str | None] = []
    outage.down()
    writer = DbWriter(outage.db, Journal(journal_dir), data, batch_rows=2, batch_ms=HOUR_MS, retry_s=0.0,
                      on_journaled=lambda items: journaled.append(uids(items)))
    # the journal's folder is moved away and a file stands in its place: its first segment cannot be
    # opened; the failure's log line puts the folder back
    moved = tmp_path / "journal-away"
    journal_dir.rename(moved)
    journal_dir.write_text("a file where the journal folder belongs")

    def put_back() -> None:
        journal_dir.unlink()
        moved.rename(journal_dir)

    on_log("journal write failed", lambda: (seen.append(writer.last_error), put_back()))
    items = [make_item(0, image=True), make_item(1, image=True)]
    writer.submit_many(items)
    writer.start()
    writer.stop()
    assert journaled == [["f000", "f001"]] and writer.journaled == 2
    [failure] = seen
    assert failure.startswith("journal write failed: [Errno ") and str(journal_dir) in failure
    errors = [text for level, text in messages(caplog) if level == logging.ERROR]
    assert errors == [failure]
    assert [r["image_path"] for r in journal_records(journal_dir)] == [i.result.image_path for i in items]
    assert all((data / i.result.image_path).is_file() for i in items)


def test_at_shutdown_a_batch_nobody_takes_is_given_up_after_the_grace_period(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture, on_log) -> None:
    """The journal holds a result from before and has no room for more; the database comes back and
    another request closes its circuit breaker while the writer's next retry is an hour away: the
    held batch is given up after the grace period, and the writer's last act replays the journal."""
    journal_dir = tmp_path / "journal"
    earlier = Journal(journal_dir)
    earlier.append([to_journal(make_item(9))])
    earlier.close()
    full = sum(p.stat().st_size for p in journal_dir.glob("*.jsonl"))
    outage.down()
    writer = DbWriter(outage.db, Journal(journal_dir, max_bytes=full), tmp_path / "data", batch_rows=3,
                      batch_ms=HOUR_MS, retry_s=3600)

    def back() -> None:
        outage.up()
        assert outage.db.breaker.check_now()  # as a readiness probe does

    on_log("holding results", once(back))
    writer.submit_many([make_item(k) for k in range(3)])
    writer.start()
    t0 = time.monotonic()
    writer.stop()
    assert 10.0 <= time.monotonic() - t0 < 11.0  # the grace period is ten seconds
    assert (writer.committed, writer.journaled, writer.replayed) == (1, 0, 1)  # the replayed one
    held = [t for _, t in messages(caplog) if "holding results until the database returns" in t]
    assert len(held) >= 20  # tried again every 0.2 s (retry_s is an hour)
    gave_up = "shutting down with 3 results neither committed nor journaled"
    assert messages(caplog)[-2:] == [(logging.ERROR, gave_up),
                                     (logging.INFO, "replayed 1 journaled results from 000000000001.jsonl")]
    assert [uid for uid, _ in rows(outage.db)] == ["f009"] and journal_records(journal_dir) == []
    assert not [t for t in threading.enumerate() if t.name == "ingest-db-writer"]


def test_a_circuit_closed_by_another_request_lets_the_shutdown_replay_the_journal(
        outage: Outage, tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    journaled: list[list[str]] = []

    def back(items: list[Item]) -> None:
        journaled.append(uids(items))
        outage.up()
        assert outage.db.breaker.check_now()  # as a readiness probe does; the writer's retry is an hour away

    outage.down()
    writer = DbWriter(outage.db, Journal(journal_dir), tmp_path / "data", batch_rows=2, batch_ms=HOUR_MS,
                      retry_s=3600, on_journaled=back)
    writer.submit_many([make_item(0), make_item(1)])
    writer.start()
    writer.stop()
    assert journaled == [["f000", "f001"]]
    assert (writer.journaled, writer.replayed, writer.db_up) == (2, 2, True)
    assert [uid for uid, _ in rows(outage.db)] == ["f000", "f001"] and journal_records(journal_dir) == []


def test_an_idle_writer_keeps_running_until_stopped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'inspect.db'}"
    upgrade(url)
    db = Database(url)
    committed = threading.Event()
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=1, batch_ms=HOUR_MS,
                      on_committed=lambda _i, _s: committed.set())
    writer.start()
    [thread] = [t for t in threading.enumerate() if t.name == "ingest-db-writer"]
    thread.join(0.5)  # an empty inbox for several idle rounds: the writer waits, it does not end
    assert thread.is_alive()
    writer.submit(make_item(1))
    assert committed.wait(30)
    writer.stop()
    assert not thread.is_alive() and writer.committed == 1
    db.dispose()


def test_a_database_error_without_a_message_is_named_by_its_kind(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from sqlalchemy import event
    from sqlalchemy.exc import SQLAlchemyError

    url = f"sqlite:///{tmp_path / 'inspect.db'}"
    upgrade(url)
    db = Database(url)

    def fail(*_args: object) -> None:
        raise SQLAlchemyError("")  # what the driver layer raises, as it raises it: no text

    event.listen(db.engine, "before_cursor_execute", fail)
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=1, batch_ms=HOUR_MS,
                      retry_s=3600)
    writer.submit(make_item(1))
    writer.start()
    writer.stop()
    event.remove(db.engine, "before_cursor_execute", fail)
    assert (writer.last_error, writer.journaled, writer.db_up) == ("SQLAlchemyError: ", 1, False)
    assert db.breaker.trips == 1 and messages(caplog) == []
    [opened] = [r.getMessage() for r in caplog.records if r.name == BREAKER_LOG]
    assert opened.endswith("): SQLAlchemyError: ")  # the writer opened the breaker, and said why
    db.dispose()


def test_an_idle_writer_retries_the_journal_without_new_results(outage: Outage, tmp_path: Path,
                                                                on_log) -> None:
    journal_dir = tmp_path / "journal"
    earlier = Journal(journal_dir)
    earlier.append([to_journal(make_item(0))])
    earlier.close()
    outage.down()
    replayed = threading.Event()
    back_at: list[float] = []
    writer = DbWriter(outage.db, Journal(journal_dir), tmp_path / "data", batch_rows=2, batch_ms=HOUR_MS,
                      retry_s=0.0, on_committed=lambda _i, _s: replayed.set())

    def back() -> None:
        outage.up()
        back_at.append(time.monotonic())

    on_log("database unreachable", once(back))  # the first replay finds the database away; then it returns
    writer.start()
    assert replayed.wait(30)  # the inbox stays empty: the retry comes from the idle writer itself
    assert time.monotonic() - back_at[0] < 1.0  # after an idle wait of 0.1 s
    writer.stop()
    assert writer.replayed == 1 and [uid for uid, _ in rows(outage.db)] == ["f000"]


def test_results_stay_behind_the_journal_even_when_a_retry_is_due(outage: Outage, tmp_path: Path,
                                                                  on_log) -> None:
    journal_dir = tmp_path / "journal"
    earlier = Journal(journal_dir)
    earlier.append([to_journal(make_item(0))])
    earlier.close()
    outage.down()
    journaled: list[list[str]] = []
    writer = DbWriter(outage.db, Journal(journal_dir), tmp_path / "data", batch_rows=2, batch_ms=HOUR_MS,
                      retry_s=0.0, on_journaled=lambda items: journaled.append(uids(items)))
    on_log("database unreachable", outage.up)  # back before the new result is stored
    writer.submit(make_item(1))
    writer.start()
    writer.stop()
    assert journaled == [["f001"]] and writer.replayed == 2
    assert [uid for uid, _ in rows(outage.db)] == ["f000", "f001"]


# -- camera frames under a uid stored with another image --------------------------------------------------
def test_a_camera_frame_whose_uid_is_stored_with_another_image_is_rekeyed(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    first = DbWriter(outage.db, Journal(tmp_path / "j1"), data, batch_rows=4, batch_ms=HOUR_MS)
    original = make_item(1, image=True)
    first_jpeg = original.result.image_bytes
    first.submit(original)
    first.start()
    first.stop()
    committed: list[list[str]] = []
    writer = DbWriter(outage.db, Journal(tmp_path / "j2"), data, batch_rows=4, batch_ms=HOUR_MS,
                      on_committed=lambda items, _s: committed.append(uids(items)))
    changed = make_item(1, image=True, pixel=200)  # the same derived uid, another image
    changed_jpeg = changed.result.image_bytes
    new_uid = other_image_uid(changed.result)
    assert new_uid not in ("f001", "") and new_uid == other_image_uid(make_item(1, pixel=200).result)
    assert new_uid != other_image_uid(make_item(1, pixel=30).result)
    elsewhere = make_item(1, pixel=200).result
    elsewhere.camera_id = "cam-x"
    assert new_uid != other_image_uid(elsewhere)  # the camera is part of it
    writer.submit_many([changed, make_item(2, image=True)])
    writer.start()
    writer.stop()
    assert committed == [[new_uid, "f002"]] and changed.result.frame_uid == new_uid
    assert (writer.rekeyed, writer.committed, writer.rejected, writer.journaled) == (1, 2, 0, 0)
    stored = rows(outage.db)
    assert [uid for uid, _ in stored] == ["f001", new_uid, "f002"]
    assert len({path for _, path in stored}) == 3  # each image in its own file
    files = dict(stored)
    assert (data / files["f001"]).read_bytes() == first_jpeg  # the stored frame's image is untouched
    assert (data / files[new_uid]).read_bytes() == changed_jpeg
    assert messages(caplog) == [(logging.WARNING, f"frame_uid f001 of camera cam-w is stored with another "
                                                  f"image; this frame is stored as {new_uid}")]


def policy_applied(result: InspectionResult) -> Item:
    apply_image_policy(result, "never")
    return Item(result)


def test_a_rekeyed_uid_stored_with_yet_another_image_is_rekeyed_again(outage: Outage, tmp_path: Path) -> None:
    changed = make_item(1, pixel=200)
    once_uid = other_image_uid(changed.result)
    twice_uid = other_image_uid(make_result(1, pixel=200, uid=once_uid))
    seed = DbWriter(outage.db, Journal(tmp_path / "j1"), tmp_path / "data", batch_rows=4, batch_ms=HOUR_MS)
    seed.submit_many([make_item(1), policy_applied(make_result(9, pixel=10, uid=once_uid))])
    seed.start()
    seed.stop()
    writer = DbWriter(outage.db, Journal(tmp_path / "j2"), tmp_path / "data", batch_rows=4, batch_ms=HOUR_MS)
    writer.submit(changed)
    writer.start()
    writer.stop()
    assert (writer.rekeyed, writer.committed) == (2, 1) and changed.result.frame_uid == twice_uid
    assert sorted(uid for uid, _ in rows(outage.db)) == sorted(["f001", once_uid, twice_uid])


def frame_whose_rekeyed_uids_are_taken(outage: Outage, tmp_path: Path) -> tuple[Item, str, str]:
    """Frame f001 stored, and the two uids a changed f001 would be re-keyed to stored with other images:
    the changed frame (not yet submitted) and those two uids."""
    changed = make_item(1, pixel=200)
    once_uid = other_image_uid(changed.result)
    twice_uid = other_image_uid(make_result(1, pixel=200, uid=once_uid))
    seed = DbWriter(outage.db, Journal(tmp_path / "j1"), tmp_path / "data", batch_rows=4, batch_ms=HOUR_MS)
    seed.submit_many([make_item(1), policy_applied(make_result(9, pixel=10, uid=once_uid)),
                      policy_applied(make_result(8, pixel=20, uid=twice_uid))])
    seed.start()
    seed.stop()
    return changed, once_uid, twice_uid


def test_a_frame_whose_rekeyed_uids_are_stored_with_other_images_too_is_a_conflict_at_the_third(
        outage: Outage, tmp_path: Path) -> None:
    changed, once_uid, twice_uid = frame_whose_rekeyed_uids_are_taken(outage, tmp_path)
    writer = DbWriter(outage.db, Journal(tmp_path / "j2"), tmp_path / "data", batch_rows=4, batch_ms=HOUR_MS)
    with pytest.raises(FrameUidConflict):  # three tries: the third conflict is raised, not rekeyed again
        writer._persist([changed])
    writer.stop()
    assert writer.rekeyed == 2 and changed.result.frame_uid == twice_uid
    assert sorted(uid for uid, _ in rows(outage.db)) == sorted(["f001", once_uid, twice_uid])


def test_a_running_writer_goes_on_after_the_third_uid_conflict_of_a_batch(outage: Outage,
                                                                         tmp_path: Path) -> None:
    """The batch's third conflict is no crash of the writer thread: it stores the batch frame by frame,
    and the clashing frame gets one more derived uid there."""
    changed, once_uid, twice_uid = frame_whose_rekeyed_uids_are_taken(outage, tmp_path)
    thrice_uid = other_image_uid(make_result(1, pixel=200, uid=twice_uid))
    writer = DbWriter(outage.db, Journal(tmp_path / "j2"), tmp_path / "data", batch_rows=4, batch_ms=10)
    writer.submit_many([changed, make_item(2)])  # one batch: the clash, and a frame of its own
    writer.start()
    writer.stop()
    assert (writer.committed, writer.rejected, writer.journaled, writer.rekeyed) == (2, 0, 0, 3)
    stored = sorted(uid for uid, _ in rows(outage.db))
    assert stored == sorted(["f001", "f002", once_uid, twice_uid, thrice_uid])


# -- HTTP uploads stored in the request's thread -------------------------------------------------------------
def upload(k: int, pixel: int = 120) -> InspectionResult:
    return make_result(k, pixel=pixel, source=API_SOURCE)


def test_an_upload_is_stored_at_once_while_the_database_answers(outage: Outage, tmp_path: Path) -> None:
    data = tmp_path / "data"
    announced: list[list[int]] = []
    writer = DbWriter(outage.db, Journal(tmp_path / "journal"), data)
    writer.stored_listeners.append(announced.append)
    result = upload(1)
    stored = writer.store_now(result, "always")
    assert stored is not None and stored.created and stored.row.frame_uid == "f001"
    assert result.image is None and (data / result.image_path).is_file()  # the policy was applied
    assert announced == [[stored.id]]
    again = writer.store_now(upload(1), "always")  # a replay of the same upload
    assert again is not None and (again.created, again.id) == (False, stored.id)
    assert announced == [[stored.id]]  # nothing new to announce
    assert (writer.journaled, writer.committed, writer.is_pending("f001")) == (0, 0, False)
    writer.stop()
    assert [uid for uid, _ in rows(outage.db)] == ["f001"] and journal_records(tmp_path / "journal") == []


def test_an_upload_with_a_used_uid_and_another_image_is_refused(outage: Outage, tmp_path: Path) -> None:
    writer = DbWriter(outage.db, Journal(tmp_path / "journal"), tmp_path / "data")
    writer.store_now(upload(1), "never")
    with pytest.raises(FrameUidConflict):
        writer.store_now(upload(1, pixel=200), "never")  # uploads are not re-keyed: the client chose the uid
    assert (writer.rekeyed, writer.journaled, writer.db_up) == (0, 0, True)
    writer.stop()
    assert [uid for uid, _ in rows(outage.db)] == ["f001"]


def test_an_upload_to_a_database_without_its_tables_fails_and_is_not_journaled(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'empty.db'}")  # answers, but refuses the statement
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data")
    with pytest.raises(OperationalError, match="no such table"):
        writer.store_now(upload(1), "never")
    assert (writer.journaled, writer.is_pending("f001")) == (0, False)
    assert writer.db_up and db.breaker.trips == 0  # a bad statement is no outage
    writer.stop()
    assert journal_records(tmp_path / "journal") == []
    db.dispose()


def test_uploads_are_journaled_while_the_database_is_away_and_replayed_once_it_returns(
        outage: Outage, tmp_path: Path) -> None:
    journal_dir, data = tmp_path / "journal", tmp_path / "data"
    outage.down()
    announced: list[list[int]] = []
    writer = DbWriter(outage.db, Journal(journal_dir), data, batch_rows=8, batch_ms=HOUR_MS, retry_s=3600)
    writer.stored_listeners.append(announced.append)
    first, second = upload(1), upload(2)
    assert writer.store_now(first, "always") is None  # the session finds the database away
    assert writer.last_error.startswith(outage.unreachable) and not writer.db_up
    assert writer.store_now(second, "always") is None  # the open breaker answers at once
    assert (writer.journaled, writer.is_pending("f001"), writer.is_pending("f002")) == (2, True, True)
    assert (data / first.image_path).is_file() and outage.db.breaker.trips == 1
    writer.submit(make_item(3))  # a camera frame behind them
    writer.start()
    writer.stop()
    assert writer.is_pending("f001") and writer.is_pending("f002") and announced == []
    assert not writer.is_pending("f003")  # a camera frame is no upload
    assert [r["frame_uid"] for r in journal_records(journal_dir)] == ["f001", "f002", "f003"]

    outage.up()
    again = DbWriter(outage.db, Journal(journal_dir), data, batch_rows=8, batch_ms=HOUR_MS, retry_s=3600)
    again.stored_listeners.append(announced.append)
    assert [again.is_pending(uid) for uid in ("f001", "f002", "f003")] == [True, True, False]
    again.start()
    again.stop()
    assert not again.is_pending("f001") and not again.is_pending("f002")
    assert (again.replayed, again.db_up) == (3, True)
    stored = rows(outage.db)
    assert [uid for uid, _ in stored] == ["f001", "f002", "f003"]
    assert stored[0][1] == first.image_path
    with outage.db.session() as s:
        ids = list(s.scalars(select(Inspection.id).order_by(Inspection.id)))
    assert announced == [ids]


UNWRITABLE = (r"^the database is unavailable and the journal cannot take the frame \(full or not writable\); "
              r"send it again later$")


def test_an_upload_the_journal_cannot_take_while_the_database_is_away_is_refused(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    outage.down()
    writer = DbWriter(outage.db, Journal(tmp_path / "journal", max_bytes=10), tmp_path / "data")
    with pytest.raises(JournalUnwritable, match=UNWRITABLE) as refused:
        writer.store_now(upload(1), "never")  # full
    assert (refused.value.reason, refused.value.retry_after_s) == ("journal_unavailable", 10)
    assert (writer.journaled, writer.is_pending("f001")) == (0, False)
    full = f"journal {tmp_path / 'journal'} would exceed 10 bytes"
    assert messages(caplog) == [(logging.ERROR, f"database away and the journal cannot take f001: {full}")]
    writer.stop()

    assert journal_records(tmp_path / "journal") == []

    # an image that cannot be written costs the image, not the record: journaled without it
    data = tmp_path / "data-2"
    data.mkdir()
    (data / "images").write_text("a file where the images folder belongs")
    broken = DbWriter(outage.db, Journal(tmp_path / "journal-2"), data)
    result = upload(2)
    assert broken.store_now(result, "always") is None
    assert (broken.journaled, broken.is_pending("f002")) == (1, True)
    assert result.image_path is None and result.image_skipped == "write_failed"
    broken.stop()
    [record] = journal_records(tmp_path / "journal-2")
    assert (record["frame_uid"], record["image_path"]) == ("f002", None)


# -- listeners of stored inspections -----------------------------------------------------------------------
def test_listeners_hear_the_ids_of_new_rows_after_their_commit(outage: Outage, tmp_path: Path) -> None:
    heard: list[tuple[list[int], list[str]]] = []

    def listener(ids: list[int]) -> None:  # reads the rows in its own session: committed already
        with outage.db.session() as s:
            heard.append((ids, list(s.scalars(select(Inspection.frame_uid).where(Inspection.id.in_(ids))
                                              .order_by(Inspection.id)))))

    seed = DbWriter(outage.db, Journal(tmp_path / "j1"), tmp_path / "data", batch_rows=2, batch_ms=HOUR_MS)
    seed.submit(make_item(1))
    seed.start()
    seed.stop()
    others: list[list[int]] = []
    writer = DbWriter(outage.db, Journal(tmp_path / "j2"), tmp_path / "data", batch_rows=2, batch_ms=HOUR_MS)
    writer.stored_listeners.extend([listener, others.append])
    writer.submit_many([make_item(1), make_item(2), make_item(3), make_item(4)])
    writer.start()
    writer.stop()
    assert [uids for _, uids in heard] == [["f002"], ["f003", "f004"]]  # f001 was stored before
    assert others == [ids for ids, _ in heard] and writer.committed == 3


def broken_listener(_ids: list[int]) -> None:
    raise RuntimeError("broker client crashed")


def test_a_failing_listener_costs_neither_the_writer_nor_the_other_listeners(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    heard: list[list[int]] = []
    writer = DbWriter(outage.db, Journal(tmp_path / "j"), tmp_path / "data", batch_rows=2, batch_ms=HOUR_MS)
    writer.stored_listeners.extend([broken_listener, heard.append])
    writer.submit_many([make_item(1), make_item(2), make_item(3), make_item(4)])
    writer.start()
    writer.stop()
    assert writer.committed == 4 and [len(ids) for ids in heard] == [2, 2]  # both batches, after the failure
    failed = (logging.ERROR, "a listener of stored inspections failed on 2 ids")
    assert messages(caplog) == [failed, failed]
    assert all(r.exc_info and r.exc_info[0] is RuntimeError for r in caplog.records if r.name == WRITER_LOG)
    assert writer.store_now(make_item(5).result, "never") is not None  # the upload door answers too
    assert len(heard) == 3


# -- the writer as the configuration says ------------------------------------------------------------------
def test_open_writer_follows_its_configuration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'inspect.db'}"
    upgrade(url)
    db = Database(url)
    data = tmp_path / "data"
    committed: list[list[str]] = []

    def on_journaled(_items: list[Item]) -> None:
        raise AssertionError("nothing is journaled while the database answers")

    config = WriterConfig(batch_rows=2, batch_ms=250.0, queue_size=3, journal_max_mb=0.5,
                          journal_segment_mb=0.25, retry_s=2.5)
    def on_tracks_committed(_tracks: list[TrackRecord]) -> None:
        raise AssertionError("no track is stored here")

    writer = open_writer(db, data, config, on_committed=lambda items, _s: committed.append(uids(items)),
                         on_journaled=on_journaled, on_tracks_committed=on_tracks_committed)
    assert (writer.db, writer.data_dir, writer.journal.dir) == (db, data, data / "journal")
    assert (writer.journal.max_bytes, writer.journal.segment_bytes) == (2**19, 2**18)
    assert (writer.batch_rows, writer.batch_s, writer.retry_s, writer.on_journaled) == (2, 0.25, 2.5,
                                                                                       on_journaled)
    assert writer.on_tracks_committed is on_tracks_committed
    writer.submit_many([make_item(k) for k in range(3)])
    with pytest.raises(TimeoutError, match=r"\(3 results\)"):
        at_once(lambda: writer.submit(make_item(3), timeout=0.0))
    writer.start()
    writer.stop()
    assert committed == [["f000", "f001"], ["f002"]]
    db.dispose()


# -- a used uid while the database is away: the image store is the witness ---------------------------------
def with_crops(result: InspectionResult, n: int) -> Item:
    apply_image_policy(result, "always")
    crops = [f"crop-{result.image_sha256}-{c}".encode() for c in range(n)]
    result.crop_count, result.crop_size = n, sum(len(c) for c in crops)
    return Item(result, crops=crops)


def store_files(data: Path) -> dict[str, bytes]:
    found = sorted((data / "images").rglob("*"))
    return {str(p.relative_to(data)): p.read_bytes() for p in found if p.is_file()}


def test_an_upload_with_a_used_uid_and_another_image_is_refused_while_the_database_is_away(
        outage: Outage, tmp_path: Path) -> None:
    data = tmp_path / "data"
    writer = DbWriter(outage.db, Journal(tmp_path / "journal"), data, retry_s=3600)
    assert writer.store_now(upload(1), "always") is not None
    before = store_files(data)
    outage.down()
    with pytest.raises(FrameUidConflict, match="'f001'"):
        writer.store_now(upload(1, pixel=200), "always")
    assert store_files(data) == before  # the stored frame's image is untouched
    assert (writer.journaled, writer.is_pending("f001")) == (0, False)
    assert writer.store_now(upload(1), "always") is None  # the same image again: a replay, journaled
    assert store_files(data) == before
    writer.stop()
    outage.up()
    again = DbWriter(outage.db, Journal(tmp_path / "journal"), data, retry_s=3600)
    again.start()
    again.stop()
    assert [uid for uid, _ in rows(outage.db)] == ["f001"] and store_files(data) == before


def test_a_camera_frame_with_a_used_uid_and_another_image_is_journaled_under_its_own_uid(
        outage: Outage, tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed = DbWriter(outage.db, Journal(tmp_path / "j1"), data, batch_rows=4, batch_ms=HOUR_MS)
    seed.submit(with_crops(make_result(1), 2))
    seed.start()
    seed.stop()
    before = store_files(data)
    assert len(before) == 3  # the frame and its two crops
    outage.down()
    changed = with_crops(make_result(1, pixel=200), 2)
    own_uid = other_image_uid(changed.result)
    writer = DbWriter(outage.db, Journal(tmp_path / "j2"), data, batch_rows=4, batch_ms=HOUR_MS, retry_s=3600)
    writer.submit(changed)
    writer.start()
    writer.stop()
    assert (writer.journaled, writer.rekeyed) == (1, 1) and changed.result.frame_uid == own_uid
    after = store_files(data)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing of f001 overwritten
    assert sorted(k for k in after if k not in before) == sorted(
        [changed.result.image_path] + [f"{changed.result.image_path[:-4]}-crop{k}.jpg" for k in range(2)])

    outage.up()
    again = DbWriter(outage.db, Journal(tmp_path / "j2"), data, batch_rows=4, batch_ms=HOUR_MS, retry_s=3600)
    again.start()
    again.stop()
    stored = dict(rows(outage.db))
    assert set(stored) == {"f001", own_uid} and stored[own_uid] == changed.result.image_path
    assert store_files(data) == after


def test_a_journaled_frame_rekeyed_at_its_replay_takes_its_files_along(outage: Outage,
                                                                        tmp_path: Path) -> None:
    """The stored frame's files were pruned, so nothing on disk tells the uid is used: the journaled
    frame writes its files under the used uid; its replay re-keys it and moves them to its own uid."""
    data = tmp_path / "data"
    seed = DbWriter(outage.db, Journal(tmp_path / "j1"), data, batch_rows=4, batch_ms=HOUR_MS)
    seed.submit(with_crops(make_result(1), 2))
    seed.start()
    seed.stop()
    for path in (data / "images").rglob("*.jpg"):
        path.unlink()  # as the pruner does (its row keeps image_expired_at)
    outage.down()
    changed = with_crops(make_result(1, pixel=200), 2)
    writer = DbWriter(outage.db, Journal(tmp_path / "j2"), data, batch_rows=4, batch_ms=HOUR_MS, retry_s=3600)
    writer.submit(changed)
    writer.start()
    writer.stop()
    assert (writer.journaled, writer.rekeyed, changed.result.frame_uid) == (1, 0, "f001")
    journaled = store_files(data)
    assert len(journaled) == 3 and all("/f001" in name for name in journaled)

    outage.up()
    again = DbWriter(outage.db, Journal(tmp_path / "j2"), data, batch_rows=4, batch_ms=HOUR_MS, retry_s=3600)
    again.start()
    again.stop()
    own_uid = other_image_uid(changed.result)
    assert again.rekeyed == 1
    stored = dict(rows(outage.db))
    assert set(stored) == {"f001", own_uid}
    frame = stored[own_uid]
    assert frame is not None and frame.endswith(f"/{own_uid}.jpg")
    moved = store_files(data)
    assert sorted(moved) == sorted([frame] + [frame[:-4] + f"-crop{k}.jpg" for k in range(2)])
    assert sorted(moved.values()) == sorted(journaled.values())  # the journaled frame's own bytes


# -- frames that keep their crops only (no frame image) ------------------------------------------------------
def crops_only(result: InspectionResult, n: int = 2) -> Item:
    """A camera frame whose camera keeps crops only: no image bytes, ``n`` crops of its own image."""
    item = with_crops(result, n)
    item.result.image_bytes = None
    return item


def test_a_crops_only_frame_rekeyed_at_its_commit_leaves_the_stored_frames_crops_alone(
        outage: Outage, tmp_path: Path) -> None:
    data = tmp_path / "data"
    seed = DbWriter(outage.db, Journal(tmp_path / "j1"), data, batch_rows=4, batch_ms=HOUR_MS)
    seed.submit(crops_only(make_result(1)))
    seed.start()
    seed.stop()
    before = store_files(data)
    assert len(before) == 2
    changed = crops_only(make_result(1, pixel=200))
    crops, own_uid = list(changed.crops), other_image_uid(changed.result)
    writer = DbWriter(outage.db, Journal(tmp_path / "j2"), data, batch_rows=4, batch_ms=HOUR_MS)
    writer.submit(changed)
    writer.start()
    writer.stop()
    assert (writer.rekeyed, writer.committed, changed.result.frame_uid) == (1, 1, own_uid)
    assert dict(rows(outage.db)) == {"f001": None, own_uid: None}
    after = store_files(data)
    assert {k: v for k, v in after.items() if k in before} == before  # f001's crops stay where they were
    assert [(data / crop_file(changed.result, k)).read_bytes() for k in range(2)] == crops


def test_while_the_database_is_away_the_first_crop_witnesses_a_used_uid(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A crops-only frame has no image file: its first crop tells the same frame sent again (its crops
    as stored) from another frame under a used uid (other crops)."""
    data, journal_dir = tmp_path / "data", tmp_path / "j2"
    seed = DbWriter(outage.db, Journal(tmp_path / "j1"), data, batch_rows=4, batch_ms=HOUR_MS)
    seed.submit_many([crops_only(make_result(1)), crops_only(make_result(2, pixel=90), 1)])
    seed.start()
    seed.stop()
    before = store_files(data)
    assert len(before) == 3
    outage.down()
    again = crops_only(make_result(1))  # the same frame: the same crops
    changed = [crops_only(make_result(1, pixel=200)), crops_only(make_result(2, pixel=201), 1)]
    own = [other_image_uid(c.result) for c in changed]
    writer = DbWriter(outage.db, Journal(journal_dir), data, batch_rows=4, batch_ms=HOUR_MS, retry_s=3600)
    writer.submit_many([again, *changed])
    writer.start()
    writer.stop()
    assert (writer.journaled, writer.rekeyed) == (3, 2)
    assert [again.result.frame_uid] + [c.result.frame_uid for c in changed] == ["f001", *own]
    assert [r["frame_uid"] for r in journal_records(journal_dir)] == ["f001", *own]
    assert messages(caplog) == [
        (logging.WARNING, f"frame_uid f00{k} of camera cam-w holds another image; this frame is journaled "
                          f"as {uid}") for k, uid in ((1, own[0]), (2, own[1]))]
    after = store_files(data)
    assert {k: v for k, v in after.items() if k in before} == before
    assert len(after) == 3 + 3  # the two re-keyed frames' crops, under their own uids

    outage.up()
    replay = DbWriter(outage.db, Journal(journal_dir), data, batch_rows=4, batch_ms=HOUR_MS)
    replay.start()
    replay.stop()
    assert (replay.replayed, replay.rekeyed) == (2, 0)
    assert sorted(uid for uid, _ in rows(outage.db)) == sorted(["f001", "f002", *own])
    assert store_files(data) == after


def test_a_journaled_crops_only_frame_rekeyed_at_its_replay_takes_the_crops_it_still_has(
        outage: Outage, tmp_path: Path) -> None:
    """As above, crops only; one journaled crop is pruned before the replay: the other moves, the row
    keeps no image."""
    data = tmp_path / "data"
    seed = DbWriter(outage.db, Journal(tmp_path / "j1"), data, batch_rows=4, batch_ms=HOUR_MS)
    seed.submit(crops_only(make_result(1)))
    seed.start()
    seed.stop()
    for path in (data / "images").rglob("*.jpg"):
        path.unlink()
    outage.down()
    changed = crops_only(make_result(1, pixel=200))
    crops = list(changed.crops)
    writer = DbWriter(outage.db, Journal(tmp_path / "j2"), data, batch_rows=4, batch_ms=HOUR_MS, retry_s=3600)
    writer.submit(changed)
    writer.start()
    writer.stop()
    assert (writer.journaled, writer.rekeyed, changed.result.frame_uid) == (1, 0, "f001")
    (data / crop_file(changed.result, 1)).unlink()

    outage.up()
    again = DbWriter(outage.db, Journal(tmp_path / "j2"), data, batch_rows=4, batch_ms=HOUR_MS, retry_s=3600)
    again.start()
    again.stop()
    own_uid = other_image_uid(changed.result)
    assert (again.rekeyed, again.replayed) == (1, 1)
    assert dict(rows(outage.db)) == {"f001": None, own_uid: None}
    changed.result.frame_uid = own_uid
    assert store_files(data) == {crop_file(changed.result, 0): crops[0]}


# -- tracked defects: each track behind its best frame -------------------------------------------------------
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def tracked(k: int) -> Item:
    """A frame of a camera with tracking: its defects are stored with their tracks, not with it."""
    item = make_item(k)
    item.result.tracked = True
    return item


def track(k: int, best: str) -> TrackItem:
    """Track ``t<k>``, seen most confidently in frame ``best``; every value differs from track to track."""
    return TrackItem(TrackRecord(
        track_uid=f"t{k:03d}", track_number=k, camera_id="cam-w", line="line-w", station=f"st-{k}",
        part_id=f"part-{k}", class_id=k % 2, class_name=NAMES[k % 2], confidence=0.5 + k / 100,
        frames_seen=3 + k, first_frame_uid=f"first-{k}", best_frame_uid=best, last_frame_uid=f"last-{k}",
        started_at=T0 + timedelta(seconds=k), ended_at=T0 + timedelta(seconds=k + 2),
        box=[1.0 + k, 2.0 + k, 20.0 + k, 22.0 + k], position_px=[10.0 + k, 12.0 + k],
        size_px=[19.0 + k, 20.0 + k], mm_per_px=0.5 + k, frame_uids=[f"first-{k}", best, f"last-{k}"]))


def stored_tracks(db: Database) -> list[tuple[TrackRecord, str, list[tuple]]]:
    """Each stored track as a record again, its inspection's frame_uid, and its defect rows."""
    with db.session() as s:
        out = []
        for row in s.scalars(select(Track).order_by(Track.id)):
            rec = TrackRecord(
                track_uid=row.track_uid, track_number=row.track_number, camera_id=row.camera_id,
                line=row.line, station=row.station, part_id=row.part_id, class_id=row.class_id,
                class_name=row.class_name, confidence=row.confidence, frames_seen=row.frames_seen,
                first_frame_uid=row.first_frame_uid, best_frame_uid=row.best_frame_uid,
                last_frame_uid=row.last_frame_uid, started_at=row.started_at.replace(tzinfo=UTC),
                ended_at=row.ended_at.replace(tzinfo=UTC), box=[row.x1, row.y1, row.x2, row.y2],
                position_px=[row.position_x_px, row.position_y_px], size_px=[row.width_px, row.height_px],
                mm_per_px=row.mm_per_px, frame_uids=list(row.frame_uids))
            inspection = s.get(Inspection, row.inspection_id)
            defects = [(d.inspection_id, d.class_name, d.confidence, [d.x1, d.y1, d.x2, d.y2])
                       for d in s.scalars(select(Defect).where(Defect.track_id == row.id))]
            out.append((rec, inspection.frame_uid, defects))
            assert [d[0] for d in defects] == [inspection.id]
        return out


def test_tracks_are_stored_behind_their_best_frames_once_and_reported_once(outage: Outage,
                                                                         tmp_path: Path) -> None:
    reported: list[list[TrackRecord]] = []
    committed: list[list[str]] = []
    writer = DbWriter(outage.db, Journal(tmp_path / "j1"), tmp_path / "data", batch_rows=2, batch_ms=HOUR_MS,
                      on_committed=lambda items, _s: committed.append(uids(items)),
                      on_tracks_committed=reported.append)
    assert writer.tracks_committed == 0
    tracks = [track(0, "f000"), track(1, "f002"), track(2, "f001")]
    frames = [tracked(k) for k in range(3)]
    before = commits()
    writer.submit_many([frames[0], tracks[0], frames[1], frames[2], tracks[1], tracks[2]])
    writer.start()
    writer.stop()
    # batches [f000, t000], [f001, f002], [t001, t002]: two of frames (timed), two of tracks
    assert committed == [["f000"], ["f001", "f002"]] and commits() - before == 2
    assert reported == [[tracks[0].track], [tracks[1].track, tracks[2].track]]
    assert (writer.tracks_committed, writer.committed, writer.rejected) == (3, 3, 0)
    stored = stored_tracks(outage.db)
    assert [rec for rec, _, _ in stored] == [t.track for t in tracks]
    assert [(uid, [d[1:] for d in defects]) for _, uid, defects in stored] == [
        (t.track.best_frame_uid, [(t.track.class_name, t.track.confidence, t.track.box)]) for t in tracks]
    with outage.db.session() as s:  # a tracked frame stores no defects of its own
        assert s.scalar(select(func.count()).select_from(Defect)) == 3

    # the same again (a replay) and one new track: the new one alone is stored, without a listener
    again = DbWriter(outage.db, Journal(tmp_path / "j2"), tmp_path / "data", batch_rows=8, batch_ms=HOUR_MS)
    newer = track(3, "f003")
    again.submit_many([tracked(k) for k in range(4)] + [track(k, t.track.best_frame_uid)
                                                         for k, t in enumerate(tracks)] + [newer])
    again.start()
    again.stop()
    assert (again.tracks_committed, again.committed, again.rejected) == (1, 1, 0)
    assert [rec for rec, _, _ in stored_tracks(outage.db)] == [t.track for t in [*tracks, newer]]

    # only replays: the listener hears nothing
    heard: list[list[TrackRecord]] = []
    third = DbWriter(outage.db, Journal(tmp_path / "j3"), tmp_path / "data", batch_rows=8, batch_ms=HOUR_MS,
                     on_tracks_committed=heard.append)
    third.submit_many([track(0, "f000"), track(3, "f003")])
    third.start()
    third.stop()
    assert (heard, third.tracks_committed, third.rejected) == ([], 0, 0)
    assert len(stored_tracks(outage.db)) == 4


def test_tracks_are_journaled_behind_their_frames_and_replayed_once(outage: Outage, tmp_path: Path) -> None:
    journal_dir, data = tmp_path / "journal", tmp_path / "data"
    outage.down()
    journaled: list[list[str]] = []
    writer = DbWriter(outage.db, Journal(journal_dir), data, batch_rows=3, batch_ms=HOUR_MS, retry_s=3600,
                      on_journaled=lambda items: journaled.append(uids(items)))
    items = [tracked(0), track(0, "f000"), tracked(1), track(1, "f001")]
    writer.submit_many(items)
    writer.start()
    writer.stop()
    assert journaled == [["f000", "f001"], []] and writer.journaled == 4  # frames reported, tracks counted
    records = journal_records(journal_dir)
    assert records == [to_journal(i) for i in items]
    assert [r.get("kind") for r in records] == [None, "track", None, "track"]
    back = [from_journal(json.loads(json.dumps(r))) for r in records]
    assert [b.track for b in back if isinstance(b, TrackItem)] == [items[1].track, items[3].track]

    outage.up()
    reported: list[list[str]] = []
    again = DbWriter(outage.db, Journal(journal_dir), data, batch_rows=3, batch_ms=HOUR_MS,
                     on_tracks_committed=lambda tracks: reported.append([t.track_uid for t in tracks]))
    again.start()
    again.stop()
    assert (again.replayed, again.tracks_committed, again.rejected) == (2, 2, 0)
    assert reported == [["t000"], ["t001"]]  # replayed in chunks of batch_rows: [f000, t000, f001], [t001]
    assert [(rec.track_uid, uid) for rec, uid, _ in stored_tracks(outage.db)] == [("t000", "f000"),
                                                                                  ("t001", "f001")]
    assert journal_records(journal_dir) == []


def test_tracks_the_database_refuses_or_whose_frame_is_missing_are_set_aside(
        database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = Database(database_url)
    journal_dir, data = tmp_path / "j2", tmp_path / "data"
    seed = DbWriter(db, Journal(tmp_path / "j1"), data, batch_rows=4, batch_ms=HOUR_MS)
    seed.submit_many([tracked(1), track(1, "f001")])
    seed.start()
    seed.stop()
    with db.session() as s:
        s.add(Webhook(url="http://127.0.0.1:9/ng", events=["inspection.ng"], secret="s" * 32))
        s.commit()
    refuse(db, "delivery")  # a new track queues inspection.ng for its defect, which the database refuses
    reported: list[list[TrackRecord]] = []
    writer = DbWriter(db, Journal(journal_dir), data, batch_rows=8, batch_ms=HOUR_MS,
                      on_tracks_committed=reported.append)
    replayed, refused, orphan = track(1, "f001"), track(2, "f002"), track(3, "f404")
    writer.submit_many([tracked(2), replayed, refused, orphan])  # a tracked frame queues no delivery
    writer.start()
    writer.stop()
    assert (writer.committed, writer.tracks_committed, writer.rejected, reported) == (1, 0, 2, [])
    lines = (journal_dir / "rejected.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [to_journal(refused), to_journal(orphan)]
    logged = messages(caplog)
    assert [(level, text.split(": (")[0]) for level, text in logged] == [
        (logging.ERROR, "track t002 refused by the database, set aside in rejected.jsonl"),
        (logging.ERROR, "track t003: its best frame f404 is not stored; set aside in rejected.jsonl")]
    assert logged[0][1].endswith("deliveries refused")
    assert [rec.track_uid for rec, _, _ in stored_tracks(db)] == ["t001"]
    assert [uid for uid, _ in rows(db)] == ["f001", "f002"]
    db.dispose()


def test_a_tracks_crop_travels_in_its_journal_record() -> None:
    with_crop, without = TrackItem(track(1, "f001").track, crop=b"\xff\xd8crop"), track(2, "f002")
    rec = json.loads(json.dumps(to_journal(with_crop)))
    assert rec["crop_jpeg_b64"] == "/9hjcm9w" and from_journal(rec) == with_crop
    rec = json.loads(json.dumps(to_journal(without)))
    assert "crop_jpeg_b64" not in rec and from_journal(rec) == without


def test_a_tracks_crop_is_stored_with_its_best_frame_also_when_its_batch_is_retried_one_by_one(
        outage: Outage, tmp_path: Path) -> None:
    data = tmp_path / "data"
    writer = DbWriter(outage.db, Journal(tmp_path / "j1"), data, batch_rows=4, batch_ms=HOUR_MS)
    first = tracked(0)
    writer.submit_many([first, TrackItem(track(0, "f000").track, crop=b"crop-t000")])
    writer.start()
    writer.stop()
    assert store_files(data) == {crop_file(first.result, 0): b"crop-t000"}

    # a track the database refuses (no class name) makes the batch's tracks go in one by one
    again = DbWriter(outage.db, Journal(tmp_path / "j2"), data, batch_rows=4, batch_ms=HOUR_MS)
    second = tracked(1)
    broken = track(1, "f001")
    broken.track.class_name = None
    again.submit_many([second, broken, TrackItem(track(2, "f001").track, crop=b"crop-t002")])
    again.start()
    again.stop()
    assert (again.tracks_committed, again.rejected) == (1, 1)
    assert store_files(data) == {crop_file(first.result, 0): b"crop-t000",
                                 crop_file(second.result, 0): b"crop-t002"}
    assert [rec.track_uid for rec, _, _ in stored_tracks(outage.db)] == ["t000", "t002"]


def test_track_listeners_hear_the_ids_of_new_tracks_and_a_failing_one_is_logged(
        outage: Outage, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    heard: list[list[int]] = []
    writer = DbWriter(outage.db, Journal(tmp_path / "j"), tmp_path / "data", batch_rows=4, batch_ms=HOUR_MS)
    writer.track_listeners.extend([broken_listener, heard.append])
    writer.submit_many([tracked(0), tracked(1), track(0, "f000"), track(1, "f001")])
    writer.start()
    writer.stop()
    with outage.db.session() as s:
        ids = list(s.scalars(select(Track.id).order_by(Track.id)))
    assert len(ids) == 2 and heard == [ids]
    assert messages(caplog) == [(logging.ERROR, "a listener of stored tracks failed on 2 ids")]
