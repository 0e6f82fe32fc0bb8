"""API keys and roles at the function level: key format, lookup, last-use throttling, search, revocation
and headers (cases found by mutation testing of app/auth.py)."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.orm import Session

from app import auth
from app.auth import Permission, Principal
from app.db.session import Database


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    db = Database(database_url)
    try:
        with db.session() as s:
            yield s
    finally:
        db.dispose()


def test_roles_grant_exactly_their_permissions() -> None:
    granted = {role: {p for p in Permission if Principal("k", role).can(p)}
               for role in ("camera", "mes", "operator", "admin", "nobody")}
    assert granted == {
        "camera": {Permission.ANY, Permission.INGEST},
        "mes": {Permission.ANY, Permission.READ},
        "operator": {Permission.ANY, Permission.READ, Permission.REVIEW},
        "admin": set(Permission),
        "nobody": set(),
    }
    assert (auth.ANONYMOUS_ADMIN.name, auth.ANONYMOUS_ADMIN.role) == ("anonymous", "admin")


def test_a_generated_key_has_the_documented_form_and_prefix() -> None:
    key, prefix = auth.generate_key()
    scheme, key_prefix, secret = key.split("_", 2)
    assert (scheme, key_prefix) == ("dik", prefix)
    assert len(prefix) == 8 and int(prefix, 16) >= 0
    assert len(secret) == 43  # 32 random bytes, URL-safe base64 without padding
    assert auth.looks_like_key(key)
    assert auth.generate_key()[0] != key
    assert auth.hash_key(key) == hashlib.sha256(key.encode()).hexdigest()


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("dik_0123abcd_" + "A" * 20, True),
        ("dik_0123abcd_" + "a-_9" * 5, True),
        ("dik_0123abcd_" + "A" * 19, False),
        ("dik_0123ABCD_" + "A" * 20, False),
        ("dik_0123abc_" + "A" * 20, False),
        ("dix_0123abcd_" + "A" * 20, False),
        ("xdik_0123abcd_" + "A" * 20, False),
        ("dik_0123abcd_" + "A" * 20 + "!", False),
    ],
)
def test_looks_like_key(key: str, ok: bool) -> None:
    assert auth.looks_like_key(key) is ok


def test_create_key_stores_the_hash_and_a_clean_name(session: Session) -> None:
    row, key = auth.create_key(session, "  line 3 camera ", "camera")
    assert (row.name, row.role, row.key_hash) == ("line 3 camera", "camera", auth.hash_key(key))
    assert key.startswith(f"dik_{row.prefix}_")
    assert row.id is not None and row.revoked_at is None and row.last_used_at is None
    assert abs(row.created_at - datetime.now(UTC)) < timedelta(minutes=1)  # aware: a naive one raises


def test_create_key_refuses_a_blank_name_or_an_unknown_role(session: Session) -> None:
    with pytest.raises(ValueError, match="^a key needs a non-empty name$"):
        auth.create_key(session, "   ", "camera")
    unknown = r"^unknown role 'root'; expected one of camera, mes, operator, admin$"
    with pytest.raises(ValueError, match=unknown):
        auth.create_key(session, "x", "root")


def test_lookup_finds_active_keys_only(session: Session) -> None:
    row, key = auth.create_key(session, "a", "mes")
    assert auth.lookup_key(session, key) is row
    assert auth.lookup_key(session, key + "x") is None
    assert auth.lookup_key(session, key[:-1] + ("B" if key[-1] != "B" else "C")) is None
    assert auth.lookup_key(session, "not a key") is None
    assert auth.revoke_key(session, row) is True
    assert abs(row.revoked_at - datetime.now(UTC)) < timedelta(minutes=1)  # aware: a naive one raises
    assert auth.lookup_key(session, key) is None
    assert auth.revoke_key(session, row) is False


def test_authenticate_writes_last_use_at_most_once_a_minute(session: Session) -> None:
    row, key = auth.create_key(session, "op", "operator")
    session.commit()
    principal = auth.authenticate(session, key)
    assert principal == Principal(name="op", role="operator", key_id=row.id)
    first = row.last_used_at
    assert first is not None
    assert auth.authenticate(session, key) is not None
    assert row.last_used_at == first  # within the minute: not written again
    row.last_used_at = datetime.now(UTC) - timedelta(seconds=59)
    session.commit()
    auth.authenticate(session, key)
    assert row.last_used_at.replace(tzinfo=UTC) < datetime.now(UTC) - timedelta(seconds=58)
    row.last_used_at = datetime.now(UTC) - timedelta(seconds=60.5)  # over a minute: written
    session.commit()
    auth.authenticate(session, key)
    assert row.last_used_at.replace(tzinfo=UTC) > datetime.now(UTC) - timedelta(seconds=5)
    row.last_used_at = (datetime.now(UTC) - timedelta(seconds=62)).replace(tzinfo=None)  # naive = UTC
    session.commit()
    auth.authenticate(session, key)
    assert row.last_used_at.replace(tzinfo=UTC) > datetime.now(UTC) - timedelta(seconds=5)
    assert auth.authenticate(session, "dik_0123abcd_" + "A" * 20) is None


def test_last_use_is_written_only_once_more_than_a_minute_has_passed(session: Session) -> None:
    row, key = auth.create_key(session, "op", "operator")
    session.commit()
    start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    auth.authenticate(session, key, now=start)
    assert auth.as_utc(row.last_used_at) == start
    auth.authenticate(session, key, now=start + timedelta(seconds=60))  # exactly a minute: not yet
    assert auth.as_utc(row.last_used_at) == start
    later = start + timedelta(seconds=60, microseconds=1)
    auth.authenticate(session, key, now=later)
    assert auth.as_utc(row.last_used_at) == later


def test_a_recent_naive_last_use_read_back_from_the_database_is_not_rewritten(database_url: str) -> None:
    db = Database(database_url)
    try:
        with db.session() as s:
            row, key = auth.create_key(s, "op", "operator")
            row.last_used_at = (datetime.now(UTC) - timedelta(seconds=10)).replace(tzinfo=None)
            s.commit()
        with db.session() as s:
            stored = auth.lookup_key(s, key).last_used_at
            auth.authenticate(s, key)
            assert auth.lookup_key(s, key).last_used_at == stored
    finally:
        db.dispose()


def test_list_keys_hides_revoked_keys_unless_asked(session: Session) -> None:
    a, _ = auth.create_key(session, "a", "mes")
    b, _ = auth.create_key(session, "b", "mes")
    auth.revoke_key(session, a)
    assert [r.name for r in auth.list_keys(session)] == ["b"]
    assert [r.name for r in auth.list_keys(session, include_revoked=True)] == ["a", "b"]


def test_find_keys_by_full_key_id_prefix_or_name(session: Session) -> None:
    a, key_a = auth.create_key(session, "alpha", "mes")
    b, _ = auth.create_key(session, "beta", "mes")
    named_like_id, _ = auth.create_key(session, "99", "mes")
    assert auth.find_keys(session, f" {key_a} ") == [a]
    assert auth.find_keys(session, str(b.id)) == [b]
    assert auth.find_keys(session, b.prefix) == [b]
    assert auth.find_keys(session, " beta ") == [b]
    assert auth.find_keys(session, "99") == [named_like_id]  # no id 99: falls through to the name
    assert auth.find_keys(session, "dik_0123abcd_" + "A" * 20) == []
    assert auth.find_keys(session, "gamma") == []


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "key"),
    [
        (None, " k1 ", "k1"),
        ("Bearer k2", "k1", "k1"),
        ("Bearer  k2 ", None, "k2"),
        ("bEaReR k2", "", "k2"),
        ("Basic k2", None, None),
        ("Bearer ", None, None),
        ("Bearer", None, None),
        ("Bearerk2", None, None),
        (None, None, None),
        ("", "", None),
    ],
)
def test_key_from_headers(authorization: str | None, x_api_key: str | None, key: str | None) -> None:
    assert auth.key_from_headers(authorization, x_api_key) == key


def test_demo_key_is_saved_private_and_replaced_when_not_an_active_operator_key(session: Session, tmp_path
                                                                               ) -> None:
    path = tmp_path / "sub" / "deeper" / "demo.key"
    key = auth.ensure_demo_key(session, path)
    assert path.read_text(encoding="utf-8") == key + "\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert auth.lookup_key(session, key).name == "demo-operator"
    assert auth.ensure_demo_key(session, str(path)) == key
    _, mes_key = auth.create_key(session, "m", "mes")
    path.write_text(mes_key, encoding="utf-8")
    replaced = auth.ensure_demo_key(session, path)
    assert replaced != mes_key and auth.lookup_key(session, replaced).role == "operator"


def test_announce_demo_key_explains_an_unmigrated_database(empty_database_url: str, tmp_path, capsys) -> None:
    assert auth.announce_demo_key(empty_database_url, tmp_path, "http://x/") is None
    err = capsys.readouterr().err
    reason = re.match(r"demo key: cannot create one \((.*)\); run", err)
    assert reason and ("no such table" in reason[1] or "does not exist" in reason[1]), err
    assert ("run `defect-inspect db upgrade` or `defect-inspect keys create --role operator --name demo`"
            in err)


def test_announce_demo_key_prints_the_dashboard_and_the_key(database_url: str, tmp_path, capsys) -> None:
    key = auth.announce_demo_key(database_url, tmp_path, "http://x/")
    out = capsys.readouterr().out
    assert out == ("\n  Dashboard: http://x/\n"
                   f"  Demo operator API key (paste it into the dashboard): {key}\n\n")
    assert (tmp_path / "demo-operator.key").read_text(encoding="utf-8") == f"{key}\n"


def test_the_announced_key_is_flushed_at_once(database_url: str, tmp_path, monkeypatch) -> None:
    # a server's log is a pipe: the key must reach it now, not when the buffer fills
    sink = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(sink, encoding="utf-8"))
    key = auth.announce_demo_key(database_url, tmp_path, "http://x/")
    assert key is not None and key.encode() in sink.getvalue()


# -- expiry, lifetimes and rotation ------------------------------------------------------------------

def test_a_principal_expires_exactly_at_its_expiry() -> None:
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    principal = Principal("k", "mes", expires_at=at)
    assert principal.expired(at - timedelta(microseconds=1)) is False
    assert principal.expired(at) is True
    assert principal.expired(at + timedelta(days=1)) is True
    assert Principal("k", "mes").expired(at) is False  # no expiry: never
    assert Principal("k", "mes", expires_at=datetime.now(UTC) - timedelta(seconds=1)).expired() is True
    assert Principal("k", "mes", expires_at=datetime.now(UTC) + timedelta(hours=1)).expired() is False


@pytest.mark.parametrize(
    ("text", "lifetime"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
        ("1m", timedelta(minutes=1)),
        (" 7 d ", timedelta(days=7)),
        ("999999m", timedelta(minutes=999999)),
        ("007h", timedelta(hours=7)),
    ],
)
def test_parse_lifetime_reads_each_unit(text: str, lifetime: timedelta) -> None:
    assert auth.parse_lifetime(text) == lifetime


@pytest.mark.parametrize("text", ["0d", "000h", "1000000m", "d", "90", "90s", "90D", "1.5d", "-1d", "9 0d",
                                  "90dd", "x90d", "", "  "])
def test_parse_lifetime_refuses_anything_else_and_says_what_it_wants(text: str) -> None:
    message = f"a key lifetime like 90d, 12h, 30m or 2w, not {text!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        auth.parse_lifetime(text)


def test_a_key_with_a_lifetime_expires_exactly_that_long_after_its_creation(session: Session) -> None:
    row, key = auth.create_key(session, "temp", "camera", timedelta(hours=12))
    assert row.expires_at - row.created_at == timedelta(hours=12)
    assert abs(row.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    forever, _ = auth.create_key(session, "forever", "camera")
    assert forever.expires_at is None
    session.commit()
    principal = auth.authenticate(session, key)
    assert principal.expires_at == auth.as_utc(row.expires_at)
    assert principal.expires_at.tzinfo is not None
    assert not principal.expired() and principal.expired(principal.expires_at)


@pytest.mark.parametrize("lifetime", [timedelta(0), timedelta(seconds=-1)])
def test_a_key_lifetime_must_be_positive(session: Session, lifetime: timedelta) -> None:
    with pytest.raises(ValueError, match="^a key lifetime must be positive$"):
        auth.create_key(session, "x", "mes", lifetime)
    assert auth.list_keys(session, include_revoked=True) == []
    row, _ = auth.create_key(session, "x", "mes", timedelta(microseconds=1))
    assert row.expires_at - row.created_at == timedelta(microseconds=1)


def test_as_utc_marks_naive_values_utc_and_leaves_aware_ones() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert auth.as_utc(naive) == naive.replace(tzinfo=UTC) and auth.as_utc(naive).tzinfo is UTC
    aware = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert auth.as_utc(aware) is aware
    assert auth.as_utc(None) is None


def test_rotation_gives_a_new_key_of_the_same_name_role_and_lifetime_and_revokes_the_old(
        database_url: str) -> None:
    db = Database(database_url)
    try:
        with db.session() as s:
            old, old_key = auth.create_key(s, "line 1", "operator", timedelta(days=30))
            s.commit()
            old_id = old.id
        with db.session() as s:  # read back: SQLite hands naive datetimes
            old = s.get(auth.ApiKey, old_id)
            new, new_key = auth.rotate_key(s, old)
            s.commit()
            assert (new.name, new.role) == ("line 1", "operator")
            assert new.id != old_id and new_key != old_key and new.prefix != old.prefix
            assert new.key_hash == auth.hash_key(new_key) and new_key.startswith(f"dik_{new.prefix}_")
            assert new.expires_at - new.created_at == timedelta(days=30)
            assert new.revoked_at is None and old.revoked_at is not None
        with db.session() as s:
            assert auth.lookup_key(s, old_key) is None
            assert auth.authenticate(s, old_key) is None
            principal = auth.authenticate(s, new_key)
            assert (principal.name, principal.role, principal.key_id) == ("line 1", "operator", new.id)
            assert [k.id for k in auth.list_keys(s)] == [new.id]
    finally:
        db.dispose()


def test_rotation_with_a_lifetime_uses_it_and_a_key_without_expiry_stays_without(session: Session) -> None:
    old, _ = auth.create_key(session, "a", "mes", timedelta(days=30))
    new, _ = auth.rotate_key(session, old, timedelta(hours=1))
    assert new.expires_at - new.created_at == timedelta(hours=1)
    forever, _ = auth.create_key(session, "b", "camera")
    rotated, _ = auth.rotate_key(session, forever)
    assert rotated.expires_at is None and (rotated.name, rotated.role) == ("b", "camera")
    limited, _ = auth.rotate_key(session, rotated, timedelta(days=2))
    assert limited.expires_at - limited.created_at == timedelta(days=2)


def test_a_revoked_key_cannot_be_rotated(session: Session) -> None:
    old, old_key = auth.create_key(session, "a", "mes")
    auth.revoke_key(session, old)
    message = f"key {old.id} ({old.prefix}) is revoked; create a new one instead"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        auth.rotate_key(session, old)
    assert [k.id for k in auth.list_keys(session, include_revoked=True)] == [old.id]


# -- the key cache ----------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_cached_key_is_honoured_until_exactly_its_ttl() -> None:
    clock = Clock()
    cache = auth.KeyCache(30.0, clock=clock)
    principal = Principal("k", "mes", key_id=1)
    assert cache.get("d") is None
    cache.put("d", principal)
    clock.now += 29.999
    assert cache.get("d") is principal
    clock.now = 1000.0 + 30.0
    assert cache.get("d") is None
    clock.now = 1000.0  # gone, not only hidden: an earlier clock does not bring it back
    assert cache.get("d") is None
    cache.put("d", principal)  # a new put starts a new ttl
    clock.now = 1029.0
    assert cache.get("d") is principal


def test_a_one_second_cache_holds_a_key_for_that_second() -> None:
    clock = Clock()
    cache = auth.KeyCache(1.0, clock=clock)
    principal = Principal("k", "mes", key_id=1)
    cache.put("d", principal)
    clock.now += 0.5
    assert cache.get("d") is principal
    clock.now += 0.5
    assert cache.get("d") is None


@pytest.mark.parametrize("ttl", [0.0, -1.0])
def test_a_cache_without_ttl_keeps_nothing(ttl: float) -> None:
    clock = Clock()
    cache = auth.KeyCache(ttl, clock=clock)
    cache.put("d", Principal("k", "mes", key_id=1))
    clock.now -= 5  # even a clock that goes back finds nothing
    assert cache.get("d") is None


def test_the_cache_keeps_the_most_recent_entries_up_to_its_bound() -> None:
    clock = Clock()
    cache = auth.KeyCache(60.0, max_entries=2, clock=clock)
    a, b, c = (Principal(n, "mes", key_id=i) for i, n in enumerate("abc"))
    cache.put("a", a)
    cache.put("b", b)
    cache.put("a", a)  # put again: now the most recent
    cache.put("c", c)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (a, None, c)
    cache.put("b", b)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, b, c)
    assert (cache.ttl_s, cache.max_entries) == (60.0, 2)
    assert auth.KeyCache(1.0).max_entries == 4096


def test_the_cache_bound_is_met_exactly() -> None:
    cache = auth.KeyCache(60.0, max_entries=3, clock=Clock())
    principals = [Principal(str(i), "mes", key_id=i) for i in range(4)]
    for i, p in enumerate(principals[:3]):
        cache.put(str(i), p)
    assert [cache.get(str(i)) for i in range(3)] == principals[:3]
    cache.put("3", principals[3])
    assert [cache.get(str(i)) for i in range(4)] == [None, *principals[1:]]


def test_a_revocation_in_this_process_reaches_the_cache_at_once() -> None:
    clock = Clock()
    cache = auth.KeyCache(60.0, clock=clock)
    revoked, kept = Principal("r", "mes", key_id=7), Principal("k", "mes", key_id=8)
    cache.put("r1", revoked)
    cache.put("r2", revoked)  # the same key presented two ways: both entries go
    cache.put("k", kept)
    cache.forget(7)
    assert (cache.get("r1"), cache.get("r2"), cache.get("k")) == (None, None, kept)
    cache.forget(99)
    assert cache.get("k") is kept


def test_the_default_cache_clock_is_monotonic_time() -> None:
    cache = auth.KeyCache(3600.0)
    principal = Principal("k", "mes", key_id=1)
    cache.put("d", principal)
    assert cache.get("d") is principal
