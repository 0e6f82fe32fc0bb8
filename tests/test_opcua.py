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
        # Inspected is seeded from the shift's rows already in the database (a re-run on one database):
        # wait for results of this run, i.e. a LastResult written
        verdict = node(client, ns, "cam-9", "ResultManagement", "LastResult", "Verdict")
        wait_until(lambda: readable(verdict) in ("OK", "NG"))
        assert (readable(node(client, ns, "cam-9", "Inspected")) or 0) >= 1
        assert node(client, ns, "cam-9", "CameraUp").read_value() is True
        where = [node(client, ns, "cam-9", name).read_value() for name in ("Line", "Station")]
        assert where == ["L9", "top"]
        result_id = node(client, ns, "cam-9", "ResultManagement", "LastResult", "ResultId").read_value()
        assert result_id.isdigit()


# -- certificates, the Acknowledge method, the provisional verdict ----------------------------------------
def make_certificate(folder, name: str) -> tuple[Any, Any]:
    """A self-signed certificate (PEM) and its private key (PEM) for ``name`` in ``folder``."""
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {"commonName": name}, [x509.UniformResourceIdentifier(f"urn:{name}")],
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH])
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_file.write_bytes(cert.public_bytes(Encoding.PEM))
    key_file.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_file, key_file


@contextmanager
def connected_with_certificate(port: int, cert_file, key_file) -> Iterator[Client]:
    with ThreadLoop(timeout=10) as tloop:
        client = Client(f"opc.tcp://127.0.0.1:{port}/inspect/", timeout=10, tloop=tloop)
        client.load_client_certificate(str(cert_file))
        client.load_private_key(str(key_file))
        client.connect()
        try:
            yield client
        finally:
            client.disconnect()


def test_a_trusted_user_certificate_logs_in_and_others_are_refused(app_settings, tmp_path) -> None:
    server_cert, server_key = make_certificate(tmp_path, "inspect-server")
    trusted_cert, trusted_key = make_certificate(tmp_path, "line-plc")
    stranger_cert, stranger_key = make_certificate(tmp_path, "stranger")
    port = free_port()
    with opcua_app(app_settings, port, opcua_security=["none", "sign"], opcua_cert_file=server_cert,
                   opcua_key_file=server_key, opcua_user_certs=[trusted_cert]):
        with connected_with_certificate(port, trusted_cert, trusted_key) as client:
            assert client.get_namespace_index(NAMESPACE) > 0
        with pytest.raises(ua.UaError), connected_with_certificate(port, stranger_cert, stranger_key):
            pass
        with pytest.raises(ua.UaError), connected(port):  # no anonymous sessions once logins are set
            pass


def raise_alarm(database_url: str) -> int:
    from app.db.models import Alarm
    from app.db.session import Database

    db = Database(database_url)
    try:
        with db.session() as session:
            alarm = Alarm(rule_id="l1-run", condition="consecutive_ng", line="L1", camera_id="cam1",
                          message="3 NG frames in a row on L1", value=3.0, limit=3.0)
            session.add(alarm)
            session.commit()
            return alarm.id
    finally:
        db.dispose()


def test_an_alarm_is_acknowledged_through_the_method_with_the_session_user(app_settings) -> None:
    alarm_id = raise_alarm(app_settings.database_url)
    port = free_port()
    with opcua_app(app_settings, port, opcua_username="scada", opcua_password=SecretStr("s3cret")) as http, \
            connected(port, "scada", "s3cret") as client:
        ns = client.get_namespace_index(NAMESPACE)
        alarms = client.get_node(ua.NodeId("DefectInspection/Alarms", ns))
        method = ua.NodeId("DefectInspection/Alarms/Acknowledge", ns)
        by = alarms.call_method(method, ua.Variant(alarm_id, ua.VariantType.Int64), "lens cleaned")
        assert by == "opcua:scada"
        [stored] = http.get("/api/v1/alarms", params={"state": "all"}).json()["items"]  # durable, audited
        assert (stored["id"], stored["acknowledged_by"], stored["acknowledge_note"]) == \
            (alarm_id, "opcua:scada", "lens cleaned")
        assert stored["acknowledged_at"] is not None
        assert http.get("/api/v1/alarms").json()["items"] == []
        with pytest.raises(ua.UaStatusCodeError) as again:  # acknowledged before
            alarms.call_method(method, ua.Variant(alarm_id, ua.VariantType.Int64), "")
        assert again.value.code == ua.StatusCodes.BadInvalidState
        with pytest.raises(ua.UaStatusCodeError) as missing:
            alarms.call_method(method, ua.Variant(alarm_id + 1000, ua.VariantType.Int64), "")
        assert missing.value.code == ua.StatusCodes.BadNotFound


