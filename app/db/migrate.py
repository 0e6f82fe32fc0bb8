"""Alembic, driven from code: ``alembic.ini`` at the repository root when present, the scripts in
``app/db/migrations`` always (found relative to this package, so an installed copy works too)."""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from app.db.session import create_db_engine, normalise_url, require_existing_database
from app.errors import SchemaMismatch

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
REPO_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


def alembic_config(database_url: str, *, stdout: io.TextIOBase | None = None) -> Config:
    ini = str(REPO_INI) if REPO_INI.is_file() else None
    cfg = Config(ini, stdout=stdout) if stdout is not None else Config(ini)
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is ConfigParser interpolation syntax: escape it in passwords.
    url = normalise_url(database_url).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def head_revision(database_url: str = "sqlite://") -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def current_revision_of(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def current_revision(database_url: str) -> str | None:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            return current_revision_of(conn)
    finally:
        engine.dispose()


UPGRADE_HINT = "run `defect-inspect db upgrade` with the same INSPECT_DATABASE_URL, then start again"


def check_schema(database_url: str) -> None:
    """Refuse to start on a database whose schema is not this version's head: ``SchemaMismatch``
    saying what to run (a missing SQLite file: ``NotFound``, and it is not created). A database that
    cannot be reached is left to the service (it journals and retries)."""
    require_existing_database(database_url)
    try:
        current = current_revision(database_url)
    except Exception:  # any driver error: unreachable now; the service's breaker takes it from here
        return
    where = normalise_url(database_url).render_as_string(hide_password=True)
    script = ScriptDirectory.from_config(alembic_config(database_url))
    head = script.get_current_head()
    if current == head:
        return
    if current is None:
        raise SchemaMismatch(f"the database {where} has no schema yet (this version needs revision {head}): "
                             f"{UPGRADE_HINT}")
    if current in {rev.revision for rev in script.walk_revisions()}:
        raise SchemaMismatch(f"the database {where} is at schema revision {current}, this version needs "
                             f"{head}: {UPGRADE_HINT}")
    raise SchemaMismatch(f"the database {where} is at schema revision {current}, which this version does not "
                         f"know (its newest is {head}; a newer version migrated it): run that version, or "
                         f"downgrade the database with it to {head}")
