"""The OPC UA server with a real asyncua client: the documented node ids, a subscription that sees
each new verdict, the ResultReady event, counters, and the user/password login."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from mes_helpers import jpeg_bytes
from mqtt_helpers import free_port, wait_until
from pydantic import SecretStr

pytest.importorskip("asyncua", reason="asyncua is not installed (the `opcua` extra)")

from asyncua import ua  # noqa: E402
from asyncua.sync import Client, ThreadLoop  # noqa: E402

NAMESPACE = "urn:defect-inspect"


def opcua_app(app_settings, port: int, **overrides: Any):
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = app_settings.model_copy(update={"opcua_endpoint": f"opc.tcp://127.0.0.1:{port}/inspect/"}
                                       | overrides)
    return TestClient(create_app(settings))


def post(client, value: int, camera: str, part: str) -> dict:
    resp = client.post(f"/api/v1/inspections?camera_id={camera}&line=L1&station=S1&part_id={part}",
                       content=jpeg_bytes(value, h=64, w=64), headers={"content-type": "image/jpeg"})
    assert resp.status_code == 201, resp.text
    return resp.json()


class Changes:
    """asyncua subscription handler: data changes and events, in arrival order."""

    def __init__(self) -> None:
        self.values: queue.Queue = queue.Queue()
        self.events: queue.Queue = queue.Queue()

    def datachange_notification(self, node, val, data) -> None:
        self.values.put(val)

    def event_notification(self, event) -> None:
        fields = event.get_event_props_as_fields_dict()
        self.events.put({name: variant.Value for name, variant in fields.items()})


@contextmanager
def connected(port: int, user: str | None = None, password: str | None = None) -> Iterator[Client]:
    # the client's event-loop thread is ours: stopped also when the connection is refused (a thread left
    # running keeps the test process from exiting)
    with ThreadLoop(timeout=10) as tloop:
        client = Client(f"opc.tcp://127.0.0.1:{port}/inspect/", timeout=10, tloop=tloop)
        if user:
            client.set_user(user)
            client.set_password(password or "")
        client.connect()
        try:
            yield client
        finally:
            client.disconnect()


def readable(n) -> Any:
    """The node's value; None while the node does not exist yet."""
    try:
        return n.read_value()
    except ua.UaStatusCodeError:
        return None


def node(client: Client, ns: int, camera: str, *path: str):
    return client.get_node(ua.NodeId("/".join(("DefectInspection", "Cameras", camera, *path)), ns))


def test_a_subscription_sees_each_new_verdict_and_result(app_settings) -> None:
    port = free_port()
    with opcua_app(app_settings, port) as http, connected(port) as client:
        ns = client.get_namespace_index(NAMESPACE)
        first = post(http, 255, "cam1", "P-1")  # the camera's nodes appear with its first result
        wait_until(lambda: readable(node(client, ns, "cam1", "Inspected")) == 1)
        verdict = node(client, ns, "cam1", "ResultManagement", "LastResult", "Verdict")
        changes = Changes()
        sub = client.create_subscription(20, changes)
        sub.subscribe_data_change(verdict)
        sub.subscribe_events(client.get_node(ua.NodeId("DefectInspection", ns)),
                             client.get_node(ua.NodeId("DefectInspection/ResultReadyEventType", ns)))
        assert changes.values.get(timeout=10) == "NG"  # the current value on subscribing
        second = post(http, 0, "cam1", "P-2")
        assert changes.values.get(timeout=10) == "OK"
        event = changes.events.get(timeout=10)
        assert [event[k] for k in ("ResultId", "PartId", "Verdict", "CameraId", "ResultState")] == \
            [str(second["id"]), "P-2", "OK", "cam1", 1]
        last = {name: node(client, ns, "cam1", "ResultManagement", "LastResult", name).read_value()
                for name in ("ResultId", "PartId", "DefectCount", "DefectClasses", "ResultContent")}
        assert (last["ResultId"], last["PartId"], last["DefectCount"]) == (str(second["id"]), "P-2", 0)
        assert json.loads(last["ResultContent"])["id"] == second["id"]
        assert node(client, ns, "cam1", "Inspected").read_value() == 2
        assert node(client, ns, "cam1", "NG").read_value() == 1
        assert node(client, ns, "cam1", "Yield").read_value() == pytest.approx(0.5)
        assert node(client, ns, "cam1", "ModelVersion").read_value() == first["model_version"]
        assert node(client, ns, "cam1", "Line").read_value() == "L1"
        sub.delete()


def test_only_the_configured_user_may_connect(app_settings) -> None:
    port = free_port()
    with opcua_app(app_settings, port, opcua_username="scada", opcua_password=SecretStr("s3cret")):
        with connected(port, "scada", "s3cret") as client:
            assert client.get_namespace_index(NAMESPACE) > 0
        with pytest.raises(ua.UaError), connected(port, "scada", "wrong"):
            pass
        with pytest.raises(ua.UaError), connected(port):
            pass


def test_a_camera_of_the_cameras_file_shows_up_with_its_results(app_settings, neu_sample, tmp_path) -> None:
    source = (f"sim://neu-det?images={neu_sample / 'images'}&fps=30&width=160&height=120&realtime=true")
    cams = tmp_path / "cameras.yaml"
    cams.write_text(f'cameras:\n  - id: cam-9\n    line: L9\n    station: top\n    source: "{source}"\n')
    port = free_port()
    with opcua_app(app_settings.model_copy(update={"cameras_file": cams}), port), connected(port) as client:
        ns = client.get_namespace_index(NAMESPACE)
        wait_until(lambda: (readable(node(client, ns, "cam-9", "Inspected")) or 0) >= 3)
        assert node(client, ns, "cam-9", "CameraUp").read_value() is True
        where = [node(client, ns, "cam-9", name).read_value() for name in ("Line", "Station")]
        assert where == ["L9", "top"]
        verdict = node(client, ns, "cam-9", "ResultManagement", "LastResult", "Verdict")
        assert verdict.read_value() in ("OK", "NG")
