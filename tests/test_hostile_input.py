"""Hostile input is a 4xx problem, never a 500, and never reaches the database or a spreadsheet:
ids beyond the column type, control characters in names, CSV cells a spreadsheet would run."""

from __future__ import annotations

import csv
import io

import pytest
from mes_helpers import assert_problem, jpeg_bytes

from app.schemas.common import MAX_ROW_ID

TOO_BIG = "99999999999999999999999"  # beyond int64: OverflowError on SQLite, an error on PostgreSQL

ID_ROUTES = [
    ("GET", "/api/v1/inspections/{id}"),
    ("GET", "/api/v1/inspections/{id}/image"),
    ("GET", "/api/v1/inspections/{id}/image/annotated"),
    ("GET", "/api/v1/defects/{id}"),
    ("POST", "/api/v1/defects/{id}/review"),
    ("GET", "/api/v1/webhooks/{id}"),
    ("DELETE", "/api/v1/webhooks/{id}"),
    ("GET", "/api/v1/webhooks/{id}/deliveries"),
    ("DELETE", "/api/v1/keys/{id}"),
]


def call(client, method: str, path: str):
    body = {"json": {"action": "confirm"}} if method == "POST" else {}
    return client.request(method, path, **body)


@pytest.mark.drill
@pytest.mark.parametrize(("method", "route"), ID_ROUTES)
def test_an_id_beyond_the_column_type_is_a_422_problem(client, method: str, route: str) -> None:
    body = assert_problem(call(client, method, route.format(id=TOO_BIG)), 422)
    assert body["title"] == "Unprocessable Content"


@pytest.mark.drill
@pytest.mark.parametrize(("method", "route"), ID_ROUTES)
def test_the_largest_id_the_column_holds_is_simply_not_found(client, method: str, route: str) -> None:
    assert_problem(call(client, method, route.format(id=MAX_ROW_ID)), 404)


@pytest.mark.drill
@pytest.mark.parametrize("field", ["camera_id", "line", "station", "part_id"])
@pytest.mark.parametrize("bad", ["cam\x00era", "line\nbreak", "esc\x1b[31m", "del\x7f"])
def test_control_characters_in_a_posted_name_are_refused_and_nothing_is_stored(client, field: str,
                                                                               bad: str) -> None:
    resp = client.post("/api/v1/inspections", files={"file": ("f.jpg", jpeg_bytes(), "image/jpeg")},
                       data={field: bad})
    body = assert_problem(resp, 422)
    assert field in body["detail"] and "control characters" in body["detail"]
    assert client.get("/api/v1/inspections").json()["items"] == []


@pytest.mark.drill
@pytest.mark.parametrize("query", ["camera_id=a%00b", "line=a%0Ab", "part_id=%1B", "class_name=x%00"])
def test_control_characters_in_a_filter_are_a_422_problem(client, query: str) -> None:
    assert_problem(client.get(f"/api/v1/defects?{query}"), 422)
    assert_problem(client.get(f"/api/v1/inspections?{query}"), 422)


@pytest.mark.drill
def test_a_part_id_with_control_characters_in_the_path_is_refused(client) -> None:
    assert_problem(client.get("/api/v1/parts/P%00-1"), 422)


def test_printable_unicode_names_are_accepted(client) -> None:
    resp = client.post("/api/v1/inspections", files={"file": ("f.jpg", jpeg_bytes(), "image/jpeg")},
                       data={"camera_id": "Kamera-Süd", "line": "Linie 3", "part_id": "Teil 42/ä"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["camera_id"] == "Kamera-Süd"


@pytest.mark.drill
@pytest.mark.parametrize("formula", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)",
                                     "=cmd|' /C calc'!A0"])
def test_csv_cells_a_spreadsheet_would_run_are_neutralised(client, formula: str) -> None:
    resp = client.post("/api/v1/inspections", files={"file": ("f.jpg", jpeg_bytes(), "image/jpeg")},
                       data={"part_id": formula, "camera_id": "cam-1"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["part_id"] == formula  # JSON keeps the value as sent
    rows = list(csv.DictReader(io.StringIO(client.get("/api/v1/inspections?format=csv").text)))
    assert [r["part_id"] for r in rows] == ["'" + formula]
    assert rows[0]["camera_id"] == "cam-1"  # ordinary cells stay as they are


def test_readyz_says_the_database_is_down_without_naming_its_host(app_settings) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    secret_host = "db-internal.plant.example"
    with TestClient(create_app(app_settings)) as client:
        # point the running service at a database that cannot answer (port 1 refuses at once)
        from app.api.deps import service_of
        from app.db.session import Database

        service = service_of(client.app)
        service.db = Database(f"postgresql+psycopg://inspect:pw@{secret_host}:1/inspect?connect_timeout=2")
        body = assert_problem(client.get("/readyz"), 503)
    assert body["reasons"] == ["database unreachable"]
    assert secret_host not in str(body) and ":1" not in body["detail"]
