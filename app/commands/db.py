"""`defect-inspect db upgrade|downgrade|current|revision`: Alembic migrations of the defect log."""

from __future__ import annotations

import argparse
import logging

from app.errors import UserError
from app.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("db", help="database migrations (Alembic)",
                              description="Migrate the database named by INSPECT_DATABASE_URL.")
    p.add_argument("--database-url", "--url", dest="url",
                   help="database URL (default: INSPECT_DATABASE_URL); the same option name as `keys`")
    sub = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = sub.add_parser("upgrade", help="migrate to a revision (default head)")
    up.add_argument("revision", nargs="?", default="head")
    down = sub.add_parser("downgrade", help="migrate down to a revision (e.g. base, -1)")
    down.add_argument("revision")
    sub.add_parser("current", help="print the current revision")
    sub.add_parser("heads", help="print the newest revision")
    rev = sub.add_parser("revision", help="write a new migration script")
    rev.add_argument("-m", "--message", required=True)
    rev.add_argument("--autogenerate", action="store_true", help="diff app/db/models.py against the database")
    p.set_defaults(func=run)


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return args.url
    return load_settings().database_url  # SettingsError: a UserError naming the variable


def run(args: argparse.Namespace) -> int:
    # alembic announces each of its plugins at INFO while it is imported: not news for an operator
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    from alembic import command
    from alembic.util import CommandError
    from sqlalchemy.exc import OperationalError

    from app.db import migrate
    from app.db.session import require_existing_database, sqlite_file

    url = _url(args)
    if args.db_command in ("current", "downgrade"):  # they read a database: name a missing file, create none
        require_existing_database(url)
    cfg = migrate.alembic_config(url)
    try:
        if args.db_command == "upgrade":
            command.upgrade(cfg, args.revision)
            path = sqlite_file(url)
            where = f" ({path.absolute()})" if path is not None else ""
            print(f"database at {migrate.current_revision(url)}{where}")
        elif args.db_command == "downgrade":
            command.downgrade(cfg, args.revision)
            print(f"database at {migrate.current_revision(url) or 'base'}")
        elif args.db_command == "current":
            current, head = migrate.current_revision(url), migrate.head_revision(url)
            print(f"{current or 'base'} (head: {head}{', up to date' if current == head else ''})")
        elif args.db_command == "heads":
            print(migrate.head_revision(url))
        elif args.db_command == "revision":
            command.revision(cfg, message=args.message, autogenerate=args.autogenerate)
    except CommandError as exc:
        raise UserError(str(exc)) from None
    except OperationalError as exc:
        raise UserError(f"cannot reach the database: {str(exc).splitlines()[0]}") from None
    return 0
