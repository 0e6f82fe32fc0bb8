"""A SQLite connection of the service holds a bounded number of prepared statements: statement texts
that differ by their number of parameters (a batch insert, an ``IN`` lookup) do not each stay
prepared (app/db/session.py, ``SQLITE_CACHED_STATEMENTS``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from app.db.session import SQLITE_CACHED_STATEMENTS, Database

DISTINCT_STATEMENTS = 120  # fewer than Python's default cache of 128, many more than ours


def sqlite_memory_used() -> Callable[[], int]:
    """SQLite's ``sqlite3_memory_used`` of the library Python's sqlite3 module runs on; skips where that
    module does not use the shared library ctypes finds (a statically linked build)."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        pytest.skip("no shared SQLite library to read SQLite's memory counter from")
    library = ctypes.CDLL(name)
    library.sqlite3_libversion.restype = ctypes.c_char_p
    if library.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        pytest.skip("Python's sqlite3 does not run on the shared SQLite library")
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return library.sqlite3_memory_used


def held_after_distinct_statements(execute: Callable[[str, tuple], object],
                                   memory_used: Callable[[], int]) -> int:
    """Bytes SQLite still holds after running ``DISTINCT_STATEMENTS`` lookups of 1, 2, 3, ... parameters."""
    before = memory_used()
    for n in range(1, DISTINCT_STATEMENTS + 1):
        execute(f"SELECT count(*) FROM t WHERE a IN ({', '.join('?' * n)})", tuple(range(n)))
    return memory_used() - before


def test_statements_that_differ_by_their_parameter_count_do_not_all_stay_prepared(tmp_path: Path) -> None:
    memory_used = sqlite_memory_used()
    assert SQLITE_CACHED_STATEMENTS < DISTINCT_STATEMENTS

    plain = sqlite3.connect(tmp_path / "plain.db")  # Python's default: 128 statements kept
    plain.execute("CREATE TABLE t (a INTEGER)")
    held_by_default = held_after_distinct_statements(
        lambda sql, params: plain.execute(sql, params).fetchall(), memory_used)

    db = Database(f"sqlite:///{tmp_path / 'service.db'}")
    with db.engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (a INTEGER)")
        held = held_after_distinct_statements(lambda sql, params: conn.exec_driver_sql(sql, params).all(),
                                              memory_used)
        # the cache keeps the latest SQLITE_CACHED_STATEMENTS of them, the largest ones
        assert held < held_by_default * 0.6, (held, held_by_default)
    plain.close()
    db.dispose()
    assert held_by_default > 1 << 20  # the statements are big enough for the bound to matter
