"""The ``camera`` label of /metrics is bounded: configured cameras have their own value, caller-chosen
camera ids get one up to INSPECT_METRICS_MAX_CAMERAS, later ones count under ``other``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from mes_helpers import jpeg_bytes
from prometheus_client.parser import text_string_to_metric_families

from app.ingest.state import CameraState
from app.main import create_app
from app.metrics import CameraLabels, camera_label


def test_ids_get_their_own_value_up_to_the_cap_then_other() -> None:
    labels = CameraLabels(cap=2)
    assert [labels.of(c) for c in ("a", "b", "c", "a", "d", "b")] == ["a", "b", "other", "a", "other", "b"]
    assert labels.of(None) == "" and labels.of("") == ""


def test_registered_cameras_keep_their_own_value_beyond_the_cap() -> None:
    labels = CameraLabels(cap=1)
    assert labels.of("upload-1") == "upload-1"
    labels.register("line-3-top")
    assert labels.of("line-3-top") == "line-3-top"
    assert labels.of("upload-2") == "other"


def test_configure_sets_the_cap_and_starts_over() -> None:
    labels = CameraLabels(cap=1)
    labels.register("cfg")
    assert labels.of("x") == "x" and labels.of("y") == "other"
    labels.configure(0)
    assert labels.of("x") == "other" and labels.of("cfg") == "other"


def test_an_ingest_camera_registers_its_id() -> None:
    from app.metrics import CAMERA_LABELS

    CAMERA_LABELS.configure(0)
    try:
        CameraState("press-7", line="L1", station="S1", source="file")
        assert camera_label("press-7") == "press-7"
        assert camera_label("anything-else") == "other"
    finally:
        CAMERA_LABELS.configure(100)


@pytest.fixture
def capped_client(app_settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings.model_copy(update={"metrics_max_cameras": 2}))) as client:
        yield client


def inspections_by_camera(client: TestClient) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "inspect_inspections_total":
                camera = sample.labels["camera"]
                counts[camera] = counts.get(camera, 0.0) + sample.value
    return counts


def test_uploads_naming_many_cameras_do_not_grow_the_series(capped_client) -> None:
    client = capped_client
    before = inspections_by_camera(client)
    cameras = [f"caller-{i}" for i in range(6)] + ["caller-0"]
    for camera in cameras:
        resp = client.post("/api/v1/inspections", files={"file": ("f.jpg", jpeg_bytes(), "image/jpeg")},
                           data={"camera_id": camera})
        assert resp.status_code == 201, resp.text
        assert resp.json()["camera_id"] == camera  # the record keeps the id; only the label is capped
    after = inspections_by_camera(client)
    grown = {c: after[c] - before.get(c, 0.0) for c in after if after[c] != before.get(c, 0.0)}
    assert grown == {"caller-0": 2, "caller-1": 1, "other": 4}
    assert not any(c in after for c in cameras[2:6])
