"""API keys and roles.

A key looks like ``dik_<prefix>_<secret>``; it is shown once when created and only its SHA-256 hash is
stored (``api_keys.key_hash``). The prefix is stored too so that ``keys list`` can name a key without
revealing it. A key may expire (``expires_at``, checked on every request); ``rotate_key`` replaces a key
by a new one of the same name and role. A key verified against the database is honoured from the
service's ``KeyCache`` for ``INSPECT_KEY_CACHE_S`` seconds (also while the database is away).

Roles: ``camera`` may post inspections (and read the model), ``mes`` reads, ``operator`` reads and
reviews, ``admin`` may do everything. Routers are given the permission they need where they are mounted
(``app.api.include_routers`` with the dependencies of ``app.api.security``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ROLES, ApiKey
from app.vocabulary import utcnow

KEY_SCHEME = "dik"
_KEY_RE = re.compile(r"^dik_([0-9a-f]{8})_([A-Za-z0-9_-]{20,})$")


class Permission(StrEnum):
    ANY = "any"  # any valid key (e.g. GET /model)
    INGEST = "ingest"  # post inspections
    READ = "read"  # MES queries, images, stats
    REVIEW = "review"  # review defects
    ADMIN = "admin"  # keys, webhooks, settings


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "camera": frozenset({Permission.ANY, Permission.INGEST}),
    "mes": frozenset({Permission.ANY, Permission.READ}),
    "operator": frozenset({Permission.ANY, Permission.READ, Permission.REVIEW}),
    "admin": frozenset(Permission),
}
assert set(ROLE_PERMISSIONS) == set(ROLES)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (written into audit rows) and its role."""

    name: str
    role: str
    key_id: int | None = None
    expires_at: datetime | None = None

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or utcnow()) >= self.expires_at


# When INSPECT_AUTH_ENABLED=false (local demo only) every caller acts as this principal.
ANONYMOUS_ADMIN = Principal(name="anonymous", role="admin")

def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> tuple[str, str]:
    """A new random key and its prefix: ``(key, prefix)``."""
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    return f"{KEY_SCHEME}_{prefix}_{secret}", prefix


def looks_like_key(key: str) -> bool:
    return _KEY_RE.match(key) is not None


_LIFETIME_RE = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_LIFETIME_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1),
                   "w": timedelta(weeks=1)}


def parse_lifetime(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m`` or ``2w`` as a timedelta (ValueError otherwise)."""
    match = _LIFETIME_RE.match(text)
    if match is None or int(match[1]) == 0:
        raise ValueError(f"a key lifetime like 90d, 12h, 30m or 2w, not {text!r}")
    return int(match[1]) * _LIFETIME_UNITS[match[2]]


def as_utc(value: datetime | None) -> datetime | None:
    """An aware datetime (SQLite hands back naive UTC values)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def create_key(session: Session, name: str, role: str,
               lifetime: timedelta | None = None) -> tuple[ApiKey, str]:
    """Store a new key (hash only) and return the row and the plaintext key, which is never stored.
    ``lifetime``: the key expires that long after now (None: never)."""
    name = name.strip()
    if not name:
        raise ValueError("a key needs a non-empty name")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if lifetime is not None and lifetime <= timedelta(0):
        raise ValueError("a key lifetime must be positive")
    key, prefix = generate_key()
    now = utcnow()
    row = ApiKey(name=name, role=role, prefix=prefix, key_hash=hash_key(key), created_at=now,
                 expires_at=None if lifetime is None else now + lifetime)
    session.add(row)
    session.flush()
    return row, key


def rotate_key(session: Session, old: ApiKey, lifetime: timedelta | None = None) -> tuple[ApiKey, str]:
    """Replace ``old`` by a new key of the same name and role and revoke ``old``; the caller commits.
    ``lifetime`` None: the new key lives as long as the old one was given (or never expires, like it)."""
    if old.revoked_at is not None:
        raise ValueError(f"key {old.id} ({old.prefix}) is revoked; create a new one instead")
    expires, created = as_utc(old.expires_at), as_utc(old.created_at)
    if lifetime is None and expires is not None and created is not None:
        lifetime = expires - created
    row, key = create_key(session, old.name, old.role, lifetime)
    revoke_key(session, old)
    return row, key


def lookup_key(session: Session, presented: str) -> ApiKey | None:
    """The key row matching ``presented`` (expired ones too: ``Principal.expired`` says so), or None
    (unknown, malformed or revoked)."""
    if not looks_like_key(presented):
        return None
    digest = hash_key(presented)
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    # The lookup is by hash; compare again in constant time for good measure.
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        return None
    return row


def authenticate(session: Session, presented: str, now: datetime | None = None) -> Principal | None:
    """The principal of an active key (it may have expired: check ``expired()``), or None. ``now``: the
    time of the request (default the clock's)."""
    row = lookup_key(session, presented)
    if row is None:
        return None
    now = utcnow() if now is None else now
    last = as_utc(row.last_used_at)
    # Write last_used_at at most once a minute, so reads do not turn every request into a write.
    if last is None or (now - last).total_seconds() > 60:
        row.last_used_at = now
        session.commit()
    return Principal(name=row.name, role=row.role, key_id=row.id, expires_at=as_utc(row.expires_at))


class KeyCache:
    """Keys verified against the database, by hash, honoured for ``ttl_s`` seconds without asking it
    again (so requests go on while the database is away, and a revocation made elsewhere is seen
    within ``ttl_s``). Expiry is checked by the caller on every request; ``forget`` drops a key
    revoked by this process at once. Bounded: the oldest entries leave beyond ``max_entries``."""

    def __init__(self, ttl_s: float, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, digest: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if self._clock() - entry[0] >= self.ttl_s:
                del self._entries[digest]
                return None
            return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._entries[digest] = (self._clock(), principal)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, key_id: int) -> None:
        with self._lock:
            for digest in [d for d, (_, p) in self._entries.items() if p.key_id == key_id]:
                del self._entries[digest]


def list_keys(session: Session, include_revoked: bool = False) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        stmt = stmt.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(stmt))


