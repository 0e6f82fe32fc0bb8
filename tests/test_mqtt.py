"""The MQTT publisher against a real Mosquitto broker: the documented topics and payloads, retained
verdicts, the availability topic and its last will, a broker away and back, the bounded queue, login."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from mes_helpers import jpeg_bytes
from mqtt_helpers import Broker, Subscriber, wait_until

pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed (the `mqtt` extra)")

from app.line.mqtt import MqttConfig, MqttPublisher  # noqa: E402
from app.settings import Settings, load_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    yield b
    b.stop()


def mqtt_app(app_settings: Settings, port: int, **overrides):
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = app_settings.model_copy(update={"mqtt_host": "127.0.0.1", "mqtt_port": port,
                                               "mqtt_client_id": "line-test", "mqtt_reconnect_max_s": 1.0}
                                       | overrides)
    return TestClient(create_app(settings))


def post(client, value: int, camera: str, part: str) -> dict:
    resp = client.post(f"/api/v1/inspections?camera_id={camera}&line=L1&station=S1&part_id={part}",
                       content=jpeg_bytes(value, h=64, w=64), headers={"content-type": "image/jpeg"})
    assert resp.status_code == 201, resp.text
    return resp.json()


def topic(camera: str) -> str:
    return f"inspect/L1/S1/{camera}/inspection"


def test_each_stored_inspection_arrives_as_its_public_model(app_settings, broker: Broker) -> None:
    broker.start()
    sub = Subscriber(broker.port, "inspect/#")
    with mqtt_app(app_settings, broker.port) as client:
        sub.wait_for(lambda ms: any(m.payload == b"online" for m in ms))
        stored = post(client, 255, "cam1", "P-1")
        sub.wait_for(lambda ms: bool([m for m in ms if m.topic == topic("cam1")]))
        [msg] = sub.on(topic("cam1"))
        body = json.loads(msg.payload)
        detail = client.get(f"/api/v1/inspections/{stored['id']}").json()  # InspectionPublic and more
        assert body == {key: detail[key] for key in body} and body["id"] == stored["id"]
        assert (body["verdict"], body["part_id"], body["camera_id"], body["line"], body["station"]) == \
               ("NG", "P-1", "cam1", "L1", "S1")
        assert body["model_version"] and body["defects"][0]["class_name"]
        wait_until(lambda: client.get("/api/v1/cameras").json()["mqtt"]["published"] >= 2)
        state = client.get("/api/v1/cameras").json()["mqtt"]
        assert state["connected"] and state["dropped"] == 0 and state["client_id"] == "line-test"
        assert client.get("/readyz").json()["mqtt"]["connected"] is True
    # a clean stop says offline itself (retained)
    sub.wait_for(lambda ms: ms[-1].topic == "inspect/availability/line-test" and ms[-1].payload == b"offline")
    sub.close()


def test_the_latest_verdict_is_retained_per_camera(app_settings, broker: Broker) -> None:
    broker.start()
    with mqtt_app(app_settings, broker.port) as client:
        post(client, 255, "cam1", "P-1")
        ok = post(client, 0, "cam1", "P-2")
        other = post(client, 255, "cam2", "P-3")
        wait_until(lambda: client.get("/api/v1/cameras").json()["mqtt"]["queued"] == 0
                   and client.get("/api/v1/cameras").json()["mqtt"]["published"] >= 4)
    late = Subscriber(broker.port, "inspect/+/+/+/inspection")  # joins after the fact
    retained = late.wait_for(lambda ms: len(ms) >= 2)
    late.close()
    latest = {m.topic: json.loads(m.payload) for m in retained}
    assert all(m.retain for m in retained)
    assert latest[topic("cam1")]["id"] == ok["id"] and latest[topic("cam1")]["verdict"] == "OK"
    assert latest[topic("cam2")]["id"] == other["id"]


LAST_WILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from app.line.mqtt import MqttConfig, MqttPublisher
    config = MqttConfig(host="127.0.0.1", port=int(sys.argv[1]), prefix="inspect", client_id="doomed",
                        keepalive_s=5)
    MqttPublisher(config, session_factory=None).start()
    time.sleep(600)
""")