def test_a_camera_frame_shows_its_provisional_verdict_before_the_record(app_settings, neu_sample,
                                                                         tmp_path) -> None:
    """Each frame of a camera shows up on ProvisionalResult (FrameUid changes with every frame); the
    stored record of the same frame follows on LastResult."""
    source = f"sim://neu-det?images={neu_sample / 'images'}&fps=30&width=160&height=120&realtime=true"
    cams = tmp_path / "cameras.yaml"
    cams.write_text(f'cameras:\n  - id: gate\n    line: L2\n    source: "{source}"\n')
    port = free_port()
    settings = app_settings.model_copy(update={"cameras_file": cams})
    with opcua_app(settings, port) as http, connected(port) as client:
        ns = client.get_namespace_index(NAMESPACE)
        frame_uid = node(client, ns, "gate", "ProvisionalResult", "FrameUid")
        wait_until(lambda: bool(readable(frame_uid)))
        changes = Changes()
        sub = client.create_subscription(10, changes)
        sub.subscribe_data_change(frame_uid)
        seen = [changes.values.get(timeout=10) for _ in range(4)]
        assert len(set(seen)) == 4  # one notification per frame
        verdict = node(client, ns, "gate", "ProvisionalResult", "Verdict").read_value()
        assert verdict in ("OK", "NG")
        captured = node(client, ns, "gate", "ProvisionalResult", "CaptureTime").read_value()
        inferred = node(client, ns, "gate", "ProvisionalResult", "InferenceTime").read_value()
        assert captured <= inferred
        wait_until(lambda: http.get(f"/api/v1/inspections/by-frame/{seen[0]}").status_code == 200)
        record = http.get(f"/api/v1/inspections/by-frame/{seen[0]}").json()
        assert record["camera_id"] == "gate"
        sub.delete()


def test_counters_count_the_current_shift_and_survive_a_restart(app_settings) -> None:
    port = free_port()
    with opcua_app(app_settings, port) as http:
        post(http, 255, "cam1", "P-1")
        post(http, 0, "cam1", "P-2")
        with connected(port) as client:
            ns = client.get_namespace_index(NAMESPACE)
            wait_until(lambda: readable(node(client, ns, "cam1", "Inspected")) == 2)
    port = free_port()
    with opcua_app(app_settings, port), connected(port) as client:
        ns = client.get_namespace_index(NAMESPACE)
        wait_until(lambda: readable(node(client, ns, "cam1", "Inspected")) == 2)  # read from the database
        assert node(client, ns, "cam1", "NG").read_value() == 1
        assert node(client, ns, "cam1", "Yield").read_value() == pytest.approx(0.5)
        shift_start = node(client, ns, "cam1", "ShiftStart").read_value()
        # the one shift start of the test settings (UTC), as a time of day
        assert f"{shift_start.hour:02d}:{shift_start.minute:02d}" == app_settings.shifts[0]


def test_a_tracked_defect_shows_on_last_defect_and_is_counted_in_the_shift(app_settings, tmp_path) -> None:
    """A camera with tracking: its last tracked defect on LastDefect (TrackId written last), as GET
    /tracks/{id} shows it, and TrackedDefects counts it, also after a restart (read from the database)."""
    from track_helpers import BEST, GONE, LEVELS, ending_strip_cameras, standing_strip, strip_frame_uids

    frames = standing_strip(tmp_path / "frames", GONE)
    settings = app_settings.model_copy(update={
        "cameras_file": ending_strip_cameras(frames, tmp_path / "cameras.yaml")})
    uids = strip_frame_uids(frames)
    port = free_port()
    with opcua_app(settings, port) as http, connected(port) as client:
        ns = client.get_namespace_index(NAMESPACE)
        track_id = node(client, ns, "strip", "LastDefect", "TrackId")
        wait_until(lambda: bool(readable(track_id)))
        last = {name: node(client, ns, "strip", "LastDefect", name).read_value()
                for name in ("ResultId", "PartId", "ClassName", "Confidence", "FramesSeen", "FirstFrameUid",
                             "LastFrameUid", "PositionPx", "PositionMm", "DefectContent")}
        shown = http.get(f"/api/v1/tracks/{track_id.read_value()}").json()
        best = http.get(f"/api/v1/inspections/by-frame/{uids[BEST]}").json()
        assert node(client, ns, "strip", "TrackedDefects").read_value() == 1
        wait_until(lambda: readable(node(client, ns, "strip", "Inspected")) == len(GONE))
    assert (last["ResultId"], last["PartId"], last["ClassName"], last["FramesSeen"]) == \
        (str(best["id"]), "", "patches", len(LEVELS))
    assert (last["FirstFrameUid"], last["LastFrameUid"]) == (uids[0], uids[len(LEVELS) - 1])
    assert last["Confidence"] == pytest.approx(shown["confidence"])
    assert last["PositionPx"] == shown["position_px"] and last["PositionMm"] == shown["position_mm"]
    assert json.loads(last["DefectContent"]) == {key: shown[key] for key in json.loads(last["DefectContent"])}
    port = free_port()
    with opcua_app(app_settings, port), connected(port) as client:
        ns = client.get_namespace_index(NAMESPACE)
        wait_until(lambda: readable(node(client, ns, "strip", "TrackedDefects")) == 1)  # from the database
        assert node(client, ns, "strip", "Inspected").read_value() == len(GONE)
