"""The line says which part is under a camera over its own channels: an MQTT command on the camera's
``part/set`` topic (a real Mosquitto broker) and the camera's OPC UA ``SetPart`` method (a real
asyncua client). Malformed commands are refused and counted, never fatal: the next one still works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mqtt_helpers import Broker, Subscriber, free_port, wait_until

from app import metrics

CAMERA = "coil"


def service_with_camera(app_settings, neu_sample: Path, tmp_path: Path, **overrides: Any):
    """The service (TestClient) running camera ``coil`` on line L1, station top (a paced simulator)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    source = f"sim://neu-det?images={neu_sample / 'images'}&fps=30&width=160&height=120&realtime=true"
    cams = tmp_path / "cameras.yaml"
    cams.write_text(f'cameras:\n  - id: {CAMERA}\n    line: L1\n    station: top\n    source: "{source}"\n')
    return TestClient(create_app(app_settings.model_copy(update={"cameras_file": cams} | overrides)))


def current_part(client) -> dict | None:
    [cam] = client.get("/api/v1/cameras").json()["cameras"]
    return cam["part"]


def part_id(client) -> str | None:
    part = current_part(client)
    return None if part is None else part["part_id"]


def refused(via: str) -> float:
    return metrics.REGISTRY.get_sample_value("inspect_part_commands_total",
                                             {"via": via, "outcome": "refused"}) or 0.0


# -- MQTT ------------------------------------------------------------------------------------------
TOPIC = f"inspect/L1/top/{CAMERA}/part/set"


@pytest.fixture
def broker(tmp_path: Path):
    pytest.importorskip("paho.mqtt", reason="paho-mqtt is not installed (the `mqtt` extra)")
    b = Broker(tmp_path)
    yield b.start()
    b.stop()


def publish(port: int, payload: bytes, retain: bool = False) -> None:
    from paho.mqtt import publish as paho_publish

    paho_publish.single(TOPIC, payload, qos=1, retain=retain, hostname="127.0.0.1", port=port)


def test_the_part_is_set_and_ended_on_the_cameras_command_topic(app_settings, neu_sample, tmp_path,
                                                                broker: Broker) -> None:
    publish(broker.port, b"COIL-R", retain=True)  # the line's retained word, there before the service
    watcher = Subscriber(broker.port, "inspect/availability/#")
    states = Subscriber(broker.port, f"inspect/L1/top/{CAMERA}/state")
    mqtt = {"mqtt_host": "127.0.0.1", "mqtt_port": broker.port, "mqtt_client_id": "parts-test"}
    with service_with_camera(app_settings, neu_sample, tmp_path, **mqtt) as client:
        watcher.wait_for(lambda ms: any(m.payload == b"online" for m in ms))  # subscribed by now
        wait_until(lambda: part_id(client) == "COIL-R")
        assert current_part(client)["set_by"] == "mqtt"

        publish(broker.port, b'{"part_id": "COIL-8"}')
        wait_until(lambda: part_id(client) == "COIL-8")
        since = current_part(client)["since"]
        # the camera's retained state follows the part, however it was set
        states.wait_for(lambda ms: any((json.loads(m.payload).get("part") or {}).get("part_id") == "COIL-8"
                                       for m in ms))

        before = refused("mqtt")
        for bad in (b"\xff\xfe", b'{"part_id": 5}', b"{not json", b'{"id": "x"}', b"C\x00D",
                    b"x" * 129, b"line\nbreak"):
            publish(broker.port, bad)
        wait_until(lambda: refused("mqtt") - before == 7)
        assert current_part(client) == {"part_id": "COIL-8", "since": since, "set_by": "mqtt"}

        publish(broker.port, b"COIL-8")  # the same part again: its start stays
        publish(broker.port, b"")  # an empty message (clearing a retained one) ends the part
        wait_until(lambda: current_part(client) is None)
        publish(broker.port, b'{"part_id": "COIL-9"}')
        wait_until(lambda: part_id(client) == "COIL-9")
        publish(broker.port, b'{"part_id": null}')
        wait_until(lambda: current_part(client) is None)
        assert refused("mqtt") - before == 7
        states.wait_for(lambda ms: json.loads(ms[-1].payload)["part"] is None)
    watcher.close()
    states.close()


# -- OPC UA ----------------------------------------------------------------------------------------
def test_the_part_is_set_and_ended_with_the_cameras_opcua_method(app_settings, neu_sample, tmp_path) -> None:
    pytest.importorskip("asyncua", reason="asyncua is not installed (the `opcua` extra)")
    from asyncua import ua
    from asyncua.sync import Client, ThreadLoop

    port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/inspect/"
    with service_with_camera(app_settings, neu_sample, tmp_path, opcua_endpoint=endpoint) as http, \
            ThreadLoop(timeout=10) as tloop:
        client = Client(endpoint, timeout=10, tloop=tloop)
        client.connect()
        try:
            ns = client.get_namespace_index("urn:defect-inspect")
            camera = client.get_node(ua.NodeId(f"DefectInspection/Cameras/{CAMERA}", ns))
            method = ua.NodeId(f"DefectInspection/Cameras/{CAMERA}/SetPart", ns)
            shown = client.get_node(ua.NodeId(f"DefectInspection/Cameras/{CAMERA}/PartId", ns))
            assert camera.call_method(method, "COIL-1") is None
            assert current_part(http)["part_id"] == "COIL-1"  # set before the call answers
            assert current_part(http)["set_by"] == "opcua:anonymous"
            wait_until(lambda: shown.read_value() == "COIL-1", timeout=10)
            assert http.put(f"/api/v1/cameras/{CAMERA}/part", json={"part_id": "COIL-2"}).status_code == 200
            wait_until(lambda: shown.read_value() == "COIL-2", timeout=10)  # however the line said it
            before = refused("opcua")
            for bad in ("C\x00D", "x" * 129, "tab\there"):
                with pytest.raises(ua.UaStatusCodeError) as error:
                    camera.call_method(method, bad)
                assert error.value.code == ua.StatusCodes.BadInvalidArgument
            assert refused("opcua") - before == 3 and part_id(http) == "COIL-2"
            camera.call_method(method, "")  # an empty id: the part ended
            assert current_part(http) is None
            wait_until(lambda: shown.read_value() == "", timeout=10)
        finally:
            client.disconnect()
