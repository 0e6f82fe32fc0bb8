"""Alarm rules of the cameras file (app.ingest.alarms) on SQLite and PostgreSQL: N NG frames in a row,
defects per minute above a limit, a camera down longer than T; each fires once (an alarm row, an
``alarm.raised`` delivery, the metrics), stays quiet while raised, and counts afresh once an operator
acknowledges it (audited); GET /alarms and POST /alarms/{id}/acknowledge. The monitor's clock is a
variable the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from db_helpers import NAMES
from sqlalchemy import select

from app import metrics
from app.db.models import Alarm, Webhook, WebhookDelivery
from app.detections import Detections
from app.errors import Conflict
from app.ingest.alarms import RECHECK_S, AlarmMonitor, acknowledge
from app.ingest.config import CamerasConfigError, parse_cameras
from app.ingest.state import CameraState
from app.inspection import CameraContext, inspect_frame

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
CAMERAS = """\
cameras:
  - {id: cam-a, line: L1, source: "folder:x"}
  - {id: cam-b, line: L1, source: "folder:y"}
  - {id: cam-c, line: L2, source: "folder:z"}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rules(text: str):
    return parse_cameras(CAMERAS + "alarms:\n" + text).alarms


def result(camera: str, line: str, defects: int, k: int):
    boxes = np.array([[10.0 + i, 10.0, 30.0 + i, 30.0] for i in range(defects)], np.float32).reshape(-1, 4)
    dets = Detections(boxes, np.full(defects, 0.9, np.float32), np.zeros(defects, int), NAMES)
    return inspect_frame(np.full((80, 100, 3), 90, np.uint8), dets, model_version="v",
                         context=CameraContext(camera_id=camera, line=line), frame_uid=f"{camera}-{k}",
                         captured_at=T0 + timedelta(seconds=k), source="stream")


def alarms_in(db) -> list[tuple]:
    with db.session() as s:
        return [(a.rule_id, a.condition, a.camera_id, a.line, a.value, a.limit, a.acknowledged_by)
                for a in s.scalars(select(Alarm).order_by(Alarm.id))]


def deliveries(db) -> list[dict]:
    with db.session() as s:
        rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.event == "alarm.raised")
                         .order_by(WebhookDelivery.id))
        return [d.payload for d in rows]


def ack_all(db, actor: str = "op-ann") -> None:
    with db.session() as s:
        for alarm in s.scalars(select(Alarm).where(Alarm.acknowledged_at.is_(None))):
            acknowledge(s, alarm, actor, " reel changed ")
        s.commit()


@pytest.mark.parametrize(("text", "message"), [
    ("  - {id: r, line: L1}", "exactly one condition"),
    ("  - {id: r, line: L1, consecutive_ng: 3, camera_down_s: 5}", "not consecutive_ng, camera_down_s"),
    ("  - {id: r, consecutive_ng: 3}", "exactly one of line or camera"),
    ("  - {id: r, line: L1, camera: cam-a, consecutive_ng: 3}", "exactly one of line or camera"),
    ("  - {id: r, camera: cam-x, consecutive_ng: 3}", "camera 'cam-x', which is not in cameras"),
    ("  - {id: r, line: L1, consecutive_ng: 3}\n  - {id: r, line: L2, consecutive_ng: 3}",
     "'r' appears twice"),
    ("  - {id: r, line: L1, defects_per_metre: 2}", "line_speed_m_per_min goes with defects_per_metre"),
    ("  - {id: r, line: L1, consecutive_ng: 2, line_speed_m_per_min: 30}", "goes with defects_per_metre"),
    ("  - {id: r, line: L1, consecutive_ng: 0}", r"cams.yaml:6: alarms\[0\]\.consecutive_ng"),
])
def test_a_bad_rule_is_refused_with_its_place(text, message):
    with pytest.raises(CamerasConfigError, match=message):
        parse_cameras(CAMERAS + "alarms:\n" + text, "cams.yaml")


