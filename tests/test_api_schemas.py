"""The public models: the OpenAPI document describes every 2xx body by a named schema (or a declared
media type) and every problem response as application/problem+json; one inspection reads the same in
every view (POST, GET by id, lists, parts, defect detail, webhook payload, CSV)."""

from __future__ import annotations

import csv
import io

import pytest
from mes_helpers import T0, jpeg_bytes, seed_database

from app.main import create_app
from app.schemas import DefectInContext, InspectionPublic, csv_columns

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
MEDIA_TYPES = {"image/jpeg", "image/png", "text/csv", "text/plain"}
RFC9110_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                  409: "Conflict", 410: "Gone", 413: "Content Too Large", 415: "Unsupported Media Type",
                  422: "Unprocessable Content", 503: "Service Unavailable"}


@pytest.fixture
def app_settings(app_settings):
    """A lab set-up that lets webhooks target loopback (refused by default), where nobody listens."""
    return app_settings.model_copy(update={"webhook_refused_networks": []})


@pytest.fixture(scope="module")
def document() -> dict:
    from app.settings import Settings

    return create_app(Settings(database_url="sqlite://", auth_enabled=True)).openapi()


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield f"{method.upper()} {path}", op


def component(document: dict, ref: str) -> dict:
    assert ref.startswith("#/components/schemas/"), ref
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def test_every_success_body_is_a_named_schema_or_a_declared_media_type(document):
    seen = 0
    for name, op in operations(document):
        successes = {int(s): r for s, r in op["responses"].items() if s.startswith("2")}
        assert successes, f"{name} documents no 2xx response"
        for status, response in successes.items():
            content = response.get("content", {})
            if status == 204:
                assert not content, name
                continue
            assert content, f"{name} {status} has no body schema"
            for media, body in content.items():
                if media == "application/json":
                    assert set(body["schema"]) == {"$ref"}, f"{name} {status}: bare JSON schema {body}"
                    assert component(document, body["schema"]["$ref"])["type"] == "object"
                else:
                    assert media in MEDIA_TYPES, f"{name} {status}: undeclared media type {media}"
                    assert body.get("schema"), f"{name} {status} {media} has no schema"
            seen += 1
    assert seen >= 25  # every route of the API, not a few


def test_every_problem_response_is_problem_json(document):
    for name, op in operations(document):
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                assert response["content"] == {"application/problem+json": {"schema": PROBLEM_REF}}, \
                    f"{name} {status}"
                assert response["description"].startswith(RFC9110_TITLES[int(status)] + ":"), \
                    f"{name} {status}: {response['description']}"
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "instance", "errors"} <= set(problem["properties"])
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert problem.get("additionalProperties") is True  # extras such as `reasons`
    assert "HTTPValidationError" not in document["components"]["schemas"]  # 422 is a problem too


def test_each_route_documents_the_problems_it_can_answer(document):
    for name, op in operations(document):
        statuses = {int(s) for s in op["responses"]}
        path = name.split(" ", 1)[1]
        if path.startswith("/api/v1/"):
            assert 401 in statuses, name  # every API route needs a key
            if path not in ("/api/v1/model", "/api/v1/whoami"):
                assert 403 in statuses, name  # and a role
        if op.get("parameters") or op.get("requestBody"):
            assert 422 in statuses, name
        if "{" in path:
            assert 404 in statuses, name
    ops = dict(operations(document))
    assert {400, 413, 415, 422, 503} <= {int(s) for s in ops["POST /api/v1/inspections"]["responses"]}
    assert 503 in {int(s) for s in ops["GET /readyz"]["responses"]}
    assert 503 in {int(s) for s in ops["GET /api/v1/model"]["responses"]}
    assert 400 in {int(s) for s in ops["GET /api/v1/inspections"]["responses"]}


def test_csv_and_image_routes_declare_their_media_types(document):
    ops = dict(operations(document))
    for path, model in (("/api/v1/inspections", InspectionPublic), ("/api/v1/defects", DefectInContext)):
        csv_body = ops[f"GET {path}"]["responses"]["200"]["content"]["text/csv"]
        assert csv_body["example"].strip() == ",".join(csv_columns(model))
    assert set(ops["GET /api/v1/inspections/{inspection_id}/image"]["responses"]["200"]["content"]) == \
        {"image/jpeg", "image/png"}
    annotated = ops["GET /api/v1/inspections/{inspection_id}/image/annotated"]["responses"]["200"]
    assert set(annotated["content"]) == {"image/jpeg"}


def test_detections_is_the_deprecated_name_of_defects(document):
    schemas = document["components"]["schemas"]
    detail = schemas["InspectionDetail"]["properties"]
    assert detail["detections"]["deprecated"] is True
    assert detail["detections"]["items"] == detail["defects"]["items"]
    assert "detections" not in schemas["InspectionPublic"]["properties"]
    ops = dict(operations(document))
    for name in ("POST /api/v1/inspections", "GET /api/v1/inspections/{inspection_id}"):
        success = ops[name]["responses"]["200" if name.startswith("GET") else "201"]
        model = "/InspectionDetail" if name.startswith("GET") else "/InspectionCreated"  # + image_stored
        assert success["content"]["application/json"]["schema"]["$ref"].endswith(model)
    assert "detections" in schemas["InspectionCreated"]["properties"]


