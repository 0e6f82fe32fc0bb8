"""GET /api/v1/inspections/by-frame/{frame_uid}: the result of a posted frame by the uid its poster knows
(the URL a 202 answer gives while the database is away; see tests/test_outage_drill.py for that path)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from mes_helpers import assert_problem, jpeg_bytes, make_key


def post(client: TestClient, uid: str, **headers: str):
    return client.post(f"/api/v1/inspections?frame_uid={uid}&camera_id=cam-r", content=jpeg_bytes(200),
                       headers={"Content-Type": "image/jpeg", **headers})


def test_a_stored_frame_is_found_by_its_uid_an_unknown_one_is_404(client):
    created = post(client, "frame-r1")
    assert created.status_code == 201, created.text
    found = client.get("/api/v1/inspections/by-frame/frame-r1")
    answer = created.json()  # the upload's answer: the inspection, and whether its image was written
    assert answer.pop("image_stored") is True and answer.pop("image_skipped") is None
    assert found.status_code == 200 and found.json() == answer
    body = assert_problem(client.get("/api/v1/inspections/by-frame/frame-none"), 404)
    assert "frame-none" in body["detail"]
    assert_problem(client.get("/api/v1/inspections/by-frame/bad$uid"), 422)
    assert_problem(client.get("/api/v1/inspections/by-frame/" + "x" * 65), 422)


def test_the_camera_that_posted_may_read_its_result(app_settings):
    from app.main import create_app

    camera = {"X-API-Key": make_key(app_settings.database_url, "camera", "cam-r")}
    with TestClient(create_app(app_settings.model_copy(update={"auth_enabled": True}))) as client:
        assert post(client, "frame-r2", **camera).status_code == 201
        assert client.get("/api/v1/inspections/by-frame/frame-r2", headers=camera).status_code == 200
        assert_problem(client.get("/api/v1/inspections/1", headers=camera), 403)  # by id: readers only


def test_the_openapi_document_describes_the_202(client):
    doc = client.get("/openapi.json").json()
    post_doc = doc["paths"]["/api/v1/inspections"]["post"]["responses"]
    assert post_doc["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/InspectionAccepted")
    by_frame = doc["paths"]["/api/v1/inspections/by-frame/{frame_uid}"]["get"]["responses"]
    assert {"200", "202", "404", "503"} <= set(by_frame)
