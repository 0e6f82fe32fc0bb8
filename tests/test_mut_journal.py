"""The on-disk journal file by file: segment names and rollover, the byte bound, counts across a restart,
half-written and unreadable lines, removal and the folder lock (cases found by mutation testing of
app/ingest/journal.py)."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.ingest.journal import Journal, JournalFull, JournalInUse, ensure_journal_free


def test_a_new_journal_is_empty_with_the_default_bounds(tmp_path: Path) -> None:
    j = Journal(tmp_path / "a" / "j")
    assert (j.max_bytes, j.segment_bytes) == (512 * 1024 * 1024, 8 * 1024 * 1024)
    assert (j.pending, j.bytes, j.segments()) == (0, 0, [])
    j.append([])
    assert j.segments() == []
    j.close()


def test_records_are_compact_json_lines_in_numbered_segments(tmp_path: Path) -> None:
    j = Journal(tmp_path, max_bytes=10_000, segment_bytes=10_000)
    j.append([{"a": 1, "t": datetime(2026, 1, 2, tzinfo=UTC)}, {"b": [1, 2]}])
    [seg] = j.segments()
    assert seg.name == "000000000001.jsonl"
    text = seg.read_text(encoding="utf-8")
    assert text == '{"a":1,"t":"2026-01-02 00:00:00+00:00"}\n{"b":[1,2]}\n'
    assert (j.pending, j.bytes) == (2, len(text))
    assert j.read(seg) == [{"a": 1, "t": "2026-01-02 00:00:00+00:00"}, {"b": [1, 2]}]
    j.close()


def test_a_segment_is_closed_once_it_reaches_segment_bytes(tmp_path: Path) -> None:
    line = '{"k":"xxxx"}\n'  # 13 bytes
    j = Journal(tmp_path, max_bytes=10_000, segment_bytes=26)
    j.append([{"k": "xxxx"}])
    j.append([{"k": "xxxx"}])  # 13 < 26: same segment
    assert [s.name for s in j.segments()] == ["000000000001.jsonl"]
    j.append([{"k": "xxxx"}])  # 26 >= 26: a new one
    assert [s.name for s in j.segments()] == ["000000000001.jsonl", "000000000002.jsonl"]
    assert j.segments()[0].read_text() == line * 2
    j.seal()
    j.append([{"k": "xxxx"}])  # after seal: always a new segment
    assert [s.stem for s in j.segments()] == ["000000000001", "000000000002", "000000000003"]
    j.close()


def test_the_byte_bound_admits_exactly_max_bytes(tmp_path: Path) -> None:
    j = Journal(tmp_path, max_bytes=26)
    j.append([{"k": "xxxx"}, {"k": "xxxx"}])  # 26 bytes: exactly the bound
    with pytest.raises(JournalFull, match=f"journal {tmp_path} would exceed 26 bytes"):
        j.append([{"k": ""}])
    assert (j.pending, j.bytes) == (2, 26)
    j.close()


def test_a_reopened_journal_counts_what_an_earlier_run_left(tmp_path: Path, caplog) -> None:
    j = Journal(tmp_path)
    j.append([{"n": 1}, {"n": 2}])
    j.seal()
    j.append([{"n": 3}])
    j.close()
    (tmp_path / "notes.jsonl").write_text('{"x":1}\n')  # not a segment: ignored
    with open(tmp_path / "000000000002.jsonl", "ab") as fh:
        fh.write(b'{"n":4')  # a crash mid-line
    size = sum(s.stat().st_size for s in tmp_path.glob("0*.jsonl"))
    with caplog.at_level(logging.WARNING, logger="app.ingest.journal"):
        again = Journal(tmp_path)
    assert (again.pending, again.bytes) == (3, size)
    assert [r.getMessage() for r in caplog.records] == [
        f"journal {tmp_path / '000000000002.jsonl'}: skipping a half-written last line",
        f"journal {tmp_path} holds 3 results from an earlier run; they will be replayed"]
    assert [s.name for s in again.segments()] == ["000000000001.jsonl", "000000000002.jsonl"]
    assert again.read(again.segments()[1]) == [{"n": 3}]
    again.append([{"n": 5}])
    assert again.segments()[-1].name == "000000000003.jsonl"
    again.close()


def test_an_empty_journal_reopens_without_a_warning(tmp_path: Path, caplog) -> None:
    Journal(tmp_path).close()
    with caplog.at_level(logging.WARNING, logger="app.ingest.journal"):
        Journal(tmp_path).close()
    assert caplog.text == ""


def test_an_unreadable_line_is_skipped_and_named(tmp_path: Path, caplog) -> None:
    seg = tmp_path / "000000000007.jsonl"
    seg.write_bytes(b'{"n":1}\nnot json\n{"n":3}\n')
    j = Journal(tmp_path)
    assert j.pending == 3
    with caplog.at_level(logging.ERROR, logger="app.ingest.journal"):
        assert j.read(seg) == [{"n": 1}, {"n": 3}]
    assert caplog.records[-1].getMessage() == f"journal {seg}:2: unreadable record skipped"
    j.append([{"n": 4}])
    assert j.segments()[-1].name == "000000000008.jsonl"
    j.close()


def test_remove_forgets_a_segment_and_its_counts(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.append([{"n": 1}, {"n": 2}])
    j.seal()
    j.append([{"n": 3}])
    first, second = j.segments()
    size = first.stat().st_size
    total = j.bytes
    j.remove(first, 2)
    assert not first.exists() and j.segments() == [second]
    assert (j.pending, j.bytes) == (1, total - size)
    j.remove(second, 5)  # counts never go below zero
    assert (j.pending, j.bytes) == (0, 0)
    j.close()


def test_the_lock_names_its_process_and_is_released_on_close(tmp_path: Path) -> None:
    ensure_journal_free(tmp_path)  # no lock file yet: free
    j = Journal(tmp_path)
    assert (tmp_path / ".lock").read_text() == str(os.getpid())
    message = (rf"^journal folder {tmp_path} is in use by another process \(pid {os.getpid()}\); give each "
               r"service or `defect-inspect ingest` process its own INSPECT_DATA_DIR$")
    with pytest.raises(JournalInUse, match=message):
        ensure_journal_free(tmp_path)
    with pytest.raises(JournalInUse):
        Journal(tmp_path)
    j.close()
    j.close()  # closing twice is harmless
    ensure_journal_free(tmp_path)
    Journal(tmp_path).close()


def test_a_lock_file_without_a_pid_names_an_unknown_owner(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    (tmp_path / ".lock").write_text("")
    with pytest.raises(JournalInUse, match=r"\(pid unknown\)"):
        ensure_journal_free(tmp_path)
    j.close()


def test_records_survive_as_written(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    records = [{"frame_uid": f"u{i}", "v": i / 3} for i in range(5)]
    j.append(records)
    j.close()
    lines = (tmp_path / "000000000001.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records


def test_a_failed_fsync_leaves_no_partial_batch_and_no_count(tmp_path: Path, monkeypatch) -> None:
    j = Journal(tmp_path)
    j.append([{"n": 1}])
    seg = j.segments()[0]
    before = (seg.read_bytes(), j.pending, j.bytes)

    def disk_error(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", disk_error)  # the disk fails; the journal code runs unchanged
    with pytest.raises(OSError, match="I/O error"):
        j.append([{"n": 2}, {"n": 3}])
    assert (seg.read_bytes(), j.pending, j.bytes) == before
    monkeypatch.undo()
    j.append([{"n": 4}])
    assert j.read(seg) == [{"n": 1}, {"n": 4}]
    j.close()
