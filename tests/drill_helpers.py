"""What the drills share: a PostgreSQL server that can be stopped and started again (the cluster of
INSPECT_TEST_PG_BIN / INSPECT_TEST_PG_DATA, see .ci/run), a scratch database on it, and the real app
under uvicorn on a free loopback port."""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PG_ENV
from sqlalchemy.pool import NullPool

PG_BIN_ENV, PG_DATA_ENV = "INSPECT_TEST_PG_BIN", "INSPECT_TEST_PG_DATA"


@dataclass
class PostgresServer:
    """The test cluster: ``stop()`` and ``start()`` (with the options it was started with)."""

    base_url: str
    stop: Callable[[], None]
    start: Callable[[], None]
    is_down: Callable[[], bool]


def _as_postgres_user(cmd: str) -> None:
    argv = ["su", "postgres", "-c", cmd] if os.geteuid() == 0 else ["sh", "-c", cmd]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def postgres_server() -> PostgresServer:
    """The cluster the drills may stop; skips (with the reason) without the three variables."""
    base, pg_bin, pg_data = (os.environ.get(k) for k in (PG_ENV, PG_BIN_ENV, PG_DATA_ENV))
    if not (base and pg_bin and pg_data):
        pytest.skip(f"{PG_ENV}, {PG_BIN_ENV} and {PG_DATA_ENV} are needed (see .ci/run)")
    # restart with the options the server was started with (postmaster.opts: binary, then arguments)
    argv = shlex.split(Path(pg_data, "postmaster.opts").read_text())[1:]
    opts = [a for i, a in enumerate(argv) if a != "-D" and (i == 0 or argv[i - 1] != "-D")]
    ctl = f"{pg_bin}/pg_ctl -D {shlex.quote(pg_data)}"
    start_cmd = f"{ctl} -o {shlex.quote(shlex.join(opts))} -l {shlex.quote(pg_data)}/log -w start"
    state = {"down": False}

    def stop() -> None:
        _as_postgres_user(f"{ctl} -m fast -w stop")
        state["down"] = True

    def start() -> None:
        _as_postgres_user(start_cmd)
        state["down"] = False

    return PostgresServer(base, stop, start, lambda: state["down"])


@contextmanager
def scratch_database(server: PostgresServer) -> Iterator[str]:
    """A fresh, migrated database on ``server``, dropped afterwards (the server started if a test left
    it stopped)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from app.db.migrate import upgrade

    base = make_url(server.base_url)
    name = f"inspect_drill_{uuid.uuid4().hex[:10]}"

    def admin(sql: str) -> None:  # a new connection each time: the server restarts in between
        engine = create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(text(sql))
        finally:
            engine.dispose()

    admin(f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        if server.is_down():
            server.start()
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


