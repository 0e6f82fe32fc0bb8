"""`defect-inspect keys create|list|revoke`: manage API keys. A new key is printed once (on stdout, alone,
so it can be captured by a script); only its SHA-256 hash is stored."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.db.models import ROLES
from app.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="create, list and revoke API keys",
                                   description="Manage API keys (roles: camera, mes, operator, admin).")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: INSPECT_DATABASE_URL)")
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True, help="who uses the key (written into audit rows)")
    create.set_defaults(func=_create)

    lst = sub.add_parser("list", help="list keys (prefixes only, never the keys)")
    lst.add_argument("--all", action="store_true", help="include revoked keys")
    lst.set_defaults(func=_list)

    revoke = sub.add_parser("revoke", help="revoke a key by id, prefix, name or the key itself")
    revoke.add_argument("ref")
    revoke.set_defaults(func=_revoke)


@contextmanager
def _session(args: argparse.Namespace) -> Iterator[Session]:
    from app.db.session import Database, require_existing_database
    from app.settings import load_settings

    url = args.database_url or load_settings().database_url  # SettingsError: a UserError
    require_existing_database(url)  # NotFound: names the missing SQLite file
    db = Database(url)
    try:
        with db.session() as session:
            yield session
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"database {db.url.render_as_string(hide_password=True)}: {first} "
                       "(run `defect-inspect db upgrade` first?)") from None
    finally:
        db.dispose()


def _create(args: argparse.Namespace) -> int:
    from app.auth import create_key

    with _session(args) as session:
        try:
            row, key = create_key(session, args.name, args.role)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        session.commit()
        print(f"created key id={row.id} name={row.name!r} role={row.role} prefix={row.prefix}; "
              "it is shown once, store it now:", file=sys.stderr)
        print(key)
    return 0


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)


def _list(args: argparse.Namespace) -> int:
    from app.auth import list_keys

    with _session(args) as session:
        rows = list_keys(session, include_revoked=args.all)
        row = "{:>4}  {:<8}  {:<8}  {:<24}  {:<19}  {:<19}  {}"
        print(row.format("ID", "PREFIX", "ROLE", "NAME", "CREATED", "LAST USED", "REVOKED"))
        for r in rows:
            print(row.format(r.id, r.prefix, r.role, r.name[:24], _fmt(r.created_at)[:19],
                             _fmt(r.last_used_at)[:19], _fmt(r.revoked_at)[:19]))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from app.auth import find_keys, revoke_key

    with _session(args) as session:
        rows = find_keys(session, args.ref)
        if not rows:
            raise UserError(f"no key matches {args.ref!r} (give an id, a prefix, a name or the key)")
        active = [r for r in rows if r.revoked_at is None]
        if len(active) > 1:
            ids = ", ".join(f"{r.id} ({r.prefix})" for r in active)
            raise UserError(f"{args.ref!r} matches several keys: {ids}; revoke by id")
        if not active:
            print(f"key {rows[0].id} ({rows[0].prefix}) was already revoked")
            return 0
        revoke_key(session, active[0])
        session.commit()
        print(f"revoked key id={active[0].id} name={active[0].name!r} prefix={active[0].prefix}")
    return 0
