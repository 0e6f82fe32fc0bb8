"""API keys and roles: the keys CLI stores only a hash and prints the key once; every endpoint except
/healthz and /readyz (and /metrics when public) needs a key; 401/403 come as problem+json; the role matrix."""

from __future__ import annotations

import hashlib
import re

import pytest
from fastapi.testclient import TestClient
from mes_helpers import assert_problem, jpeg_bytes, make_key, seed_database
from sqlalchemy import select

from app.db.models import ApiKey
from app.db.session import Database

KEY_RE = re.compile(r"^dik_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}$")


@pytest.fixture
def auth_settings(app_settings):
    return app_settings.model_copy(update={"auth_enabled": True, "metrics_public": True})


@pytest.fixture
def auth_client(auth_settings):
    from app.main import create_app

    with TestClient(create_app(auth_settings)) as c:
        yield c


@pytest.fixture
def keys(auth_client, auth_settings) -> dict[str, str]:
    return {role: make_key(auth_settings.database_url, role, f"{role}-1")
            for role in ("camera", "mes", "operator", "admin")}


def _rows(database_url: str) -> list[ApiKey]:
    db = Database(database_url)
    try:
        with db.session() as session:
            rows = list(session.scalars(select(ApiKey).order_by(ApiKey.id)))
            session.expunge_all()
            return rows
    finally:
        db.dispose()


# -- keys CLI -------------------------------------------------------------------------------------