def test_the_last_will_says_offline_when_the_process_is_killed(broker: Broker) -> None:
    broker.start()
    sub = Subscriber(broker.port, "inspect/availability/#")
    proc = subprocess.Popen([sys.executable, "-c", LAST_WILL_SCRIPT, str(broker.port)],
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    try:
        sub.wait_for(lambda ms: [m.payload for m in ms] == [b"online"])
        proc.send_signal(signal.SIGKILL)
        messages = sub.wait_for(lambda ms: len(ms) == 2)
    finally:
        proc.kill()
        proc.wait()
        sub.close()
    assert (messages[-1].topic, messages[-1].payload) == ("inspect/availability/doomed", b"offline")


def test_a_broker_away_loses_nothing_queued_and_counts_drops(app_settings, broker: Broker) -> None:
    """The broker is down at the start: inspections are stored at once; three wait in the queue (bound
    3), the fourth and fifth are dropped and counted; once the broker is up the three arrive."""
    with mqtt_app(app_settings, broker.port, mqtt_queue_size=3) as client:
        cams = [f"cam{i}" for i in range(5)]
        ids = [post(client, 255, cam, f"P-{i}")["id"] for i, cam in enumerate(cams)]
        def mqtt_state() -> dict:
            return client.get("/api/v1/cameras").json()["mqtt"]

        wait_until(lambda: mqtt_state()["dropped"] == 2 and mqtt_state()["last_error"] is not None)
        state = mqtt_state()
        assert (state["connected"], state["queued"]) == (False, 3)
        assert "cannot reach" in state["last_error"]
        assert client.get("/readyz").status_code == 200  # a broker away does not make the service unready
        assert "inspect_mqtt_dropped_total" in client.get("/metrics").text
        broker.start()
        wait_until(lambda: client.get("/api/v1/cameras").json()["mqtt"]["queued"] == 0)
        assert client.get("/api/v1/cameras").json()["mqtt"]["connected"] is True
    late = Subscriber(broker.port, "inspect/+/+/+/inspection")  # one camera each: every message is retained
    got = late.wait_for(lambda ms: len(ms) >= 3)
    late.close()
    assert sorted(json.loads(m.payload)["id"] for m in got) == ids[:3]


def test_login_with_user_and_password(tmp_path: Path) -> None:
    broker = Broker(tmp_path, users={"plc": "s3cret"}).start()
    try:
        def publisher(client_id: str, password: str) -> MqttPublisher:
            config = MqttConfig(host="127.0.0.1", port=broker.port, prefix="inspect", client_id=client_id,
                                username="plc", password=password)
            return MqttPublisher(config, session_factory=None).start()

        good, bad = publisher("good", "s3cret"), publisher("bad", "wrong")
        try:
            wait_until(lambda: good.connected and bad.last_error is not None)
            assert not bad.connected and "refused" in bad.view()["last_error"]
            sub = Subscriber(broker.port, "inspect/availability/#", username="plc", password="s3cret")
            assert [m.payload for m in sub.wait_for(lambda ms: len(ms) >= 1)] == [b"online"]
            sub.close()
        finally:
            good.stop()
            bad.stop()
    finally:
        broker.stop()


@pytest.mark.parametrize(("env", "message"), [
    ({"mqtt_prefix": "plant/#"}, "INSPECT_MQTT_PREFIX"),
    ({"mqtt_prefix": "plant//a"}, "INSPECT_MQTT_PREFIX"),
    ({"mqtt_port": 0}, "INSPECT_MQTT_PORT"),
    ({"mqtt_password": "x"}, "INSPECT_MQTT_PASSWORD needs INSPECT_MQTT_USERNAME"),
    ({"mqtt_ca_file": "/nonexistent/ca.pem", "mqtt_tls": True}, "INSPECT_MQTT_CA_FILE"),
])
def test_bad_mqtt_settings_name_the_variable(env: dict, message: str) -> None:
    from app.settings import SettingsError

    with pytest.raises(SettingsError, match=message):
        load_settings(**env)


def test_camera_frames_and_up_down_changes_are_published(app_settings, broker: Broker, neu_sample: Path,
                                                          tmp_path: Path) -> None:
    """A simulator camera that drops out for a second: its state topic (retained) goes connected,
    disconnected, connected again; its frames arrive on its inspection topic."""
    broker.start()
    source = ("sim://neu-det?" + f"images={neu_sample / 'images'}&fps=30&width=160&height=120"
              "&realtime=true&dropout_every=15&dropout_s=1.5")
    cams = tmp_path / "cameras.yaml"
    cams.write_text(f'cameras:\n  - id: flaky\n    line: L1\n    station: S1\n    source: "{source}"\n'
                    "    reconnect: {initial_s: 0.05, max_s: 0.1}\n")
    sub = Subscriber(broker.port, "inspect/L1/S1/flaky/#")
    with mqtt_app(app_settings.model_copy(update={"cameras_file": cams}), broker.port):
        def states(ms) -> list[bool]:
            return [json.loads(m.payload)["connected"] for m in ms if m.topic.endswith("/state")]

        def went_down_and_up(ms) -> bool:
            seen = "".join("u" if up else "d" for up in states(ms))
            return "udu" in seen

        messages = sub.wait_for(went_down_and_up, timeout=30)
    sub.close()
    frames = [json.loads(m.payload) for m in messages if m.topic == topic("flaky")]
    assert frames and {f["camera_id"] for f in frames} == {"flaky"} and frames[0]["source"] == "stream"
    last_state = json.loads([m for m in messages if m.topic.endswith("/state")][-1].payload)
    assert last_state["id"] == "flaky" and last_state["line"] == "L1"


def test_the_settings_view_hides_the_mqtt_password(app_settings, broker: Broker) -> None:
    from pydantic import SecretStr

    broker.start()
    login = {"mqtt_username": "plc", "mqtt_password": SecretStr("s3cret")}
    with mqtt_app(app_settings, broker.port, **login) as client:
        shown = client.get("/api/v1/settings").json()
    assert shown["mqtt_username"] == "plc" and shown["mqtt_password"] == "**********"


def test_a_frame_s_provisional_verdict_comes_before_its_record_and_counters_follow(
        app_settings, broker: Broker, neu_sample: Path, tmp_path: Path) -> None:
    """A camera's frames: each frame's verdict (provisional, QoS 0) on the verdict topic before its
    stored record on the inspection topic; the shift counters on the counters topic (retained)."""
    broker.start()
    source = f"sim://neu-det?images={neu_sample / 'images'}&fps=30&width=160&height=120&realtime=true"
    cams = tmp_path / "cameras.yaml"
    cams.write_text(f'cameras:\n  - id: gate\n    line: L1\n    station: S1\n    source: "{source}"\n')
    sub = Subscriber(broker.port, "inspect/L1/S1/gate/#")
    with mqtt_app(app_settings.model_copy(update={"cameras_file": cams}), broker.port):
        def records(ms) -> list[dict]:
            return [json.loads(m.payload) for m in ms if m.topic == topic("gate")]

        def verdict_uids(ms) -> set[str]:
            return {json.loads(m.payload)["frame_uid"] for m in ms if m.topic.endswith("/verdict")}

        def recorded_with_verdict(ms) -> int:
            return len({r["frame_uid"] for r in records(ms)} & verdict_uids(ms))

        messages = sub.wait_for(lambda ms: recorded_with_verdict(ms) >= 3
                                and any(m.topic.endswith("/counters") for m in ms), timeout=30)
    late = Subscriber(broker.port, "inspect/L1/S1/gate/counters")  # retained for late joiners
    [retained] = late.wait_for(lambda ms: len(ms) >= 1)
    late.close()
    sub.close()
    order = [(m.topic.rsplit("/", 1)[1], json.loads(m.payload).get("frame_uid")) for m in messages]
    verdicts = {v["frame_uid"]: v for v in (json.loads(m.payload) for m in messages
                                            if m.topic == "inspect/L1/S1/gate/verdict")}
    # frames inspected before the publisher's first connection have no verdict (QoS 0 is never queued)
    both = [r for r in records(messages) if r["frame_uid"] in verdicts]
    for record in both:
        uid = record["frame_uid"]
        assert order.index(("verdict", uid)) < order.index(("inspection", uid))
    first = both[0]
    mine = verdicts[first["frame_uid"]]
    assert mine["provisional"] is True and mine["verdict"] == first["verdict"]
    assert (mine["camera_id"], mine["line"], mine["station"]) == ("gate", "L1", "S1")
    assert mine["defect_count"] == sum(mine["defects"].values()) == len(first["defects"])
    assert mine["captured_at"] <= mine["inferred_at"]
    counters = json.loads(retained.payload)
    assert retained.retain and counters["camera_id"] == "gate" and counters["inspected"] >= 1
    assert 0.0 <= counters["yield"] <= 1.0 and counters["shift_started_at"]


def test_a_restart_in_the_middle_of_a_shift_keeps_its_counters(app_settings, broker: Broker) -> None:
    """The counters come from the database at start: after a restart (and a broker that lost its
    retained messages) the camera's counters still hold what the shift stored before."""
    broker.start()
    with mqtt_app(app_settings, broker.port) as client:
        post(client, 255, "cam1", "P-1")
        post(client, 0, "cam1", "P-2")
        wait_until(lambda: client.get("/api/v1/cameras").json()["mqtt"]["queued"] == 0
                   and client.get("/api/v1/cameras").json()["mqtt"]["published"] >= 3)
    broker.stop()
    broker.start()  # no persistence: nothing retained any more
    with mqtt_app(app_settings, broker.port):
        sub = Subscriber(broker.port, "inspect/+/+/cam1/counters")
        [message] = sub.wait_for(lambda ms: len(ms) >= 1)[:1]
        sub.close()
    counters = json.loads(message.payload)
    assert (counters["inspected"], counters["ng"], counters["yield"]) == (2, 1, 0.5)
    assert (counters["camera_id"], counters["line"], counters["station"]) == ("cam1", "L1", "S1")


def test_a_tracked_defect_arrives_once_on_its_defect_topic_after_its_best_frame(
        app_settings, broker: Broker, tmp_path: Path) -> None:
    """A camera with tracking: one message per physical defect on the camera's ``defect`` topic (QoS 1,
    not retained) when its track is stored, after its best frame's inspection, as GET /tracks/{id}
    shows it; the counters count it. A posted frame is announced as before, with no defect message."""
    from fastapi.testclient import TestClient
    from track_helpers import BEST, GONE, LEVELS, ending_strip_cameras, standing_strip, strip_frame_uids

    from app.main import create_app

    broker.start()
    frames = standing_strip(tmp_path / "frames", GONE)
    cams = ending_strip_cameras(frames, tmp_path / "cameras.yaml")
    uids = strip_frame_uids(frames)
    sub = Subscriber(broker.port, "inspect/L1/_/strip/#")
    defect_topic = "inspect/L1/_/strip/defect"
    with mqtt_app(app_settings.model_copy(update={"cameras_file": cams}), broker.port) as client:
        messages = sub.wait_for(lambda ms: any(m.topic == defect_topic for m in ms)
                                and sum(m.topic.endswith("/inspection") for m in ms) == len(GONE)
                                and any(m.topic.endswith("/counters")  # counted after it is sent
                                        and json.loads(m.payload).get("tracked_defects") == 1 for m in ms))
        posted = client.post("/api/v1/inspections?camera_id=strip&line=L1",
                             content=jpeg_bytes(255, h=64, w=64),
                             headers={"content-type": "image/jpeg"}).json()
        after = sub.wait_for(lambda ms: any(json.loads(m.payload).get("id") == posted["id"]
                                            for m in ms if m.topic.endswith("/inspection")))
    sub.close()
    assert [m.topic for m in after].count(defect_topic) == 1  # the posted frame is no tracked defect
    [msg] = [m for m in messages if m.topic == defect_topic]
    body = json.loads(msg.payload)
    assert not msg.retain
    records = {r["frame_uid"]: r for r in (json.loads(m.payload) for m in messages
                                           if m.topic.endswith("/inspection"))}
    best = records[uids[BEST]]
    assert (body["class_name"], body["frames_seen"], body["camera_id"], body["line"]) == \
        ("patches", len(LEVELS), "strip", "L1")
    assert body["inspection_id"] == best["id"] and body["best_frame_uid"] == best["frame_uid"]
    assert (body["first_frame_uid"], body["last_frame_uid"]) == (uids[0], uids[len(LEVELS) - 1])
    assert body["position_mm"] == [pytest.approx(v * 0.5, abs=1e-3) for v in body["position_px"]]
    order = [(m.topic.rsplit("/", 1)[1], json.loads(m.payload).get("id")) for m in messages]
    assert order.index(("inspection", best["id"])) < order.index(("defect", body["id"]))
    counters = [json.loads(m.payload) for m in messages if m.topic.endswith("/counters")]
    assert counters[-1]["tracked_defects"] == 1
    with TestClient(create_app(app_settings)) as client:
        shown = client.get(f"/api/v1/tracks/{body['id']}").json()
    assert body == {key: shown[key] for key in body}
