"""What the fuzz of the OpenAPI document found (docs/reliability.md), each pinned as a plain request:
a 500 or an answer the document did not describe before, a documented 4xx problem or a plain answer
now; and the rules the document states for them."""

from __future__ import annotations

import pytest
from mes_helpers import assert_problem, jpeg_bytes

from app.schemas.common import MAX_ROW_ID


@pytest.fixture
def hook_id(client) -> int:
    resp = client.post("/api/v1/webhooks", json={"url": "http://10.1.2.3/h", "events": ["inspection.ng"]})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


@pytest.mark.parametrize("url", ["http://\U0010b59e.example/", "http://receiver.plant:99999/"])
def test_a_webhook_host_no_resolver_can_spell_or_a_port_beyond_65535_is_a_refused_target(client, url: str):
    resp = client.post("/api/v1/webhooks", json={"url": url, "events": ["inspection.ng"]})
    body = assert_problem(resp, 422)
    assert body["type"].endswith("/refused_target")


def test_a_delivery_page_before_an_id_beyond_int64_is_a_422(client, hook_id: int) -> None:
    assert_problem(client.get(f"/api/v1/webhooks/{hook_id}/deliveries?before_id={MAX_ROW_ID + 1}"), 422)
    assert client.get(f"/api/v1/webhooks/{hook_id}/deliveries?before_id={MAX_ROW_ID}").status_code == 200


@pytest.mark.parametrize("route", ["/api/v1/inspections", "/api/v1/defects"])
def test_a_filter_time_before_year_1_in_utc_is_a_422_naming_the_range(client, route: str) -> None:
    body = assert_problem(client.get(f"{route}?from=0001-01-01T00:00:00%2B01:00"), 422)
    assert "must lie between 1970-01-01T00:00:00Z and 2100-01-01T00:00:00Z" in body["detail"]


@pytest.mark.parametrize("query", ["from=1", "to=1.5"])
def test_a_filter_time_must_be_iso_8601(client, query: str) -> None:
    body = assert_problem(client.get(f"/api/v1/inspections?{query}"), 422)
    assert "ISO 8601" in body["detail"]


def test_captured_at_must_be_iso_8601_not_unix_seconds(client) -> None:
    resp = client.post("/api/v1/inspections", files={"file": ("f.jpg", jpeg_bytes(), "image/jpeg")},
                       data={"captured_at": "1"})
    assert "ISO 8601" in assert_problem(resp, 422)["detail"]


def test_a_query_parameter_given_twice_is_a_422_naming_it(client) -> None:
    body = assert_problem(client.get("/api/v1/inspections?line=L1&line=L2"), 422)
    assert body["errors"] == [{"loc": ["query", "line"], "msg": "given more than once; give it once",
                               "type": "repeated"}]
    resp = client.post("/api/v1/inspections?camera_id=a&camera_id=b", content=jpeg_bytes(),
                       headers={"content-type": "image/jpeg"})
    assert_problem(resp, 422)


def test_an_empty_form_field_leaves_the_query_parameter_in_force(client) -> None:
    resp = client.post("/api/v1/inspections?camera_id=cam-q", data={"camera_id": ""},
                       files={"file": ("f.jpg", jpeg_bytes(), "image/jpeg")})
    assert resp.status_code == 201, resp.text
    assert resp.json()["camera_id"] == "cam-q"


@pytest.mark.parametrize(("method", "route", "body"), [
    ("POST", "/api/v1/keys", {"name": "line\x00key", "role": "camera"}),
    ("POST", "/api/v1/webhooks", {"url": "http://10.1.2.3/\x00", "events": ["inspection.ng"]}),
    ("POST", "/api/v1/webhooks", {"url": "http://10.1.2.3/", "events": ["inspection.ng"],
                                  "secret": "0123456789abcdef\x00"}),
    ("POST", "/api/v1/defects/1/review", {"action": "confirm", "note": "seen\x00"}),
])
def test_a_nul_in_free_text_or_a_name_is_a_422_on_every_backend(client, method: str, route: str,
                                                                  body: dict) -> None:
    assert_problem(client.request(method, route, json=body), 422)


@pytest.mark.parametrize("name", [" ", "\u3000"])
def test_a_blank_key_name_is_a_422(client, name: str) -> None:
    assert_problem(client.post("/api/v1/keys", json={"name": name, "role": "mes"}), 422)


def test_a_json_body_that_is_not_utf8_is_a_documented_400(client) -> None:
    resp = client.post("/api/v1/keys", content=b"c\xff", headers={"content-type": "application/json"})
    assert_problem(resp, 400)
    document = client.get("/openapi.json").json()
    assert "400" in document["paths"]["/api/v1/keys"]["post"]["responses"]


def test_the_document_states_the_rules_it_enforces(client) -> None:
    document = client.get("/openapi.json").json()
    params = {p["name"]: p["schema"]
              for p in document["paths"]["/api/v1/inspections"]["get"]["parameters"]}
    assert params["camera_id"]["anyOf"][0]["pattern"] == "^[^\\x00-\\x1f\\x7f]*$"
    upload = {p["name"]: p["schema"] for p in document["paths"]["/api/v1/inspections"]["post"]["parameters"]}
    assert upload["frame_uid"]["anyOf"][0]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    assert upload["imgsz"]["anyOf"][0] == {"type": "integer", "minimum": 32, "maximum": 4096}
    assert {"type": "string", "maxLength": 0} in upload["camera_id"]["anyOf"]  # empty: unset
    hook = document["components"]["schemas"]["WebhookCreate"]["properties"]
    assert hook["events"]["items"]["enum"] == ["inspection.ng", "defect.reviewed", "alarm.raised"]
    assert hook["url"]["format"] == "uri"
