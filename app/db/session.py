"""Database engine and sessions. SQLite gets WAL, synchronous=NORMAL, foreign keys, a busy timeout
and bounded page and statement caches on every connection; PostgreSQL is reached through psycopg 3
(``postgresql+psycopg://``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from app.db.breaker import CircuitBreaker, is_outage
from app.errors import NotFound

SQLITE_BUSY_TIMEOUT_MS = 5000
# Each SQLite connection keeps the pages it read in its own cache, up to 2 MB by SQLite's default, and
# the resident size rose as the connections' caches filled. The log is written at its end and pruned
# at its start: a small cache holds those pages, the operating system's file cache the rest.
SQLITE_PAGE_CACHE_KIB = 512
# Python's sqlite3 keeps up to 128 prepared statements per connection. The pruner's update of an id
# list (one statement text per batch size, up to 96 KiB prepared) and the writer's batch insert and
# frame_uid lookup (one text per row count) kept every size ever met prepared, and the heap crept up
# for hours as rarer sizes came along. The statements a running service repeats are fewer than this;
# the rest are prepared again. Measured in docs/reliability.md, "SQLite's caches bounded".
SQLITE_CACHED_STATEMENTS = 32
POSTGRES_CONNECT_TIMEOUT_S = 5


def normalise_url(url: str | URL) -> URL:
    """``postgresql://`` and ``postgres://`` -> ``postgresql+psycopg://`` (the driver we ship)."""
    u = make_url(url) if isinstance(url, str) else url
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute(f"PRAGMA cache_size=-{SQLITE_PAGE_CACHE_KIB}")  # negative: KiB, not pages
    finally:
        cur.close()


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite URL (a relative path is from the working directory); None for an
    in-memory or ``file:`` SQLite database and for other backends."""
    u = normalise_url(url)
    database = u.database or ""
    if u.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def require_existing_database(url: str | URL) -> None:
    """For commands that use a database but do not create one: a missing SQLite file is a
    ``NotFound`` naming the absolute path, not a new empty file (and folder) where the command ran."""
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise NotFound(f"no database file at {path.absolute()} ({normalise_url(url)}; a relative path is "
                       "from the working directory): run `defect-inspect db upgrade` there first, or set "
                       "INSPECT_DATABASE_URL to the service's database")


def create_db_engine(url: str | URL, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine with our connection settings; a SQLite file's folder is created."""
    u = normalise_url(url)
    if u.get_backend_name() == "sqlite":
        path = sqlite_file(u)
        if path is not None:
            # best effort: an unwritable folder shows up as "database unreachable" in /readyz
            with contextlib.suppress(OSError):
                path.parent.mkdir(parents=True, exist_ok=True)
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("cached_statements", SQLITE_CACHED_STATEMENTS)
        engine = create_engine(u, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # a database host that does not answer is given up after this, not after the OS's minutes
    kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", POSTGRES_CONNECT_TIMEOUT_S)
    return create_engine(u, **kwargs)


class Database:
    """One engine plus its session factory: ``with db.session() as s: ...``, and the circuit breaker
    (app.db.breaker) that a session ending in an outage error opens."""

    def __init__(self, url: str | URL, probe_s: float = 1.0, **engine_kwargs: Any) -> None:
        self.url = normalise_url(url)
        self.engine = create_db_engine(self.url, **engine_kwargs)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.breaker = CircuitBreaker(self.ping, probe_s)

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that rolls back on error and is always closed (commit is the caller's)."""
        session = self.sessionmaker()
        try:
            yield session
        except BaseException as exc:
            if is_outage(exc):
                self.breaker.trip(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            with contextlib.suppress(Exception):  # a lost connection cannot roll back; closing is enough
                session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> str | None:
        """None when the database answers ``SELECT 1``, else the reason."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means "not reachable"
            first = str(exc).splitlines()[0] if str(exc) else ""
            return f"database unreachable: {type(exc).__name__}: {first}"
        return None

    def dispose(self) -> None:
        self.engine.dispose()