def test_n_ng_frames_in_a_row_on_a_line_fire_once_until_acknowledged(db):
    with db.session() as s:
        s.add(Webhook(url="http://10.9.9.9/hook", events=["alarm.raised"], secret="s" * 32))
        s.commit()
    clock = Clock()
    monitor = AlarmMonitor(rules("  - {id: l1-run, line: L1, consecutive_ng: 3}"), db, clock=clock)
    heard: list = []  # a listener (the MQTT publisher's alarm topic) hears each raised alarm once
    monitor.raised_listeners.append(heard.append)
    raised_before = metrics.REGISTRY.get_sample_value(
        "inspect_alarms_raised_total", {"rule": "l1-run", "condition": "consecutive_ng"}) or 0
    # an OK frame breaks the run; frames of line L2 do not count; cam-a and cam-b are both line L1
    seq = [("cam-a", "L1", 1), ("cam-b", "L1", 0), ("cam-a", "L1", 2), ("cam-c", "L2", 1),
           ("cam-b", "L1", 1)]
    assert [monitor.observe([result(c, line, n, k)]) for k, (c, line, n) in enumerate(seq)] == [[]] * 5
    [alarm] = monitor.observe([result("cam-a", "L1", 1, 10)])
    assert (alarm.rule_id, alarm.value, alarm.limit, alarm.line, alarm.camera_id) == \
        ("l1-run", 3, 3, "L1", "cam-a")
    assert alarm.message == "3 NG frames in a row on line L1"
    # still NG: no storm while the alarm is raised
    assert all(monitor.observe([result("cam-b", "L1", 1, k)]) == [] for k in range(11, 20))
    assert len(alarms_in(db)) == 1 and heard == [alarm]
    [payload] = deliveries(db)
    assert (payload["id"], payload["rule_id"], payload["acknowledged_at"]) == (alarm.id, "l1-run", None)
    assert metrics.REGISTRY.get_sample_value("inspect_alarm_active", {"rule": "l1-run"}) == 1
    assert metrics.REGISTRY.get_sample_value(
        "inspect_alarms_raised_total", {"rule": "l1-run", "condition": "consecutive_ng"}) == raised_before + 1

    ack_all(db)
    assert alarms_in(db)[0][-1] == "op-ann"
    assert metrics.REGISTRY.get_sample_value("inspect_alarm_active", {"rule": "l1-run"}) == 0
    clock.now += RECHECK_S
    # the monitor finds the acknowledgement and counts afresh: three more NG frames to fire again
    assert [monitor.observe([result("cam-a", "L1", 1, k)]) for k in range(20, 23)] == [[], [], []]
    [again] = monitor.observe([result("cam-a", "L1", 1, 23)])
    assert again.id != alarm.id and len(deliveries(db)) == 2
    with db.session() as s, pytest.raises(Conflict, match="acknowledged by op-ann"):
        acknowledge(s, s.get(Alarm, alarm.id), "op-bob")


def test_defects_per_minute_on_a_camera_over_a_sliding_minute(db):
    clock = Clock()
    monitor = AlarmMonitor(rules("  - {id: density, camera: cam-a, defects_per_minute: 5}"), db, clock=clock)
    assert monitor.observe([result("cam-a", "L1", 3, 0)]) == []
    clock.now += 61  # the first frame's 3 defects leave the window
    assert monitor.observe([result("cam-a", "L1", 3, 1), result("cam-b", "L1", 9, 2)]) == []
    clock.now += 10
    [alarm] = monitor.observe([result("cam-a", "L1", 3, 3)])
    assert (alarm.condition, alarm.value, alarm.limit) == ("defects_per_minute", 6, 5)
    assert "6 defects in the last minute on camera cam-a" in alarm.message


def test_defects_per_metre_of_material_from_the_line_speed(db):
    """30 m/min: the last minute saw 30 m of strip; more than 0.2 defects per metre is more than 6."""
    clock = Clock()
    rule = "  - {id: strip, line: L1, defects_per_metre: 0.2, line_speed_m_per_min: 30}"
    monitor = AlarmMonitor(rules(rule), db, clock=clock)
    assert monitor.observe([result("cam-a", "L1", 3, 0), result("cam-b", "L1", 3, 1)]) == []  # 0.2 / m
    clock.now += 30
    [alarm] = monitor.observe([result("cam-a", "L1", 1, 2)])
    assert (alarm.condition, alarm.limit) == ("defects_per_metre", 0.2)
    assert alarm.value == pytest.approx(7 / 30, abs=1e-3)
    assert "defects per metre over the last minute on line L1" in alarm.message


