"""The inspection API through the real app (create_app + lifespan, migrated database, tiny ONNX
model), on SQLite and on PostgreSQL: stored rows match answers, bad input gets a 4xx problem and
writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.api.deps import service_of
from app.db import repository
from app.db.models import Camera, Defect, Inspection
from app.main import create_app
from app.settings import Settings

PROBLEM = "application/problem+json"


def jpeg(h: int = 100, w: int = 300, value: int = 255) -> bytes:
    return cv2.imencode(".jpg", np.full((h, w, 3), value, np.uint8))[1].tobytes()


def png(h: int = 50, w: int = 50, value: int = 0) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), value, np.uint8))[1].tobytes()


def counts(client: TestClient) -> dict[str, int]:
    with service_of(client.app).db.session() as s:
        return {m.__tablename__: repository.count_rows(s, m) for m in (Inspection, Defect, Camera)}


def stored_files(settings: Settings) -> list[Path]:
    return [p for p in settings.images_dir.rglob("*") if p.is_file()] if settings.images_dir.exists() else []


def assert_problem(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert {"type", "title", "status", "detail"} <= body.keys() and body["status"] == status
    return body


def test_multipart_frame_is_stored_and_matches_the_answer(client, app_settings):
    resp = client.post("/api/v1/inspections", files={"file": ("f.jpg", jpeg(), "image/jpeg")},
                       data={"camera_id": "cam-7", "line": "L1", "station": "S2", "part_id": "P-001",
                             "captured_at": "2026-11-27T08:30:00+01:00"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["verdict"] == "NG" and body["camera_id"] == "cam-7" and body["part_id"] == "P-001"
    assert body["captured_at"] == "2026-11-27T07:30:00Z"
    assert body["model_version"] == "tiny-test-1" and (body["width"], body["height"]) == (300, 100)
    assert set(body["timings_ms"]) == {"decode", "inference", "postprocess", "total"}
    [det] = body["detections"]
    # the 'patches' box (cx 32, cy 32, 20x10 in the 64x64 input) mapped back into the 300x100 frame
    assert det["class_name"] == "patches" and det["box"] == pytest.approx([103.12, 28.57, 196.88, 76.19])

    with service_of(client.app).db.session() as s:
        row = repository.get_inspection(s, body["id"])
        assert row.frame_uid == body["frame_uid"] and row.verdict == "NG" and row.defect_count == 1
        assert (row.camera_id, row.line, row.station, row.source) == ("cam-7", "L1", "S2", "api")
        assert row.captured_at.replace(tzinfo=row.captured_at.tzinfo or UTC) == datetime(
            2026, 11, 27, 7, 30, tzinfo=UTC)
        [d] = row.defects
        assert (d.class_name, d.class_id) == ("patches", 2)
        assert [d.x1, d.y1, d.x2, d.y2] == pytest.approx(det["box"], abs=0.01)
        assert d.confidence == pytest.approx(det["confidence"], abs=1e-4)
        camera = s.get(Camera, "cam-7")
        assert (camera.line, camera.station) == ("L1", "S2")
        assert row.image_path and row.image_path.endswith(f"{row.frame_uid}.jpg")

    # policy 'ng': the NG frame is stored as uploaded and served back
    assert (app_settings.data_dir / row.image_path).read_bytes() == jpeg()
    assert body["image_url"] == f"/api/v1/inspections/{body['id']}/image"
    image = client.get(body["image_url"])
    assert image.status_code == 200 and image.content == jpeg()

    assert body["image_stored"] is True and body["image_skipped"] is None  # the upload answer only
    again = client.get(f"/api/v1/inspections/{body['id']}")
    assert again.status_code == 200
    assert again.json() == {k: v for k, v in body.items() if k not in ("image_stored", "image_skipped")}


def test_raw_png_body_with_query_params_ok_frame_not_stored(client, app_settings):
    resp = client.post("/api/v1/inspections?camera_id=cam-raw&part_id=X9", content=png(),
                       headers={"content-type": "image/png"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["verdict"] == "OK" and body["detections"] == [] and body["image_url"] is None
    assert body["camera_id"] == "cam-raw" and body["part_id"] == "X9"
    assert counts(client) == {"inspections": 1, "defects": 0, "cameras": 1}
    assert stored_files(app_settings) == []
    assert_problem(client.get(f"/api/v1/inspections/{body['id']}/image"), 404)


def test_replayed_frame_uid_is_stored_once(client):
    first = client.post("/api/v1/inspections?frame_uid=cam1-000042", content=jpeg(),
                        headers={"content-type": "image/jpeg"})
    second = client.post("/api/v1/inspections?frame_uid=cam1-000042", content=jpeg(),
                         headers={"content-type": "image/jpeg"})
    assert first.status_code == 201 and second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert counts(client)["inspections"] == 1


def _truncated_jpeg() -> bytes:
    data = jpeg()
    return data[: len(data) // 2]


def _corrupt_jpeg() -> bytes:
    """Headers and end marker intact, but a Huffman table of nonsense: the decoder gives up."""
    data = bytearray(jpeg())
    dht = data.index(b"\xff\xc4")
    data[dht + 4:dht + 21] = b"\xff" * 17
    return bytes(data)


BAD_INPUTS = {
    "text-as-jpeg": (dict(content=b"hello, not an image", headers={"content-type": "image/jpeg"}), 400),
    "truncated-jpeg": (dict(content=_truncated_jpeg(), headers={"content-type": "image/jpeg"}), 400),
    "corrupt-jpeg": (dict(content=_corrupt_jpeg(), headers={"content-type": "image/jpeg"}), 400),
    "truncated-png": (dict(content=png()[:-20], headers={"content-type": "image/png"}), 400),
    "empty-body": (dict(content=b"", headers={"content-type": "image/jpeg"}), 400),
    "wrong-content-type": (dict(content=jpeg(), headers={"content-type": "text/plain"}), 415),
    "no-content-type": (dict(content=jpeg()), 415),
    "multipart-not-an-image": (dict(files={"file": ("x.jpg", b"GIF89a....", "image/jpeg")}), 400),
    "multipart-pdf-part": (dict(files={"file": ("x.pdf", b"%PDF-1.4", "application/pdf")}), 415),
    "multipart-empty-file": (dict(files={"file": ("x.jpg", b"", "image/jpeg")}), 400),
    "multipart-no-file": (dict(data={"camera_id": "c1"}, files={"other": ("x.jpg", jpeg(), "image/jpeg")}),
                          422),
    "bad-captured-at": (dict(content=jpeg(), headers={"content-type": "image/jpeg"},
                             params={"captured_at": "yesterday"}), 422),
    "camera-id-too-long": (dict(files={"file": ("x.jpg", jpeg(), "image/jpeg")},
                                data={"camera_id": "c" * 65}), 422),
    "unsafe-frame-uid": (dict(content=jpeg(), headers={"content-type": "image/jpeg"},
                              params={"frame_uid": "../../etc"}), 422),
    "imgsz-on-a-fixed-size-model": (dict(content=jpeg(), headers={"content-type": "image/jpeg"},
                                         params={"imgsz": "640"}), 422),
    "imgsz-not-a-number": (dict(files={"file": ("x.jpg", jpeg(), "image/jpeg")}, data={"imgsz": "big"}), 422),
    "too-many-pixels": (dict(content=png(h=300, w=400), headers={"content-type": "image/png"}), 413),
    "too-large-raw": (dict(content=b"\xff\xd8\xff" + b"\0" * (1 << 20),
                           headers={"content-type": "image/jpeg"}), 413),
    "too-large-multipart-file": (dict(files={"file": ("x.jpg", b"\xff\xd8\xff" + b"\0" * (530 << 10),
                                                      "image/jpeg")}), 413),  # within the form slack
    "too-large-multipart": (dict(files={"file": ("x.jpg", b"\xff\xd8\xff" + b"\0" * (1 << 20),
                                                 "image/jpeg")}), 413),
}


@pytest.fixture
def strict_client(app_settings):
    settings = app_settings.model_copy(update={"max_upload_mb": 0.5, "max_pixels": 100_000,
                                               "image_policy": "always"})
    with TestClient(create_app(settings)) as c:
        yield c, settings


DRILLS = {"too-many-pixels"}  # a small PNG that decodes to more pixels than INSPECT_MAX_PIXELS


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.drill) if c in DRILLS else c
                                  for c in BAD_INPUTS])
def test_bad_input_gets_a_problem_and_writes_nothing(strict_client, case):
    client, settings = strict_client
    kwargs, status = BAD_INPUTS[case]
    before = counts(client)
    resp = client.post("/api/v1/inspections", **kwargs)
    assert_problem(resp, status)
    assert counts(client) == before == {"inspections": 0, "defects": 0, "cameras": 0}
    assert stored_files(settings) == []


def test_declared_content_length_over_limit_is_refused_unread(strict_client):
    client, _ = strict_client
    resp = client.post("/api/v1/inspections", content=jpeg(),
                       headers={"content-type": "image/jpeg", "content-length": str(10 << 20)})
    assert_problem(resp, 413)


def test_missing_inspection_is_404_problem(client):
    body = assert_problem(client.get("/api/v1/inspections/999999"), 404)
    assert "999999" in body["detail"]
    assert_problem(client.get("/api/v1/inspections/abc"), 422)


def test_model_health_and_metrics(client):
    model = client.get("/api/v1/model").json()
    assert model["provider"] == "CPUExecutionProvider" and model["layout"] == "yolov5"
    assert model["names"][2] == "patches" and model["imgsz"] == [64, 64]
    assert "CPUExecutionProvider" in model["available_providers"] and model["version"] == "tiny-test-1"
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"

    client.post("/api/v1/inspections?camera_id=cam-m", content=jpeg(), headers={"content-type": "image/jpeg"})
    client.post("/api/v1/inspections", content=b"junk", headers={"content-type": "image/jpeg"})
    text = client.get("/metrics").text
    assert 'inspect_model_info{provider="CPUExecutionProvider",version="tiny-test-1"} 1.0' in text
    assert 'inspect_inspections_total{camera="cam-m",verdict="NG"}' in text
    assert 'inspect_defects_total{class_name="patches"}' in text
    assert 'inspect_request_errors_total{reason="not_an_image"}' in text
    assert "inspect_inference_seconds_count" in text


def test_missing_model_starts_but_is_not_ready(app_settings, tmp_path):
    settings = app_settings.model_copy(update={"model_path": tmp_path / "absent.onnx"})
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        body = assert_problem(client.get("/readyz"), 503)
        assert "model file not found" in body["detail"] and str(tmp_path / "absent.onnx") in body["detail"]
        body = assert_problem(client.post("/api/v1/inspections", content=jpeg(),
                                          headers={"content-type": "image/jpeg"}), 503)
        assert "model file not found" in body["detail"]
        assert_problem(client.get("/api/v1/model"), 503)
        assert counts(client)["inspections"] == 0


def test_neu_det_frames_pass_through_the_api(client, neu_sample):
    names = (neu_sample / "val.txt").read_text().split()[:4]
    for name in names:
        path = Path(name) if Path(name).is_absolute() else neu_sample / name
        if not path.is_file():
            path = neu_sample / "images" / Path(name).name
        resp = client.post("/api/v1/inspections",
                           files={"file": (path.name, path.read_bytes(), "image/jpeg")},
                           data={"camera_id": "neu", "part_id": path.stem})
        assert resp.status_code == 201, resp.text
        body = resp.json()
        assert (body["width"], body["height"]) == (200, 200) and body["verdict"] in ("OK", "NG")
        assert client.get(f"/api/v1/inspections/{body['id']}").json()["part_id"] == path.stem
    assert counts(client)["inspections"] == len(names)


def test_imgsz_shows_a_large_frame_to_the_model_at_its_own_scale(app_settings, neu_sample):
    """A 640x480 strip frame: letterboxed to the model's 256 px the defects shrink 2.5x and few are
    found; with imgsz=640 (free-size model) the frame goes in as it is."""
    import cv2
    from conftest import SHIPPED_INT8

    from app.ingest.simulator import StripSimulator

    sim = StripSimulator(neu_sample / "images", 640, 480, 30.0, 120.0, 0)
    found = {None: 0, 640: 0}
    with TestClient(create_app(app_settings.model_copy(update={"model_path": SHIPPED_INT8}))) as client:
        for i in (0, 37, 74, 111):
            data = cv2.imencode(".png", sim.frame(i)[0])[1].tobytes()
            for imgsz in found:
                params = {"imgsz": str(imgsz)} if imgsz else {}
                resp = client.post("/api/v1/inspections", content=data, params=params,
                                   headers={"content-type": "image/png"})
                assert resp.status_code == 201, resp.text
                body = resp.json()
                assert all(0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
                           for x1, y1, x2, y2 in (d["box"] for d in body["detections"]))
                found[imgsz] += len(body["detections"])
        resp = client.post("/api/v1/inspections", content=data, params={"imgsz": "500"},
                           headers={"content-type": "image/png"})
        assert_problem(resp, 422)
        assert "multiple of the model's largest stride" in resp.json()["detail"]
    assert found[640] >= 2 * found[None] and found[640] >= 8, found