def find_keys(session: Session, ref: str) -> list[ApiKey]:
    """Keys matching ``ref``: a numeric id, a prefix, a full key, or a name."""
    ref = ref.strip()
    if looks_like_key(ref):
        return list(session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(ref))))
    if ref.isdigit():
        row = session.get(ApiKey, int(ref))
        if row is not None:
            return [row]
    by_prefix = list(session.scalars(select(ApiKey).where(ApiKey.prefix == ref)))
    if by_prefix:
        return by_prefix
    return list(session.scalars(select(ApiKey).where(ApiKey.name == ref)))


def revoke_key(session: Session, row: ApiKey) -> bool:
    """Revoke ``row``; False if it was already revoked."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.flush()
    return True


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The presented key: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


DEMO_KEY_NAME = "demo-operator"


def ensure_demo_key(session: Session, key_file: Path | str) -> str:
    """The demo operator key for ``serve --demo``: reuse the one saved in ``key_file`` while it is still
    active in the database, otherwise create a new one and save it there (mode 0600). Only for local demos:
    this is the one place a plaintext key is written to disk."""
    path = Path(key_file)
    if path.is_file():
        saved = path.read_text(encoding="utf-8").strip()
        row = lookup_key(session, saved)
        if row is not None and row.role == "operator":
            return saved
    _, key = create_key(session, DEMO_KEY_NAME, "operator")
    session.commit()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n", encoding="utf-8")
    path.chmod(0o600)
    return key


def announce_demo_key(database_url: str, data_dir: Path, url: str) -> str | None:
    """``serve --demo`` with auth on: print a ready operator key for the dashboard (created once, reused
    from ``data_dir/demo-operator.key`` afterwards). Returns the key, or None if the database is not ready."""
    import sys

    from sqlalchemy.exc import SQLAlchemyError

    from app.db.session import Database

    db = Database(database_url)
    try:
        with db.session() as session:
            key = ensure_demo_key(session, data_dir / "demo-operator.key")
    except SQLAlchemyError as exc:
        print(f"demo key: cannot create one ({str(exc).splitlines()[0]}); run `defect-inspect db upgrade` "
              "or `defect-inspect keys create --role operator --name demo`", file=sys.stderr)
        return None
    finally:
        db.dispose()
    print(f"\n  Dashboard: {url}\n  Demo operator API key (paste it into the dashboard): {key}\n", flush=True)
    return key
