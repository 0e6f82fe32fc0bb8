"""The part under a streaming camera: the line sets and ends it (PUT/DELETE /api/v1/cameras/{id}/part,
with the upload role, 404 for a camera that does not run here, 422 for a bad part id); every frame
captured while it is current carries its id; a tracked defect belongs to the part of its first frame
and is placed from that part's start, so GET /tracks?part_id= is the part's defect map."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from mes_helpers import assert_problem, make_key
from mqtt_helpers import wait_until
from sqlalchemy import select

from app import metrics
from app.db.models import Inspection, Track
from app.db.session import Database
from app.detections import Detections
from app.inference import Engine
from app.ingest.camera_tracking import CameraTracking, FrameRef
from app.ingest.config import TrackingConfig, parse_cameras
from app.ingest.parts import CurrentPart
from app.ingest.pipeline import Pipeline
from app.ingest.sources import Frame
from app.ingest.track_records import track_record

WIDTH, HEIGHT = 160, 120
STEP = 45  # px the simulated strip moves per frame: more than the tiny model's box can be matched over


def sim(neu_sample: Path, **kw) -> str:
    params = {"images": str(neu_sample / "images"), "fps": 30, "width": WIDTH, "height": HEIGHT,
              "speed": STEP * 30, "realtime": "false"} | kw
    return "sim://neu-det?" + "&".join(f"{k}={v}" for k, v in params.items())


def coil_camera(source: str) -> str:
    return f"""
cameras:
  - id: coil
    line: L1
    station: top
    source: "{source}"
    tracking: {{enabled: true, mm_per_px: 0.5, looks: null}}
"""


# -- the REST API ----------------------------------------------------------------------------------
@pytest.fixture
def line(app_settings, neu_sample: Path, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The service with camera ``coil`` (a paced simulator), keys required; keys by role."""
    from app.main import create_app

    cams = tmp_path / "cameras.yaml"
    cams.write_text(coil_camera(sim(neu_sample, realtime="true")))
    settings = app_settings.model_copy(update={"cameras_file": cams, "auth_enabled": True})
    with TestClient(create_app(settings)) as client:
        yield client, {role: make_key(settings.database_url, role, f"{role}-1")
                       for role in ("camera", "mes", "admin")}


def commands(via: str, outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("inspect_part_commands_total",
                                             {"via": via, "outcome": outcome}) or 0.0


def camera_part(client: TestClient, key: str) -> dict | None:
    [cam] = client.get("/api/v1/cameras", headers={"X-API-Key": key}).json()["cameras"]
    return cam["part"]


def test_the_line_sets_and_ends_the_part_under_a_camera(line) -> None:
    client, keys = line
    as_camera = {"X-API-Key": keys["camera"]}
    counted = {outcome: commands("api", outcome) for outcome in ("set", "unchanged", "ended", "refused")}
    assert camera_part(client, keys["mes"]) is None
    before = datetime.now(UTC)
    resp = client.put("/api/v1/cameras/coil/part", json={"part_id": "COIL-1"}, headers=as_camera)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["camera_id"], body["part"]["part_id"], body["part"]["set_by"]) == ("coil", "COIL-1",
                                                                                  "api:camera-1")
    since = datetime.fromisoformat(body["part"]["since"])
    assert before - timedelta(seconds=1) <= since <= datetime.now(UTC)
    assert camera_part(client, keys["mes"]) == body["part"]
    # the same part again changes nothing (its start stays where it was)
    again = client.put("/api/v1/cameras/coil/part", json={"part_id": "COIL-1"},
                       headers={"X-API-Key": keys["admin"]})
    assert again.status_code == 200 and again.json() == body

    # its frames carry it
    def coil_frames() -> int:
        page = client.get("/api/v1/inspections", params={"part_id": "COIL-1"},
                          headers={"X-API-Key": keys["mes"]}).json()
        return len(page["items"])
    wait_until(lambda: coil_frames() >= 3)
    part = client.get("/api/v1/parts/COIL-1", headers={"X-API-Key": keys["mes"]}).json()
    assert part["stations"][0]["camera_id"] == "coil" and part["inspections"] >= 3

    ended = client.delete("/api/v1/cameras/coil/part", headers=as_camera)
    assert ended.status_code == 200 and ended.json() == {"camera_id": "coil", "part": None}
    assert camera_part(client, keys["mes"]) is None
    assert {outcome: commands("api", outcome) - counted[outcome] for outcome in counted} == \
        {"set": 1, "unchanged": 1, "ended": 1, "refused": 0}


BAD_BODIES = [{"part_id": ""}, {"part_id": "a\x00b"}, {"part_id": "C\n2"}, {"part_id": "x" * 129},
              {"part_id": None}, {"part_id": 7}, {}, {"part_id": "C", "x": 1}]


def test_bad_part_ids_unknown_cameras_and_keys_without_the_upload_role_are_refused(line) -> None:
    client, keys = line
    for body in BAD_BODIES:
        resp = client.put("/api/v1/cameras/coil/part", json=body, headers={"X-API-Key": keys["camera"]})
        assert_problem(resp, 422)
    for method in ("put", "delete"):
        kwargs = {"json": {"part_id": "C"}} if method == "put" else {}
        unknown = client.request(method, "/api/v1/cameras/nope/part", headers={"X-API-Key": keys["camera"]},
                                 **kwargs)
        assert "nope" in assert_problem(unknown, 404)["detail"]
        assert_problem(client.request(method, "/api/v1/cameras/coil/part", **kwargs), 401)
        assert_problem(client.request(method, "/api/v1/cameras/coil/part", headers={"X-API-Key": keys["mes"]},
                                      **kwargs), 403)
    assert_problem(client.put("/api/v1/cameras/" + "c" * 65 + "/part", json={"part_id": "C"},
                              headers={"X-API-Key": keys["camera"]}), 422)
    assert camera_part(client, keys["mes"]) is None