def test_keys_cli_prints_the_key_once_and_stores_only_its_hash(database_url, capsys):
    from app.cli import main

    argv = ["keys", "--database-url", database_url, "create", "--role", "mes", "--name", "mes-line-1"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 1 and KEY_RE.match(lines[0]), out
    key = lines[0]
    assert key not in err and "shown once" in err
    [row] = _rows(database_url)
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert (row.name, row.role, row.prefix) == ("mes-line-1", "mes", key.split("_")[1])
    stored = " ".join(str(getattr(row, c.name)) for c in ApiKey.__table__.columns)
    assert key.split("_", 2)[2] not in stored  # the secret part is nowhere in the row

    assert main(["keys", "--database-url", database_url, "list"]) == 0
    listing = capsys.readouterr().out
    assert "mes-line-1" in listing and row.prefix in listing and key not in listing

    assert main(["keys", "--database-url", database_url, "revoke", row.prefix]) == 0
    assert "revoked" in capsys.readouterr().out
    assert _rows(database_url)[0].revoked_at is not None
    assert main(["keys", "--database-url", database_url, "list"]) == 0
    assert "mes-line-1" not in capsys.readouterr().out
    assert main(["keys", "--database-url", database_url, "revoke", "nobody"]) == 2
    assert "no key matches" in capsys.readouterr().err


def test_keys_cli_rejects_bad_role_and_unmigrated_database(tmp_path, capsys):
    from app.cli import main

    with pytest.raises(SystemExit):
        main(["keys", "create", "--role", "root", "--name", "x"])
    assert main(["keys", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}", "list"]) == 2
    assert "db upgrade" in capsys.readouterr().err


def test_keys_cli_in_another_directory_names_the_missing_database(database_url, tmp_path, monkeypatch,
                                                                 capsys):
    """The default SQLite URL is relative: from a directory without the database, `keys` says where it
    looked in one line and leaves no ./data behind; pointed at the database, it works from anywhere."""
    from app.cli import main

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("INSPECT_DATABASE_URL", raising=False)
    assert main(["keys", "create", "--role", "mes", "--name", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"no database file at {elsewhere / 'data' / 'inspect.db'}" in err
    assert "db upgrade" in err and list(elsewhere.iterdir()) == []
    monkeypatch.setenv("INSPECT_DATABASE_URL", database_url)
    assert main(["keys", "create", "--role", "mes", "--name", "x"]) == 0


# -- 401 ------------------------------------------------------------------------------------------

def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_endpoint_but_health_needs_a_key(auth_client):
    spec = auth_client.get("/openapi.json").json()
    public = {"/healthz", "/readyz", "/metrics"}  # /metrics: INSPECT_METRICS_PUBLIC=true in this fixture
    checked = 0
    for path, methods in spec["paths"].items():
        for method in methods:
            if path in public:
                continue
            resp = auth_client.request(method.upper(), _concrete(path))
            body = assert_problem(resp, 401)
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert "API key" in body["detail"]
            checked += 1
    assert checked >= 15
    assert auth_client.get("/healthz").status_code == 200
    assert auth_client.get("/metrics").status_code == 200


def test_unknown_malformed_and_revoked_keys_are_401(auth_client, auth_settings, keys):
    url = "/api/v1/inspections"
    assert_problem(auth_client.get(url, headers={"X-API-Key": "dik_00000000_" + "x" * 40}), 401)
    assert_problem(auth_client.get(url, headers={"Authorization": "Bearer nonsense"}), 401)
    assert_problem(auth_client.get(url, headers={"Authorization": f"Basic {keys['mes']}"}), 401)
    ok = auth_client.get("/api/v1/inspections", headers={"Authorization": f"Bearer {keys['mes']}"})
    assert ok.status_code == 200
    assert auth_client.get("/api/v1/inspections", headers={"X-API-Key": keys["mes"]}).status_code == 200

    admin = {"X-API-Key": keys["admin"]}
    mes_row = next(r for r in _rows(auth_settings.database_url) if r.name == "mes-1")
    assert auth_client.delete(f"/api/v1/keys/{mes_row.id}", headers=admin).json()["revoked_at"]
    assert_problem(auth_client.get("/api/v1/inspections", headers={"X-API-Key": keys["mes"]}), 401)


def test_metrics_need_a_key_unless_public(auth_settings, keys, tmp_path):
    from app.main import create_app

    # a second service beside auth_client: a data folder (journal) of its own
    other = auth_settings.model_copy(update={"metrics_public": False, "data_dir": tmp_path / "data-2"})
    with TestClient(create_app(other)) as c:
        assert_problem(c.get("/metrics"), 401)
        assert_problem(c.get("/metrics", headers={"X-API-Key": keys["camera"]}), 403)
        assert c.get("/metrics", headers={"X-API-Key": keys["mes"]}).status_code == 200


def test_auth_can_be_switched_off_for_a_demo(client):
    # the shared `client` fixture runs with INSPECT_AUTH_ENABLED=false
    me = client.get("/api/v1/whoami").json()
    assert me == {"name": "anonymous", "role": "admin", "auth_enabled": False,
                  "expires_at": None}
    assert client.get("/api/v1/inspections").status_code == 200


# -- 403: the role matrix -------------------------------------------------------------------------

ROLES = ("camera", "mes", "operator", "admin")


def _call(client, key, what, defect_id):
    h = {"X-API-Key": key}
    if what == "post_inspection":
        return client.post("/api/v1/inspections", content=jpeg_bytes(20),
                           headers={**h, "content-type": "image/jpeg"})
    if what == "model":
        return client.get("/api/v1/model", headers=h)
    if what == "list_inspections":
        return client.get("/api/v1/inspections", headers=h)
    if what == "stats":
        return client.get("/api/v1/stats", headers=h)
    if what == "defect":
        return client.get(f"/api/v1/defects/{defect_id}", headers=h)
    if what == "review":
        return client.post(f"/api/v1/defects/{defect_id}/review", json={"action": "confirm"}, headers=h)
    if what == "webhooks":
        return client.get("/api/v1/webhooks", headers=h)
    if what == "create_key":
        return client.post("/api/v1/keys", json={"name": "new", "role": "mes"}, headers=h)
    if what == "settings":
        return client.get("/api/v1/settings", headers=h)
    raise AssertionError(what)


MATRIX = {  # action -> roles allowed
    "post_inspection": {"camera", "admin"},
    "model": set(ROLES),
    "list_inspections": {"mes", "operator", "admin"},
    "stats": {"mes", "operator", "admin"},
    "defect": {"mes", "operator", "admin"},
    "review": {"operator", "admin"},
    "webhooks": {"admin"},
    "create_key": {"admin"},
    "settings": {"admin"},
}


@pytest.mark.parametrize("what", sorted(MATRIX))
def test_role_matrix(auth_client, auth_settings, keys, what):
    ids = seed_database(auth_settings.database_url, auth_settings.data_dir)
    defect_id = auth_client.get("/api/v1/defects?limit=1", headers={"X-API-Key": keys["admin"]}).json()
    defect_id = defect_id["items"][0]["id"]
    assert ids
    for role in ROLES:
        resp = _call(auth_client, keys[role], what, defect_id)
        if role in MATRIX[what]:
            assert resp.status_code in (200, 201), (role, what, resp.text)
        else:
            body = assert_problem(resp, 403)
            assert role in body["detail"], body


def test_reviews_record_the_key_name_and_whoami(auth_client, auth_settings, keys):
    seed_database(auth_settings.database_url, auth_settings.data_dir)
    h = {"Authorization": f"Bearer {keys['operator']}"}
    assert auth_client.get("/api/v1/whoami", headers=h).json() == \
        {"name": "operator-1", "role": "operator", "auth_enabled": True, "expires_at": None}
    did = auth_client.get("/api/v1/defects?limit=1", headers=h).json()["items"][0]["id"]
    body = auth_client.post(f"/api/v1/defects/{did}/review", json={"action": "reject"}, headers=h).json()
    assert body["reviewed_by"] == "operator-1" and body["history"][0]["actor"] == "operator-1"
    row = next(r for r in _rows(auth_settings.database_url) if r.name == "operator-1")
    assert row.last_used_at is not None


def test_admin_key_api_shows_a_new_key_once(auth_client, keys):
    admin = {"X-API-Key": keys["admin"]}
    created = auth_client.post("/api/v1/keys", json={"name": "cam-7", "role": "camera"}, headers=admin)
    assert created.status_code == 201
    key = created.json()["key"]
    assert KEY_RE.match(key)
    listed = auth_client.get("/api/v1/keys", headers=admin).json()["items"]
    assert "cam-7" in [k["name"] for k in listed] and all("key" not in k for k in listed)
    assert auth_client.get("/api/v1/model", headers={"X-API-Key": key}).status_code == 200
    assert_problem(auth_client.post("/api/v1/keys", json={"name": "x", "role": "root"}, headers=admin), 422)
    settings = auth_client.get("/api/v1/settings", headers=admin).json()
    assert settings["auth_enabled"] is True and "database_url" in settings


def test_dashboard_page_loads_without_a_key(auth_client):
    page = auth_client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/dashboard/app.js" in page.text
    for asset in ("/dashboard/app.js", "/dashboard/style.css", "/dashboard/vendor/chart.umd.min.js"):
        assert auth_client.get(asset).status_code == 200, asset
    # the data behind it is not public
    assert_problem(auth_client.get("/api/v1/defects"), 401)


def test_demo_key_is_created_once_and_reused(database_url, tmp_path, capsys):
    from app.auth import announce_demo_key, hash_key

    key = announce_demo_key(database_url, tmp_path, "http://127.0.0.1:8000/")
    assert key and key in capsys.readouterr().out
    again = announce_demo_key(database_url, tmp_path, "http://127.0.0.1:8000/")
    assert again == key
    [row] = _rows(database_url)
    assert (row.role, row.key_hash) == ("operator", hash_key(key))