def test_a_camera_down_longer_than_t_fires_once(db):
    clock = Clock()
    monitor = AlarmMonitor(rules("  - {id: down, line: L1, camera_down_s: 30, message: Check the cable}"), db,
                           clock=clock)
    a, b, c = CameraState("cam-a", "L1"), CameraState("cam-b", "L1"), CameraState("cam-c", "L2")
    a.set_connected(True)
    assert monitor.check_cameras([a, b, c]) == []  # b down from now on; c is not watched
    clock.now += 20
    b.set_connected(True)  # back before T
    assert monitor.check_cameras([a, b, c]) == []
    b.set_connected(False)
    assert monitor.check_cameras([a, b, c]) == []
    clock.now += 31
    [alarm] = monitor.check_cameras([a, b, c])
    assert (alarm.camera_id, alarm.line, alarm.message, alarm.value) == ("cam-b", "L1", "Check the cable", 31)
    clock.now += 100
    assert monitor.check_cameras([a, b, c]) == []  # still down, already raised
    assert [row[:3] for row in alarms_in(db)] == [("down", "camera_down_s", "cam-b")]


def test_the_api_lists_and_acknowledges_alarms(client, app_settings):
    from app.db.session import Database

    db = Database(app_settings.database_url)
    try:
        monitor = AlarmMonitor(rules("  - {id: run, line: L1, consecutive_ng: 1}"), db, clock=Clock())
        [alarm] = monitor.observe([result("cam-a", "L1", 1, 0)])
    finally:
        db.dispose()
    [listed] = client.get("/api/v1/alarms").json()["items"]
    assert (listed["id"], listed["rule_id"], listed["acknowledged_at"]) == (alarm.id, "run", None)
    done = client.post(f"/api/v1/alarms/{alarm.id}/acknowledge", json={"note": "cleaned the lens"})
    assert done.status_code == 200
    body = done.json()
    assert (body["acknowledged_by"], body["acknowledge_note"]) == ("anonymous", "cleaned the lens")
    assert client.get("/api/v1/alarms").json()["items"] == []
    every = client.get("/api/v1/alarms", params={"state": "all"}).json()["items"]
    assert [a["id"] for a in every] == [alarm.id]
    assert client.post(f"/api/v1/alarms/{alarm.id}/acknowledge", json={}).status_code == 409
    assert client.post("/api/v1/alarms/99999/acknowledge", json={}).status_code == 404


def test_a_running_pipeline_raises_one_alarm_for_a_long_ng_run(database_url, tiny_model_path, neu_sample,
                                                                tmp_path):
    """The real ingest: 30 simulator frames, every one NG for the tiny model, and a rule of 5 NG in a
    row on the line: one alarm, one alarm.raised delivery, however long the run goes on."""
    from app.db.session import Database
    from app.inference import Engine
    from app.ingest.pipeline import Pipeline

    images = neu_sample / "images"
    cfg = parse_cameras(f"""
cameras:
  - id: run-cam
    line: L7
    source: "sim://neu-det?images={images}&fps=30&width=160&height=120&realtime=false&seconds=1"
    images: never
alarms:
  - {{id: l7-run, line: L7, consecutive_ng: 5}}
""")
    db = Database(database_url)
    try:
        with db.session() as s:
            s.add(Webhook(url="http://10.9.9.9/hook", events=["alarm.raised"], secret="s" * 32))
            s.commit()
        with Pipeline(cfg, Engine(tiny_model_path, intra_op_threads=1), db, tmp_path / "data") as pipeline:
            assert pipeline.wait_finished(60)
            assert pipeline.cameras[0].state.committed == 30
        assert [row[:4] for row in alarms_in(db)] == [("l7-run", "consecutive_ng", "run-cam", "L7")]
        assert len(deliveries(db)) == 1
    finally:
        db.dispose()