def test_a_service_without_cameras_has_no_part_to_set(client) -> None:
    body = assert_problem(client.put("/api/v1/cameras/coil/part", json={"part_id": "C"}), 404)
    assert "no cameras run" in body["detail"]


# -- the pipeline: frames, tracks and positions --------------------------------------------------
def test_positions_of_a_parts_defects_count_from_its_start(database_url: str, tiny_model_path: Path,
                                                           neu_sample: Path, tmp_path: Path, client) -> None:
    """Coil A, then coil B under a simulated strip: every frame carries the coil it was captured in,
    every track the coil of its first frame; B's defects are placed from B's start (the tiny model
    sees one box in the middle of every frame: one defect per frame, STEP px apart on the strip)."""
    db = Database(database_url)
    engine = Engine(tiny_model_path, intra_op_threads=1)
    pipeline = Pipeline(parse_cameras(coil_camera(sim(neu_sample))), engine, db, tmp_path / "ingest")
    state = pipeline.camera("coil").state
    pipeline.parts.set("coil", "A", "test", "api")
    with pipeline:
        wait_until(lambda: state.captured >= 40)
        pipeline.parts.set("coil", "B", "test", "api")
        b_from = state.captured
        wait_until(lambda: state.inspected >= b_from + 40, timeout=60)
        assert pipeline.snapshot()["cameras"][0]["part"]["part_id"] == "B"
    with db.session() as s:
        in_order = select(Inspection).order_by(Inspection.captured_at, Inspection.id)
        frames = [(f.frame_uid, f.part_id) for f in s.scalars(in_order)]
        tracks = list(s.scalars(select(Track).order_by(Track.started_at, Track.id)))
    db.dispose()
    parts = [p for _, p in frames]
    switch = parts.index("B")
    assert switch >= 39 and set(parts[:switch]) == {"A"} and set(parts[switch:]) == {"B"}
    part_of_frame = dict(frames)
    assert tracks and all(t.part_id == part_of_frame[t.first_frame_uid] for t in tracks)
    a = [t.position_x_px for t in tracks if t.part_id == "A"]
    b = [t.position_x_px for t in tracks if t.part_id == "B"]
    assert len(b) >= 20 and max(a) > 30 * STEP  # A ran long enough to be far from 0 ...
    assert -WIDTH < b[0] < WIDTH  # ... and B's map starts again near its start
    steps = [later - earlier for earlier, later in zip(b, b[1:], strict=False)]
    assert min(steps) > 0 and statistics.median(steps) == pytest.approx(STEP, rel=0.2)  # along the strip
    assert all(abs(t.position_y_px - HEIGHT / 2) < 10 for t in tracks)  # across the strip: its pixel row

    defect_map = client.get("/api/v1/tracks", params={"part_id": "B"}).json()["items"]
    assert [t["position_px"][0] for t in defect_map] == pytest.approx(b, abs=0.01)
    assert defect_map[0]["position_mm"][0] == pytest.approx(b[0] * 0.5, abs=0.01)
    part = client.get("/api/v1/parts/B").json()
    assert part["tracked_defects"] == len(b) and part["verdict"] == "NG"
    assert part["inspections"] == len(parts) - switch


def test_a_defect_in_view_when_the_part_changes_stays_with_the_part_it_started_in() -> None:
    """A standing strip with one defect in every frame: its track starts in part A and is A's, placed
    from A's start, however many frames of part B saw it."""
    cam = parse_cameras(coil_camera("folder:/unused")).cameras[0]
    tracking = CameraTracking(TrackingConfig(enabled=True, looks=None))
    part = CurrentPart()
    texture = np.random.default_rng(1).integers(0, 255, (48, 64, 3)).astype(np.uint8)
    t0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    for k in range(6):
        if k in (0, 3):
            part.set("A" if k == 0 else "B", "test")
        frame = Frame(texture, k, t0 + timedelta(seconds=k), float(k), t_stream=k / 10)
        tracking.on_captured(frame)
        frame.part = stamp = part.stamp(frame.motion, (64, 48))
        assert stamp is not None and stamp.part_id == ("A" if k < 3 else "B")
        dets = Detections([[10, 10, 30, 40]], [0.5 + k / 100], [2], ("a", "b", "patches"))
        tracking.on_inspected(frame, dets, ref=FrameRef(f"frame-{k}", frame.captured_at, frame.part))
        tracking.handed([f"frame-{k}"])
    tracking.finish()
    [ended], lost = tracking.release()
    assert lost == []
    record = track_record(ended, cam, tracking.motion.heading())
    assert (record.part_id, record.frames_seen, record.best_frame_uid) == ("A", 6, "frame-5")
    # a line that has not moved: the pixels of the part's first frame
    assert record.position_px == pytest.approx([20.0, 25.0], abs=0.5)
