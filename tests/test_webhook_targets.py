"""Webhooks never target the service itself, its host or the cloud metadata service: refused at
registration and again before each send, after name resolution (numeric host forms included)."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from mes_helpers import assert_problem
from sqlalchemy import select

from app.db.models import Webhook, WebhookDelivery
from app.db.session import Database
from app.webhook_targets import RefusedTarget, TargetPolicy
from app.webhooks import DeliveryPolicy, DeliveryWorker, enqueue_event

REFUSED_URLS = [
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://localhost:6379/",  # a name that resolves to loopback
    "http://[::1]:22/",
    "http://0x7f000001/",  # 127.0.0.1 in hex, as the resolver reads it
    "http://127.1/",  # 127.0.0.1 shortened
    "http://2130706433/",  # 127.0.0.1 as one number
    "http://0.0.0.0:8000/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://[fe80::1]/",
    "http://224.0.0.1/",
]


@pytest.mark.drill
@pytest.mark.parametrize("url", REFUSED_URLS)
def test_registering_a_loopback_link_local_or_metadata_target_is_a_422(client, url: str) -> None:
    resp = client.post("/api/v1/webhooks", json={"url": url, "events": ["inspection.ng"]})
    body = assert_problem(resp, 422)
    assert "does not send to" in body["detail"]
    assert client.get("/api/v1/webhooks").json()["items"] == []


@pytest.mark.parametrize("address", ["10.1.2.3", "172.16.0.9", "192.168.10.20", "fd12::5", "8.8.8.8"])
def test_plant_lan_and_public_addresses_are_permitted_by_default(address: str) -> None:
    assert TargetPolicy.of().permits(ipaddress.ip_address(address))


def test_the_allowed_networks_narrow_and_the_refused_networks_widen() -> None:
    plant_only = TargetPolicy.of(allowed=["10.0.0.0/8"])
    assert plant_only.permits(ipaddress.ip_address("10.9.9.9"))
    assert not plant_only.permits(ipaddress.ip_address("192.168.1.1"))
    lab = TargetPolicy.of(refused=[])
    assert lab.permits(ipaddress.ip_address("127.0.0.1"))
    with pytest.raises(RefusedTarget, match="10.0.0.0/8|does not send to"):
        plant_only.check("http://192.168.1.1/hook", resolve_required=True)


def test_a_bad_network_in_the_settings_names_the_variable(monkeypatch) -> None:
    from app.settings import SettingsError, load_settings

    monkeypatch.setenv("INSPECT_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/8,not-a-network")
    with pytest.raises(SettingsError, match="INSPECT_WEBHOOK_ALLOWED_NETWORKS"):
        load_settings()


def hook_and_event(db: Database, url: str, event_id: int) -> None:
    """A webhook stored as it is (registration's check bypassed: stored before the policy changed) and
    one queued event for every subscribed hook."""
    with db.session() as session:
        session.add(Webhook(url=url, events=["inspection.ng"], secret="s" * 20, active=True))
        session.commit()
        enqueue_event(session, "inspection.ng", {"id": event_id})
        session.commit()


@pytest.mark.drill
def test_a_target_refused_at_send_time_fails_without_a_connection(database_url: str) -> None:
    """A webhook stored before the policy forbade its target (or whose name now resolves to loopback)
    is not sent: the delivery fails with the reason, and no connection reaches the listener."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    db = Database(database_url)
    try:
        hook_and_event(db, f"http://localhost:{port}/hook", 1)
        worker = DeliveryWorker(db.sessionmaker)  # the default policy: loopback refused
        assert worker.run_once() == 1
        with db.session() as session:
            [delivery] = session.scalars(select(WebhookDelivery)).all()
            assert delivery.status == "failed" and "does not send to" in (delivery.last_error or "")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
        # the listener never answers: the permitted attempt times out after connecting
        lab = DeliveryWorker(db.sessionmaker, DeliveryPolicy(timeout_s=0.5),
                             targets=TargetPolicy.of(refused=[]))
        hook_and_event(db, f"http://127.0.0.1:{port}/hook", 2)
        lab.run_once()
        listener.setblocking(True)
        listener.settimeout(5)
        conn, _ = listener.accept()  # the permitted target was connected to: the check is what stopped it
        conn.close()
    finally:
        listener.close()
        db.dispose()
