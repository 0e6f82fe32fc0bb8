"""`serve` and `ingest` refuse a database whose schema is not this version's, with one line saying what
to run, before anything starts (app/db/migrate.py ``check_schema``); an unreachable database is left to
the service's journal and breaker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sqlalchemy import make_url, text

from app.cli import main as cli_main
from app.db.migrate import check_schema, head_revision, upgrade
from app.db.session import create_db_engine
from app.errors import NotFound, SchemaMismatch


def _set_revision(url: str, revision: str) -> None:
    engine = create_db_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


def _refused(url: str) -> str:
    with pytest.raises(SchemaMismatch) as caught:
        check_schema(url)
    return str(caught.value)


def test_a_missing_sqlite_file_is_named_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "inspect.db"
    with pytest.raises(NotFound) as caught:  # require_existing_database, as every such command says it
        check_schema(f"sqlite:///{path}")
    message = str(caught.value)
    assert str(path) in message and "defect-inspect db upgrade" in message
    assert not path.exists() and not path.parent.exists()


def test_an_empty_database_needs_the_migrations(empty_database_url: str) -> None:
    if empty_database_url.startswith("sqlite"):
        create_db_engine(empty_database_url).connect().close()  # the file exists, without tables
    message = _refused(empty_database_url)
    assert "no schema yet" in message and head_revision() in message and "db upgrade" in message


def test_an_older_revision_names_both_and_a_newer_one_says_so(empty_database_url: str) -> None:
    upgrade(empty_database_url, "0006")
    message = _refused(empty_database_url)
    assert "at schema revision 0006" in message and f"needs {head_revision()}" in message
    assert "db upgrade" in message
    password = make_url(empty_database_url).password
    assert password is None or str(password) not in message

    upgrade(empty_database_url)
    check_schema(empty_database_url)  # at head: nothing to say

    _set_revision(empty_database_url, "0099")  # as a later version would leave it
    message = _refused(empty_database_url)
    assert "0099" in message and "does not know" in message and "db upgrade" not in message


def test_an_unreachable_database_is_left_to_the_service() -> None:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    check_schema(f"postgresql+psycopg://inspect:s3cret@127.0.0.1:{port}/inspect")  # no SchemaMismatch


@pytest.mark.parametrize("command", ["serve", "ingest"])
def test_serve_and_ingest_stop_with_one_line(command: str, empty_database_url: str, tiny_model_path: Path,
                                             tmp_path: Path, monkeypatch, capsys) -> None:
    upgrade(empty_database_url, "0006")
    cams = tmp_path / "cameras.yaml"
    cams.write_text(f"cameras:\n  - id: a\n    source: \"{tmp_path / 'frames'}\"\n")
    (tmp_path / "frames").mkdir()
    monkeypatch.setenv("INSPECT_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("INSPECT_MODEL_PATH", str(tiny_model_path))
    monkeypatch.setenv("INSPECT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INSPECT_CAMERAS_FILE", str(cams))
    argv = ["serve", "--port", "8127"] if command == "serve" else ["ingest", "--no-http"]
    capsys.readouterr()
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "schema revision 0006" in err and "db upgrade" in err, err
    assert captured.out == ""
