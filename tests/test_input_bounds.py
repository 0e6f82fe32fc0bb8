"""Every time, string and number a caller sends is bounded: beyond the bound it is a 422 problem, never a
500 and never stored (capture times 2000-01-01 .. now + 1 day, query times 1970 .. 2100, names and
free text without control characters, lists and ids within their sizes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mes_helpers import assert_problem, jpeg_bytes

from app.vocabulary import iso

TOO_BIG = "99999999999999999999999"


def test_a_capture_time_in_seconds_is_refused_as_not_iso_8601(client) -> None:
    body = assert_problem(post_frame(client, captured_at="99999999999"), 422)  # the year 5138
    assert "captured_at" in body["detail"] and "ISO 8601" in body["detail"]
    assert client.get("/api/v1/inspections").json()["items"] == []


def post_frame(client, **fields: str):
    return client.post("/api/v1/inspections", files={"file": ("f.jpg", jpeg_bytes(), "image/jpeg")},
                       data=fields)


@pytest.mark.parametrize("captured_at", [
    "1970-01-01T00:00:00Z",  # an unset camera clock
    "1999-12-31T23:59:59Z",
    "3000-01-01T00:00:00",
    "9999-12-31T23:59:59-14:00",  # beyond the calendar once in UTC
    "0001-01-01T00:00:00+14:00",
])
def test_a_capture_time_far_in_the_past_or_future_is_refused(client, captured_at: str) -> None:
    body = assert_problem(post_frame(client, captured_at=captured_at), 422)
    assert "captured_at" in body["detail"] and "must lie between 2000-01-01T00:00:00Z and" in body["detail"]
    assert client.get("/api/v1/inspections").json()["items"] == []


def test_a_capture_time_within_the_bounds_is_stored_as_sent(client) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=23)).replace(microsecond=0)
    for captured_at in ("2000-01-01T00:00:00Z", iso(soon)):
        resp = post_frame(client, captured_at=captured_at)
        assert resp.status_code == 201, resp.text
        assert resp.json()["captured_at"] == captured_at
    tomorrow_and_more = iso(datetime.now(UTC) + timedelta(days=1, minutes=5))
    assert_problem(post_frame(client, captured_at=tomorrow_and_more), 422)


@pytest.mark.parametrize("path", ["/api/v1/inspections", "/api/v1/defects", "/api/v1/stats"])
@pytest.mark.parametrize("query", ["from=0001-01-01T00:00:00", "to=0001-01-01T00:00:00%2B14:00",
                                   "from=9999-12-31T23:59:59-14:00", "to=2100-01-01T00:00:00Z",
                                   "from=1969-12-31T23:59:59Z"])
def test_a_query_time_outside_1970_to_2100_is_a_422_problem(client, path: str, query: str) -> None:
    body = assert_problem(client.get(f"{path}?{query}"), 422)
    assert "must lie between 1970-01-01T00:00:00Z and 2100-01-01T00:00:00Z" in body["detail"]


def test_query_times_at_the_bounds_are_accepted(client) -> None:
    resp = client.get("/api/v1/inspections?from=1970-01-01T00:00:00Z&to=2099-12-31T23:59:59Z")
    assert resp.status_code == 200, resp.text
    resp = client.get("/api/v1/stats?from=2099-12-30T00:00:00Z&to=2099-12-31T00:00:00Z")
    assert resp.status_code == 200, resp.text


def test_a_delivery_page_id_beyond_int64_is_a_422_problem(client) -> None:
    hook = client.post("/api/v1/webhooks", json={"url": "http://10.0.0.1/hook", "events": ["inspection.ng"]})
    assert hook.status_code == 201, hook.text
    path = f"/api/v1/webhooks/{hook.json()['id']}/deliveries"
    assert_problem(client.get(f"{path}?before_id={TOO_BIG}"), 422)
    assert client.get(f"{path}?before_id={2**63 - 1}").status_code == 200


@pytest.mark.parametrize("body", [
    {"url": "http://10.0.0.1/a\x00b", "events": ["inspection.ng"]},
    {"url": "http://10.0.0.1/hook", "events": ["inspection.ng"], "secret": "s" * 16 + "\x00"},
    {"url": "http://10.0.0.1/hook", "events": ["inspection.ng"] * 17},
    {"url": "http://10.0.0.1/" + "a" * 1024, "events": ["inspection.ng"]},
])
def test_a_webhook_with_control_characters_or_beyond_its_sizes_is_refused(client, body: dict) -> None:
    assert_problem(client.post("/api/v1/webhooks", json=body), 422)
    assert client.get("/api/v1/webhooks").json()["items"] == []


@pytest.mark.parametrize("name", ["ops\x00", "line\nbreak", "k" * 129])
def test_a_key_name_with_control_characters_or_too_long_is_refused(client, name: str) -> None:
    assert_problem(client.post("/api/v1/keys", json={"name": name, "role": "operator"}), 422)


def test_a_review_note_keeps_line_breaks_and_refuses_other_control_characters(client) -> None:
    resp = post_frame(client)  # a bright frame: NG with one defect
    assert resp.status_code == 201, resp.text
    defect_id = resp.json()["defects"][0]["id"]
    review = f"/api/v1/defects/{defect_id}/review"
    for note in ("bad\x00note", "esc\x1b[31m", "n" * 2001):
        assert_problem(client.post(review, json={"action": "confirm", "note": note}), 422)
    assert_problem(client.post(review, json={"action": "reclassify", "class_name": "patch\x00es"}), 422)
    resp = client.post(review, json={"action": "confirm", "note": "line one\r\n\tline two"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["review_note"] == "line one\r\n\tline two"
