"""The ingest database writer: batched commits, the on-disk journal during a database outage, replay
in order and exactly once (SQLite: the database folder disappears; PostgreSQL: pg_ctl stop/start)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import NEU_NAMES
from drill_helpers import postgres_server, scratch_database
from sqlalchemy import func, select
from sqlalchemy.pool import NullPool

from app import metrics
from app.db.migrate import upgrade
from app.db.models import Defect, Inspection
from app.db.session import Database
from app.detections import Detections
from app.ingest.journal import Journal, JournalFull
from app.ingest.writer import DbWriter, Item, to_journal
from app.inspection import CameraContext, inspect_frame

CTX = CameraContext(camera_id="cam-1", line="line-1", station="top")


def make_item(k: int, ng: bool = True) -> Item:
    dets = (Detections([[1 + k, 2, 30, 40]], [0.9], [2], NEU_NAMES) if ng else Detections.empty(NEU_NAMES))
    frame = np.full((48, 64, 3), 100, np.uint8)
    result = inspect_frame(frame, dets, model_version="test-1", context=CTX, source="stream",
                           frame_uid=f"uid-{k:05d}")
    result.image = None
    return Item(result, time.perf_counter())


def wait_until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def stored(db: Database) -> tuple[int, int, list[str]]:
    with db.session() as s:
        n = s.scalar(select(func.count()).select_from(Inspection))
        d = s.scalar(select(func.count()).select_from(Defect))
        uids = list(s.scalars(select(Inspection.frame_uid).order_by(Inspection.id)))
    return int(n or 0), int(d or 0), uids


# -- databases that can be taken away ------------------------------------------------------------
@dataclass
class Outage:
    url: str
    down: Callable[[], None]
    up: Callable[[], None]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    if request.param == "sqlite":
        folder = tmp_path / "db"
        url = f"sqlite:///{folder / 'inspect.db'}"
        upgrade(url)
        away = tmp_path / "db-away"
        yield Outage(url, lambda: folder.rename(away), lambda: away.rename(folder))
        return
    server = postgres_server()
    with scratch_database(server) as url:
        yield Outage(url, server.stop, server.start)


# -- tests ----------------------------------------------------------------------------------------
def test_commits_in_batches_of_n_rows(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    batches: list[int] = []
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=4, batch_ms=10_000,
                      on_committed=lambda items, _s: batches.append(len(items)))
    for k in range(10):  # queued before the thread starts: full batches of 4, then the rest on drain
        writer.submit(make_item(k))
    writer.start()
    wait_until(lambda: sum(batches) >= 8)
    assert batches == [4, 4]  # the last 2 wait for more rows (or for batch_ms)
    writer.stop()
    assert batches == [4, 4, 2]
    assert stored(db)[:2] == (10, 10)
    db.dispose()


def test_commits_a_partial_batch_after_batch_ms(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    batches: list[int] = []
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=100, batch_ms=50,
                      on_committed=lambda items, _s: batches.append(len(items)))
    writer.start()
    for k in range(3):
        writer.submit(make_item(k))
    wait_until(lambda: sum(batches) == 3)  # without stop(): the time limit flushed them
    writer.stop()
    assert stored(db)[0] == 3
    db.dispose()


@pytest.mark.drill
def test_outage_mid_stream_journals_then_replays_exactly_once(outage: Outage, tmp_path: Path) -> None:
    db = Database(outage.url, poolclass=NullPool) if outage.url.startswith("sqlite") else Database(outage.url)
    committed: list[str] = []
    journaled: list[str] = []
    writer = DbWriter(
        db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=3, batch_ms=20, retry_s=0.1,
        on_committed=lambda items, _s: committed.extend(i.result.frame_uid for i in items),
        on_journaled=lambda items: journaled.extend(i.result.frame_uid for i in items))
    writer.start()
    for k in range(6):
        writer.submit(make_item(k, ng=k % 2 == 0))
    wait_until(lambda: len(committed) == 6)

    outage.down()
    for k in range(6, 20):
        writer.submit(make_item(k, ng=k % 2 == 0))
    wait_until(lambda: len(journaled) == 14)
    assert writer.db_up is False and metrics.REGISTRY.get_sample_value("inspect_db_up") == 0
    # what GET /api/v1/cameras shows: down, in words without the database's address
    assert db.breaker.view()["up"] is False and db.breaker.view()["last_error"] == "database unreachable"
    assert writer.journal.pending == 14 and metrics.REGISTRY.get_sample_value("inspect_journal_pending") == 14
    assert list((tmp_path / "journal").glob("*.jsonl"))  # on disk, not in memory

    outage.up()
    for k in range(20, 25):  # while the journal replays, new results queue behind it
        writer.submit(make_item(k))
    wait_until(lambda: len(committed) == 25)
    writer.stop()
    n, defects, uids = stored(db)
    assert n == 25 and len(set(uids)) == 25
    assert uids == [f"uid-{k:05d}" for k in range(25)]  # replayed in order, live results after
    assert defects == sum(1 for k in range(25) if k % 2 == 0 or k >= 20)
    assert writer.journal.pending == 0 and not list((tmp_path / "journal").glob("*.jsonl"))
    assert writer.db_up and metrics.REGISTRY.get_sample_value("inspect_db_up") == 1
    assert db.breaker.view() == {"up": True, "last_error": None, "down_for_s": None}  # no stale error
    db.dispose()


def test_replay_of_an_earlier_run_skips_rows_already_committed(database_url: str, tmp_path: Path) -> None:
    """A crash after a commit, before its journal segment was deleted: the replay stores each frame once."""
    db = Database(database_url)
    first = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=10, batch_ms=10)
    first.start()
    for k in range(2):
        first.submit(make_item(k))
    first.stop()
    journal = Journal(tmp_path / "journal")
    journal.append([to_journal(make_item(k)) for k in range(4)])  # uid-0, uid-1 are already stored
    journal.close()
    with open(journal.segments()[-1], "a") as fh:
        fh.write('{"frame_uid": "half-writt')  # a crash in the middle of an append

    again = Journal(tmp_path / "journal")
    assert again.pending == 4
    writer = DbWriter(db, again, tmp_path / "data", batch_rows=10, batch_ms=10)
    writer.start()
    wait_until(lambda: again.pending == 0)
    writer.stop()
    n, _, uids = stored(db)
    assert n == 4 and uids == [f"uid-{k:05d}" for k in range(4)]
    assert writer.replayed == 2
    db.dispose()


def test_journal_is_bounded(tmp_path: Path) -> None:
    records = [to_journal(make_item(0))]
    size = len(json.dumps(records[0], separators=(",", ":"))) + 1
    journal = Journal(tmp_path / "j", max_bytes=5 * size, segment_bytes=2 * size)
    for _ in range(5):
        journal.append(records)
    with pytest.raises(JournalFull):
        journal.append(records)
    assert journal.bytes == 5 * size and journal.pending == 5
    journal.close()
    assert len(journal.segments()) == 3  # rotated into segments of 2, 2 and 1 records
    assert sum(len(journal.read(s)) for s in journal.segments()) == 5


def test_journal_folder_is_held_by_one_journal_at_a_time(tmp_path: Path) -> None:
    from app.ingest.journal import Journal, JournalInUse

    first = Journal(tmp_path / "j")
    with pytest.raises(JournalInUse, match=rf"is in use by another process \(pid {os.getpid()}\)") as err:
        Journal(tmp_path / "j")
    assert str(tmp_path / "j") in str(err.value) and "INSPECT_DATA_DIR" in str(err.value)
    first.close()
    Journal(tmp_path / "j").close()  # released on close


def test_a_journal_held_by_another_process_is_refused_until_that_process_dies(tmp_path: Path) -> None:
    import sys

    from app.ingest.journal import Journal, JournalInUse

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from app.ingest.journal import Journal; "
         f"j = Journal({str(tmp_path / 'j')!r}); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(JournalInUse, match=f"pid {holder.pid}"):
            Journal(tmp_path / "j")
    finally:
        holder.kill()  # a crash: the OS drops the lock with the process
        holder.wait()
    Journal(tmp_path / "j").close()


def test_a_row_the_database_refuses_leaves_no_image_or_crop_files(database_url: str, tmp_path: Path) -> None:
    """An NG row whose commit the database refuses for good (a trigger refuses its webhook delivery) is
    set aside in rejected.jsonl; its frame file, written before the commit, is removed and its crops are
    never written. The OK row of the same batch is stored with its image."""
    from db_helpers import refuse

    from app.db.models import Webhook
    from app.inspection import apply_image_policy

    db = Database(database_url)
    with db.session() as s:
        s.add(Webhook(url="http://127.0.0.1:9/ng", events=["inspection.ng"], secret="s" * 32))
        s.commit()
    refuse(db, "delivery")
    data_dir = tmp_path / "data"
    ng, ok = make_item(1, ng=True), make_item(2, ng=False)
    for item in (ng, ok):
        item.result.image = np.full((48, 64, 3), 100, np.uint8)
        apply_image_policy(item.result, "always")
    ng.crops = [b"crop-0"]
    writer = DbWriter(db, Journal(tmp_path / "journal"), data_dir, batch_rows=2, batch_ms=10)
    writer.submit_many([ng, ok])
    writer.start()
    writer.stop()
    assert (writer.rejected, writer.committed) == (1, 1)
    assert stored(db)[2] == ["uid-00002"]
    files = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file())
    assert files == [ok.result.image_path] and ok.result.image_path.endswith("/uid-00002.jpg")
    lines = (tmp_path / "journal" / "rejected.jsonl").read_text(encoding="utf-8").splitlines()
    rejected = [json.loads(line) for line in lines]
    assert [r["frame_uid"] for r in rejected] == ["uid-00001"]
    db.dispose()
