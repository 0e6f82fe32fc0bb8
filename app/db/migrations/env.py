"""Alembic environment: target metadata is app.db.models; the URL comes from the config (set by
app.db.migrate) or INSPECT_DATABASE_URL. SQLite runs in batch mode so ALTERs work."""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text

from app.db.models import Base
from app.db.session import create_db_engine

config = context.config
if config.config_file_name is not None and not logging.getLogger().handlers:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from app.settings import get_settings

    return get_settings().database_url


# Two instances starting together (containers, a Kubernetes rollout) may both run `db upgrade`: on
# PostgreSQL the migration transaction first takes this advisory lock, so the second one waits, then
# finds the database at head and does nothing. The lock ends with the transaction.
MIGRATION_LOCK_KEY = 0x1D5EC7  # any fixed bigint shared by every instance of the service


def _lock(connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def _configure(**kwargs) -> None:
    context.configure(target_metadata=target_metadata, compare_type=True, **kwargs)


def run_offline() -> None:
    url = _url()
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"},
               render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        _configure(connection=conn, render_as_batch=conn.dialect.name == "sqlite")
        with context.begin_transaction():
            _lock(conn)
            context.run_migrations()
        return
    engine = create_db_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
            with context.begin_transaction():
                _lock(connection)
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
