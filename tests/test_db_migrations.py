"""Alembic migrations create exactly app/db/models.py, on SQLite and PostgreSQL, and go back down."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from app.cli import main as cli_main
from app.db import migrate
from app.db.models import Base
from app.db.session import Database, create_db_engine


def schema_diff(url: str) -> list:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            opts = {"compare_type": True, "compare_server_default": True}
            ctx = MigrationContext.configure(conn, opts=opts)
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_single_head_and_linear_history():
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions())
    assert revisions[-1].revision == "0001" and revisions[-1].down_revision is None


def test_upgrade_matches_models_then_downgrade(empty_database_url):
    url = empty_database_url
    assert schema_diff(url) != []  # sanity: an empty database differs from the models
    migrate.upgrade(url)
    assert migrate.current_revision(url) == migrate.head_revision(url)
    assert schema_diff(url) == []
    assert set(Base.metadata.tables) <= table_names(url)

    migrate.downgrade(url, "base")
    assert migrate.current_revision(url) is None
    assert table_names(url) - {"alembic_version"} == set()

    migrate.upgrade(url)  # and back up again
    assert schema_diff(url) == []


def test_cli_db_upgrade_and_current(empty_database_url, capsys):
    assert cli_main(["db", "--database-url", empty_database_url, "upgrade"]) == 0
    assert cli_main(["db", "--url", empty_database_url, "current"]) == 0
    out = capsys.readouterr().out
    head = migrate.head_revision(empty_database_url)
    assert f"database at {head}" in out and "up to date" in out


def test_cli_db_unreachable_is_a_clear_error(capsys):
    assert cli_main(["db", "--url", "postgresql+psycopg://nobody@127.0.0.1:1/none", "upgrade"]) == 2
    assert "cannot reach the database" in capsys.readouterr().err


def test_sqlite_connection_pragmas(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
        assert conn.execute(text("PRAGMA cache_size")).scalar() == -512  # KiB per connection, not 2 MB
    assert db.ping() is None
    db.dispose()


def test_db_commands_other_than_upgrade_name_a_missing_database_file(tmp_path, monkeypatch, capsys):
    """From a directory without the database: `db current` says where it looked in one line and leaves
    no ./data; `db upgrade` creates it there and says where."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    assert cli_main(["db", "current"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"no database file at {elsewhere / 'data' / 'inspect.db'}" in err
    assert list(elsewhere.iterdir()) == []
    assert cli_main(["db", "upgrade"]) == 0
    assert str(elsewhere / "data" / "inspect.db") in capsys.readouterr().out
    assert cli_main(["db", "current"]) == 0
