"""`defect-inspect keys create|list|revoke|rotate`: manage API keys. A new key is printed once (on stdout,
alone, so it can be captured by a script); only its SHA-256 hash is stored. ``--expires 90d`` gives a key
an end; ``rotate`` replaces a key by a new one of the same name and role and revokes the old one.
A running service sees a revocation or an expiry within INSPECT_KEY_CACHE_S seconds."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.db.models import ROLES, ApiKey
from app.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="create, list, revoke and rotate API keys",
                                   description="Manage API keys (roles: camera, mes, operator, admin).")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: INSPECT_DATABASE_URL)")
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--name", required=True, help="who uses the key (written into audit rows)")
    create.add_argument("--expires", metavar="LIFETIME",
                        help="the key expires this long from now: 90d, 12h, 30m or 2w (default: never)")
    create.set_defaults(func=_create)

    lst = sub.add_parser("list", help="list keys (prefixes only, never the keys)")
    lst.add_argument("--all", action="store_true", help="include revoked keys")
    lst.set_defaults(func=_list)

    revoke = sub.add_parser("revoke", help="revoke a key by id, prefix, name or the key itself")
    revoke.add_argument("ref")
    revoke.set_defaults(func=_revoke)

    rotate = sub.add_parser("rotate", help="replace a key by a new one (same name and role), revoke the "
                                           "old one, print the new key once")
    rotate.add_argument("ref", help="the key's name, id, prefix or the key itself")
    rotate.add_argument("--expires", metavar="LIFETIME",
                        help="the new key's lifetime (default: as long as the old key was given)")
    rotate.set_defaults(func=_rotate)


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


def _lifetime(text: str | None) -> timedelta | None:
    from app.auth import parse_lifetime

    if text is None:
        return None
    try:
        return parse_lifetime(text)
    except ValueError as exc:
        raise UserError(f"--expires: {exc}") from None


def _announce(verb: str, row: ApiKey, key: str) -> None:
    """What was made on stderr; the key alone on stdout (a script captures it)."""
    expires = f" expires={_fmt(row.expires_at)[:19]}" if row.expires_at is not None else ""
    print(f"{verb} key id={row.id} name={row.name!r} role={row.role} prefix={row.prefix}{expires}; "
          "it is shown once, store it now:", file=sys.stderr)
    print(key)


def _create(args: argparse.Namespace) -> int:
    from app.auth import create_key

    lifetime = _lifetime(args.expires)
    with _session(args) as session:
        try:
            row, key = create_key(session, args.name, args.role, lifetime)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        session.commit()
        _announce("created", row, key)
    return 0


def _one_active(session: Session, ref: str, verb: str) -> ApiKey | None:
    """The one active key ``ref`` names; None when it names only revoked keys; UserError otherwise."""
    from app.auth import find_keys

    rows = find_keys(session, ref)
    if not rows:
        raise UserError(f"no key matches {ref!r} (give an id, a prefix, a name or the key)")
    active = [r for r in rows if r.revoked_at is None]
    if len(active) > 1:
        ids = ", ".join(f"{r.id} ({r.prefix})" for r in active)
        raise UserError(f"{ref!r} matches several keys: {ids}; {verb} by id")
    return active[0] if active else None


def _rotate(args: argparse.Namespace) -> int:
    from app.auth import rotate_key

    lifetime = _lifetime(args.expires)
    with _session(args) as session:
        old = _one_active(session, args.ref, "rotate")
        if old is None:
            raise UserError(f"{args.ref!r} names only revoked keys; create a new one with `keys create`")
        row, key = rotate_key(session, old, lifetime)
        session.commit()
        print(f"revoked key id={old.id} prefix={old.prefix}", file=sys.stderr)
        _announce("rotated: new", row, key)
    return 0


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)


def _list(args: argparse.Namespace) -> int:
    from app.auth import list_keys

    with _session(args) as session:
        rows = list_keys(session, include_revoked=args.all)
        row = "{:>4}  {:<8}  {:<8}  {:<24}  {:<19}  {:<19}  {:<19}  {}"
        print(row.format("ID", "PREFIX", "ROLE", "NAME", "CREATED", "LAST USED", "EXPIRES", "REVOKED"))
        for r in rows:
            print(row.format(r.id, r.prefix, r.role, r.name[:24], _fmt(r.created_at)[:19],
                             _fmt(r.last_used_at)[:19], _fmt(r.expires_at)[:19], _fmt(r.revoked_at)[:19]))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from app.auth import find_keys, revoke_key

    with _session(args) as session:
        row = _one_active(session, args.ref, "revoke")
        if row is None:
            first = find_keys(session, args.ref)[0]
            print(f"key {first.id} ({first.prefix}) was already revoked")
            return 0
        revoke_key(session, row)
        session.commit()
        print(f"revoked key id={row.id} name={row.name!r} prefix={row.prefix}")
    return 0