def test_one_inspection_reads_the_same_in_every_view(client, app_settings):
    posted = client.post("/api/v1/inspections?camera_id=cam-v&part_id=PV1&line=LV&station=SV",
                         content=jpeg_bytes(255), headers={"content-type": "image/jpeg"})
    assert posted.status_code == 201, posted.text
    body = posted.json()
    assert body["defects"] and body["detections"] == body["defects"]  # both names, one list
    assert body["image_stored"] is True  # the upload answer says whether the frame was written
    view = {k: v for k, v in body.items() if k not in ("detections", "image_stored", "image_skipped")}

    by_id = client.get(f"/api/v1/inspections/{body['id']}").json()
    assert {k: v for k, v in by_id.items() if k != "detections"} == view
    [listed] = client.get("/api/v1/inspections?part_id=PV1").json()["items"]
    assert listed == view
    [station] = client.get("/api/v1/parts/PV1").json()["stations"]
    assert station["latest"] == view
    defect = client.get(f"/api/v1/defects/{body['defects'][0]['id']}").json()
    assert defect["inspection"] == view
    assert {k: defect[k] for k in body["defects"][0]} == body["defects"][0]

    [row] = csv.DictReader(io.StringIO(client.get("/api/v1/inspections?part_id=PV1&format=csv").text))
    assert list(row) == list(csv_columns(InspectionPublic))
    assert row["captured_at"] == view["captured_at"] and row["verdict"] == view["verdict"] == "NG"
    assert float(row["total_ms"]) == view["timings_ms"]["total"]
    assert row["has_image"] == "true" and row["image_url"] == view["image_url"]  # JSON's words, not Python's
    [drow] = csv.DictReader(io.StringIO(client.get("/api/v1/defects?part_id=PV1&format=csv").text))
    assert [float(drow[c]) for c in ("x1", "y1", "x2", "y2")] == body["defects"][0]["box"]


def test_webhook_payload_is_the_public_inspection(client, app_settings):
    from sqlalchemy import select

    from app.db.models import WebhookDelivery
    from app.db.session import Database

    # nobody listens on port 9: the delivery fails and is retried, its payload stays as queued
    client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["inspection.ng"]})
    body = client.post("/api/v1/inspections?part_id=PW9", content=jpeg_bytes(255),
                       headers={"content-type": "image/jpeg"}).json()
    db = Database(app_settings.database_url)
    with db.session() as s:
        [delivery] = s.scalars(select(WebhookDelivery)).all()
        payload = delivery.payload
    db.dispose()
    assert payload == {k: v for k, v in body.items()
                       if k not in ("detections", "image_stored", "image_skipped")}
    assert client.get("/api/v1/webhooks").json()["items"][0]["events"] == ["inspection.ng"]


def test_times_and_numbers_follow_the_vocabulary(client, app_settings):
    seed_database(app_settings.database_url, app_settings.data_dir)
    item = client.get("/api/v1/defects?limit=1").json()["items"][0]
    assert item["captured_at"].endswith("Z")
    assert all(round(v, 2) == v for v in item["box"]) and round(item["confidence"], 5) == item["confidence"]
    day = T0.strftime("%Y-%m-%d")
    stats = client.get(f"/api/v1/stats?bucket=day&from={day}T00:00:00Z&to={day}T23:00:00Z").json()
    assert (stats["from"], stats["to"], stats["buckets"]) == (f"{day}T00:00:00Z", f"{day}T23:00:00Z",
                                                            [f"{day}T00:00:00Z"])
    assert stats["totals"]["yield"] == round(stats["totals"]["ok"] / stats["totals"]["inspections"], 6)
    cameras = client.get("/api/v1/cameras").json()
    storage = cameras.pop("storage")
    assert cameras == {"running": False, "reason": "no cameras file (INSPECT_CAMERAS_FILE)", "cameras": [],
                       "database": {"up": True, "last_error": None, "down_for_s": None},
                       "journal": {"pending": 0, "bytes": 0, "replayed": 0}}
    assert storage["low_disk"] is False and storage["images_skipped"] == 0
    assert all(isinstance(storage[k], int) for k in ("free_bytes", "total_bytes", "floor_bytes"))


def test_problem_titles_are_rfc_9110_phrases(client, app_settings):
    from fastapi.testclient import TestClient

    resp = client.post("/api/v1/inspections?imgsz=640", content=jpeg_bytes(255),
                       headers={"content-type": "image/jpeg"})
    assert (resp.status_code, resp.json()["title"]) == (422, "Unprocessable Content")
    assert client.get("/api/v1/inspections?limit=0").json()["title"] == "Unprocessable Content"
    # beside `client`: a data folder (journal) of its own
    small = app_settings.model_copy(update={"max_upload_mb": 0.001,
                                            "data_dir": app_settings.data_dir.with_name("data-small")})
    with TestClient(create_app(small)) as c:
        resp = c.post("/api/v1/inspections", content=jpeg_bytes(255), headers={"content-type": "image/jpeg"})
    assert (resp.status_code, resp.json()["title"]) == (413, "Content Too Large")
