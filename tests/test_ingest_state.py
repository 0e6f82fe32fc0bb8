"""app.ingest.state directly: the sliding-window rate (its window edge included), a camera's counters
and the Prometheus series they feed, the last error, and the fields of the GET /cameras snapshot."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from app.ingest.state import CameraState, RateMeter
from app.metrics import FRAME_STAGES, REGISTRY
from app.schemas.ingest import CameraCounters


def test_rate_over_the_window_counts_an_event_on_its_edge():
    meter = RateMeter(window_s=5.0)
    assert meter.rate(now=0.0) == 0.0
    meter.add(now=0.0)
    assert meter.rate(now=0.0) == pytest.approx(0.2)  # one event: 1 / window
    for t in (1.0, 2.0, 3.0, 4.0):
        meter.add(now=t)
    assert meter.rate(now=4.0) == pytest.approx(5 / 4.0)  # five events since the oldest, 4 s ago
    assert meter.rate(now=5.0) == pytest.approx(5 / 5.0)  # the event at 0 is exactly on the edge: in
    assert meter.rate(now=5.5) == pytest.approx(4 / 4.5)  # now it is out
    assert meter.rate(now=9.0) == pytest.approx(0.2)  # only the event at 4 is left
    assert meter.rate(now=9.5) == 0.0


def test_a_batch_of_events_counts_each():
    meter = RateMeter(window_s=2.0)
    meter.add(3, now=10.0)
    meter.add(now=11.0)
    assert meter.rate(now=12.0) == pytest.approx(4 / 2.0)
    assert meter.rate(now=12.5) == pytest.approx(0.5)  # the three at 10 left the window


def series(name: str, camera: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"camera": camera, **labels})


@pytest.fixture
def camera() -> CameraState:
    return CameraState(f"cam-{uuid.uuid4().hex[:8]}", "L1", "S2", "folder /frames")


def test_a_new_camera_is_zero_everywhere(camera):
    snap = camera.snapshot()
    assert set(snap) == set(CameraCounters.model_fields)
    assert snap == {"id": camera.camera_id, "line": "L1", "station": "S2", "source": "folder /frames",
                    "connected": False, "finished": False, "fps_in": 0.0, "fps_out": 0.0, "captured": 0,
                    "inspected": 0, "committed": 0, "journaled": 0, "dropped": 0, "skipped": 0,
                    "reconnects": 0,
                    "attempts": 0, "failures": {}, "error_kind": None, "queue_depth": 0, "last_error": None,
                    "last_error_at": None, "last_frame_at": None, "last_ng_inspection_id": None,
                    "checkpoint": None, "resumed_from": None,
                    "part": None}  # the pipeline's snapshot names the part (app.ingest.parts)
    # every series of the camera exists from the start, at 0
    for stage in FRAME_STAGES:
        assert series("inspect_frames_total", camera.camera_id, stage=stage) == 0.0
    assert series("inspect_frames_dropped_total", camera.camera_id) == 0.0
    assert series("inspect_camera_up", camera.camera_id) == 0.0
    assert series("inspect_queue_depth", camera.camera_id) == 0.0


def test_counters_and_their_series(camera):
    before = datetime.now(UTC)
    camera.set_connected(True)
    for _ in range(3):
        camera.on_captured()
    camera.on_dropped(2)
    camera.on_skipped(4)
    camera.on_inspected(3)
    camera.on_journaled(1)
    camera.on_committed(1, ng_inspection_id=41, ng_frame_uid="u41")
    camera.on_committed(2)  # OK frames: the last NG stays
    camera.on_failure("stream ended", "ended")
    camera.on_flowing()
    camera.set_queue_depth(7)
    after = datetime.now(UTC)
    snap = camera.snapshot()
    assert {k: snap[k] for k in ("connected", "captured", "dropped", "inspected", "journaled", "committed",
                                 "reconnects", "queue_depth", "last_ng_inspection_id")} == {
        "connected": True, "captured": 3, "dropped": 2, "inspected": 3, "journaled": 1, "committed": 3,
        "reconnects": 1, "queue_depth": 7, "last_ng_inspection_id": 41}
    assert camera.last_ng_frame_uid == "u41"
    assert snap["last_frame_at"].endswith("Z")
    assert before <= datetime.fromisoformat(snap["last_frame_at"].replace("Z", "+00:00")) <= after
    # three frames each way within the 5 s window: at least 3 / 5 per second (one frame would be 0.2)
    assert snap["fps_in"] >= 0.6 and snap["fps_out"] >= 0.6
    want = {"captured": 3, "inspected": 3, "committed": 3, "journaled": 1, "dropped": 2, "skipped": 4}
    assert {s: series("inspect_frames_total", camera.camera_id, stage=s) for s in FRAME_STAGES} == want
    assert series("inspect_frames_dropped_total", camera.camera_id) == 2.0
    assert camera.snapshot()["skipped"] == 4
    assert series("inspect_camera_up", camera.camera_id) == 1.0
    assert series("inspect_queue_depth", camera.camera_id) == 7.0
    camera.set_connected(False)
    assert series("inspect_camera_up", camera.camera_id) == 0.0 and camera.snapshot()["connected"] is False


def test_a_failure_shows_until_frames_flow_again_and_its_time_stays(camera):
    before = datetime.now(UTC)
    camera.on_attempt()
    camera.on_failure("connection refused", "refused")
    camera.on_attempt()
    camera.on_failure("connection refused", "refused")
    first_at = camera.last_error_at
    assert first_at is not None and before <= first_at <= datetime.now(UTC)
    snap = camera.snapshot()
    assert (snap["last_error"], snap["error_kind"], snap["failures"]) == ("connection refused", "refused",
                                                                          {"refused": 2})
    assert series("inspect_camera_failures_total", camera.camera_id, kind="refused") == 2.0
    camera.on_attempt()
    camera.on_flowing()  # frames again: one recovery after three attempts, the error is over
    camera.on_flowing()  # a later connection without a failure before it is no recovery
    snap = camera.snapshot()
    assert (snap["last_error"], snap["error_kind"]) == (None, None)
    assert (snap["reconnects"], snap["attempts"]) == (1, 3)
    assert snap["last_error_at"] == first_at.isoformat().replace("+00:00", "Z")
    assert series("inspect_camera_recoveries_total", camera.camera_id) == 1.0
    camera.on_failure("stalled: no frame for 5 s", "stalled")
    assert camera.snapshot()["failures"] == {"refused": 2, "stalled": 1} and camera.last_error_at >= first_at
