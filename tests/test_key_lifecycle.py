"""Keys for people: expiry (`keys create --expires`), rotation (`keys rotate`), the key cache that lets
verified keys work while the database is away and the bound on how late it sees a revocation or an
expiry; the key's name on every review audit row. Also the database circuit breaker's states."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from mes_helpers import assert_problem, seed_database
from sqlalchemy import select, update

from app.auth import KeyCache, Principal, parse_lifetime
from app.cli import main
from app.db.breaker import CircuitBreaker
from app.db.models import ApiKey, Defect, DefectReview
from app.db.session import Database
from app.vocabulary import utcnow

KEY_RE = re.compile(r"^dik_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}$")


def wait_until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.05)


def keys_cli(database_url: str, *args: str) -> int:
    return main(["keys", "--database-url", database_url, *args])


def rows(database_url: str) -> list[ApiKey]:
    db = Database(database_url)
    try:
        with db.session() as session:
            found = list(session.scalars(select(ApiKey).order_by(ApiKey.id)))
            session.expunge_all()
            return found
    finally:
        db.dispose()


def new_key(database_url: str, capsys, *args: str) -> str:
    assert keys_cli(database_url, *args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and KEY_RE.match(out[0]), out  # the key alone on stdout
    return out[0]


def lifetime(row: ApiKey) -> timedelta:
    assert row.expires_at is not None
    return row.expires_at.replace(tzinfo=None) - row.created_at.replace(tzinfo=None)


@pytest.fixture
def app_with(app_settings):
    """``app_with(**settings)``: the real app with auth on, as a TestClient context."""
    def make(**overrides):
        from app.main import create_app

        return TestClient(create_app(app_settings.model_copy(update={"auth_enabled": True, **overrides})))
    return make


# -- CLI ------------------------------------------------------------------------------------------

def test_create_with_expiry_and_list_shows_it(database_url, capsys):
    new_key(database_url, capsys, "create", "--role", "mes", "--name", "mes-anna", "--expires", "90d")
    [row] = rows(database_url)
    assert lifetime(row) == timedelta(days=90)
    assert keys_cli(database_url, "list") == 0
    listing = capsys.readouterr().out
    assert "EXPIRES" in listing and str(row.expires_at)[:10] in listing
    assert keys_cli(database_url, "create", "--role", "mes", "--name", "x", "--expires", "90x") == 2
    assert "--expires" in capsys.readouterr().err and len(rows(database_url)) == 1


@pytest.mark.parametrize(("text", "expected"), [("90d", timedelta(days=90)), ("12h", timedelta(hours=12)),
                                                ("30m", timedelta(minutes=30)), ("2w", timedelta(weeks=2))])
def test_lifetimes(text, expected):
    assert parse_lifetime(text) == expected


@pytest.mark.parametrize("text", ["", "0d", "90", "d", "-1d", "1y", "9999999d"])
def test_bad_lifetimes(text):
    with pytest.raises(ValueError, match="lifetime"):
        parse_lifetime(text)


def test_rotate_replaces_the_key_keeps_name_role_and_lifetime(database_url, capsys, app_with):
    old = new_key(database_url, capsys, "create", "--role", "operator", "--name", "op-ben",
                  "--expires", "30d")
    new = new_key(database_url, capsys, "rotate", "op-ben")
    assert new != old
    first, second = rows(database_url)
    assert first.revoked_at is not None and second.revoked_at is None
    assert (second.name, second.role, lifetime(second)) == ("op-ben", "operator", timedelta(days=30))
    with app_with(key_cache_s=0) as client:
        assert_problem(client.get("/api/v1/whoami", headers={"X-API-Key": old}), 401)
        me = client.get("/api/v1/whoami", headers={"X-API-Key": new}).json()
        assert me["name"] == "op-ben" and me["expires_at"].startswith(str(second.expires_at)[:10])
    # a name left with revoked keys only cannot be rotated; an explicit lifetime wins
    newer = new_key(database_url, capsys, "rotate", "op-ben", "--expires", "12h")
    assert newer not in (old, new) and lifetime(rows(database_url)[-1]) == timedelta(hours=12)
    assert keys_cli(database_url, "revoke", "op-ben") == 0
    assert keys_cli(database_url, "rotate", "op-ben") == 2
    assert "revoked" in capsys.readouterr().err


# -- requests ---------------------------------------------------------------------------------------

def test_an_expired_key_is_401_saying_so_even_from_the_cache(database_url, capsys, app_with):
    key = new_key(database_url, capsys, "create", "--role", "mes", "--name", "mes-short")
    headers = {"X-API-Key": key}
    with app_with(key_cache_s=600) as client:
        # the expiry is set once the app runs (its start-up can take seconds on a busy machine), a few
        # seconds ahead so the first request sees the key still valid and caches it
        db = Database(database_url)
        try:
            with db.session() as session:
                session.execute(update(ApiKey).values(expires_at=utcnow() + timedelta(seconds=4)))
                session.commit()
        finally:
            db.dispose()
        me = client.get("/api/v1/whoami", headers=headers)
        assert me.status_code == 200 and me.json()["expires_at"]  # verified once, now cached
        expires = rows(database_url)[0].expires_at.replace(tzinfo=None)
        wait_until(lambda: utcnow().replace(tzinfo=None) > expires)
        body = assert_problem(client.get("/api/v1/whoami", headers=headers), 401)
        assert body["type"].endswith("/key_expired") and "mes-short" in body["detail"]
        assert "expired" in body["detail"]


def test_a_revocation_by_another_process_reaches_the_cache_within_key_cache_s(database_url, capsys,
                                                                               app_with):
    key = new_key(database_url, capsys, "create", "--role", "mes", "--name", "mes-gone")
    headers = {"X-API-Key": key}
    with app_with(key_cache_s=1.0) as client:
        assert client.get("/api/v1/whoami", headers=headers).status_code == 200
        assert keys_cli(database_url, "revoke", "mes-gone") == 0  # the CLI: another process
        wait_until(lambda: client.get("/api/v1/whoami", headers=headers).status_code == 401)


def test_every_review_audit_row_carries_the_key_name_also_after_rotation(database_url, capsys, app_with,
                                                                         app_settings):
    seed_database(database_url, app_settings.data_dir)
    db = Database(database_url)
    try:
        with db.session() as session:
            defect_ids = list(session.scalars(select(Defect.id).order_by(Defect.id).limit(2)))
    finally:
        db.dispose()
    first = new_key(database_url, capsys, "create", "--role", "operator", "--name", "op-maria")
    with app_with(key_cache_s=0) as client:
        resp = client.post(f"/api/v1/defects/{defect_ids[0]}/review", json={"action": "confirm"},
                           headers={"X-API-Key": first})
        assert resp.status_code == 200, resp.text
        second = new_key(database_url, capsys, "rotate", "op-maria")
        resp = client.post(f"/api/v1/defects/{defect_ids[1]}/review", json={"action": "reject"},
                           headers={"X-API-Key": second})
        assert resp.status_code == 200, resp.text
    db = Database(database_url)
    try:
        with db.session() as session:
            actors = list(session.scalars(select(DefectReview.actor).order_by(DefectReview.id)))
    finally:
        db.dispose()
    assert actors == ["op-maria", "op-maria"]


# -- the cache and the breaker themselves ---------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_key_cache_honours_a_key_for_ttl_s_then_asks_again():
    clock = Clock()
    cache = KeyCache(30, max_entries=2, clock=clock)
    anna, ben, carl = (Principal(n, "mes", key_id=i) for i, n in enumerate(("anna", "ben", "carl")))
    cache.put("a", anna)
    clock.now += 29.9
    assert cache.get("a") == anna
    clock.now += 0.1
    assert cache.get("a") is None  # ttl over: verified again against the database
    cache.put("a", anna)
    cache.put("b", ben)
    cache.forget(anna.key_id)  # revoked by this process: gone at once
    assert cache.get("a") is None and cache.get("b") == ben
    cache.put("a", anna)
    cache.put("c", carl)  # bounded: the oldest entry leaves
    assert cache.get("b") is None and cache.get("c") == carl
    off = KeyCache(0)
    off.put("a", anna)
    assert off.get("a") is None


def test_breaker_opens_once_probes_in_the_background_and_closes_on_recovery():
    clock = Clock()
    answers: list[str | None] = []
    probed = threading.Event()

    def probe() -> str | None:
        probed.set()
        return answers.pop(0) if answers else None

    breaker = CircuitBreaker(probe, probe_s=1.0, clock=clock)
    assert breaker.available() and breaker.view() == {"up": True, "last_error": None, "down_for_s": None}
    breaker.trip("connection to server at 10.1.2.3, port 5432 failed")
    clock.now += 0.5
    assert not breaker.available() and not probed.is_set()  # no probe before probe_s
    assert breaker.view() == {"up": False, "last_error": "database unreachable", "down_for_s": 0.5}
    answers.append("still away")
    clock.now += 0.5
    assert not breaker.available()  # a probe is due: it runs in the background, the caller goes on
    wait_until(probed.is_set)
    wait_until(lambda: not breaker._probing)
    assert breaker.is_open and breaker.trips == 1
    probed.clear()
    clock.now += 1.0
    breaker.available()
    wait_until(lambda: not breaker.is_open)
    assert breaker.available() and breaker.view()["up"]


def test_an_admin_creates_an_expiring_key_over_the_api(database_url, app_with):
    from mes_helpers import make_key

    admin = {"X-API-Key": make_key(database_url, "admin", "admin-1")}
    with app_with() as client:
        created = client.post("/api/v1/keys", json={"name": "cam-7", "role": "camera", "expires_in_days": 7},
                              headers=admin)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["expires_at"] and KEY_RE.match(body["key"])
        assert lifetime(rows(database_url)[-1]) == timedelta(days=7)
        listed = client.get("/api/v1/keys", headers=admin).json()["items"]
        assert [k["expires_at"] for k in listed if k["name"] == "cam-7"] == [body["expires_at"]]
        assert_problem(client.post("/api/v1/keys", json={"name": "x", "role": "camera", "expires_in_days": 0},
                                   headers=admin), 422)
