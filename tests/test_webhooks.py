"""Webhooks: signed deliveries to a real local HTTP receiver, retries with backoff on 500, a delivery
log, and a slow or dead receiver that never holds up POST /inspections."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mes_helpers import assert_problem, jpeg_bytes, seed_database
from sqlalchemy import select

from app.db.models import Webhook, WebhookDelivery
from app.db.session import Database
from app.webhook_targets import TargetPolicy
from app.webhooks import DeliveryPolicy, DeliveryWorker, enqueue_event, sign, verify

SECRET = "s3cret-for-tests-0123456789"
# The receivers here listen on loopback, which the service refuses by default: a lab set-up allows it.
LAB = TargetPolicy.of(refused=())


@pytest.fixture
def app_settings(app_settings):
    return app_settings.model_copy(update={"webhook_refused_networks": []})


class Receiver:
    """A tiny HTTP server on 127.0.0.1 that records every POST and answers with the next status of
    ``statuses`` (the last one repeats). With ``hold`` set, each request waits until it is released."""

    def __init__(self, statuses: list[int] | None = None, hold: bool = False) -> None:
        self.statuses = list(statuses or [200])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                receiver.arrived.set()
                receiver.release.wait(30)
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll until ``predicate()`` is truthy (waiting for background work, not measuring it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def bright_post(client, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    resp = client.post(f"/api/v1/inspections?{query}", content=jpeg_bytes(255),
                       headers={"content-type": "image/jpeg"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["verdict"] == "NG"
    return resp.json()


# -- signing --------------------------------------------------------------------------------------

def test_signature_is_hmac_sha256_of_the_raw_body():
    body = b'{"event":"inspection.ng","id":1}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body) == f"sha256={expected}"
    assert verify(SECRET, body, f"sha256={expected}")
    assert not verify(SECRET, body + b" ", f"sha256={expected}")
    assert not verify("other-secret", body, f"sha256={expected}")


def test_backoff_doubles_up_to_a_cap():
    p = DeliveryPolicy(backoff_base_s=2.0, backoff_max_s=30.0)
    assert [p.backoff(n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


# -- end to end through the app -------------------------------------------------------------------

def test_ng_inspection_is_delivered_signed(client, receiver):
    hook = client.post("/api/v1/webhooks", json={"url": receiver.url, "events": ["inspection.ng"],
                                                 "secret": SECRET})
    assert hook.status_code == 201, hook.text
    assert hook.json()["secret"] == SECRET
    hook_id = hook.json()["id"]
    assert "secret" not in client.get("/api/v1/webhooks").json()["items"][0]

    ok = client.post("/api/v1/inspections", content=jpeg_bytes(0, h=64, w=64),
                     headers={"content-type": "image/jpeg"})
    assert ok.json()["verdict"] == "OK"
    inspection = bright_post(client, camera_id="cam-w", part_id="PW1")
    wait_for(lambda: receiver.requests, what="the delivery")
    headers, body = receiver.requests[0]
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-inspect-signature"] == f"sha256={digest}"
    assert headers["x-inspect-event"] == "inspection.ng"
    doc = json.loads(body)
    assert doc["event"] == "inspection.ng" and str(doc["id"]) == headers["x-inspect-delivery"]
    assert doc["data"]["id"] == inspection["id"] and doc["data"]["verdict"] == "NG"
    assert doc["data"]["part_id"] == "PW1" and doc["data"]["defects"][0]["class_name"] == "patches"

    log = wait_for(lambda: [d for d in client.get(f"/api/v1/webhooks/{hook_id}/deliveries").json()["items"]
                            if d["status"] == "delivered"], what="the delivery log")
    assert len(log) == 1  # only the NG inspection was sent
    assert log[0]["attempts"] == 1 and log[0]["last_status_code"] == 200


def test_defect_review_event(client, app_settings, receiver):
    seed_database(app_settings.database_url, app_settings.data_dir)
    client.post("/api/v1/webhooks",
                json={"url": receiver.url, "events": ["defect.reviewed"], "secret": SECRET})
    did = client.get("/api/v1/defects?limit=1").json()["items"][0]["id"]
    client.post(f"/api/v1/defects/{did}/review", json={"action": "reclassify", "class_name": "scratches"})
    wait_for(lambda: receiver.requests, what="the delivery")
    headers, body = receiver.requests[0]
    assert verify(SECRET, body, headers["x-inspect-signature"])
    data = json.loads(body)["data"]
    assert (headers["x-inspect-event"], data["id"], data["review_status"], data["reviewed_class_name"],
            data["action"]) == ("defect.reviewed", did, "reclassified", "scratches", "reclassify")


def test_dead_or_hanging_receivers_do_not_hold_up_inspections(client, app_settings):
    hanging = Receiver(hold=True)
    try:
        for url in (hanging.url, dead_url()):
            client.post("/api/v1/webhooks", json={"url": url, "events": ["inspection.ng"]})
        bright_post(client)
        wait_for(hanging.arrived.is_set, what="the worker to reach the hanging receiver")
        # The worker is now stuck inside the hanging receiver: inspections must still be answered.
        second = bright_post(client)
        third = bright_post(client)
        assert not hanging.release.is_set() and len(hanging.requests) == 1
        db = Database(app_settings.database_url)
        with db.session() as session:
            queued = session.scalars(select(WebhookDelivery).where(WebhookDelivery.status == "pending")).all()
            ids = {d.payload["id"] for d in queued}
        db.dispose()
        assert {second["id"], third["id"]} <= ids  # queued, waiting for the worker
    finally:
        hanging.close()


def test_delete_deactivates_and_keeps_the_log(client, receiver):
    body = {"url": receiver.url, "events": ["inspection.ng"]}
    hook_id = client.post("/api/v1/webhooks", json=body).json()["id"]
    assert client.delete(f"/api/v1/webhooks/{hook_id}").status_code == 204
    assert client.get("/api/v1/webhooks").json()["items"] == []
    assert client.get("/api/v1/webhooks?include_inactive=true").json()["items"][0]["active"] is False
    assert client.get(f"/api/v1/webhooks/{hook_id}/deliveries").json()["items"] == []
    bright_post(client)  # no active hook: nothing queued
    assert client.get(f"/api/v1/webhooks/{hook_id}/deliveries").json()["items"] == []
    assert_problem(client.delete("/api/v1/webhooks/999"), 404)
    assert_problem(client.get("/api/v1/webhooks/999/deliveries"), 404)


@pytest.mark.parametrize("body", [
    {"url": "ftp://example.test/x", "events": ["inspection.ng"]},
    {"url": "not a url", "events": ["inspection.ng"]},
    {"url": "http://127.0.0.1:9/x", "events": ["inspection.ok"]},
    {"url": "http://127.0.0.1:9/x", "events": []},
    {"url": "http://127.0.0.1:9/x", "events": ["inspection.ng"], "secret": "short"},
])
def test_bad_webhooks_are_422(client, body):
    assert_problem(client.post("/api/v1/webhooks", json=body), 422)


# -- the worker on its own ------------------------------------------------------------------------

def _queue(db: Database, url: str, n: int = 1) -> int:
    with db.session() as session:
        hook = Webhook(url=url, events=["inspection.ng"], secret=SECRET, active=True)
        session.add(hook)
        session.flush()
        for i in range(n):
            enqueue_event(session, "inspection.ng", {"id": i + 1, "verdict": "NG"})
        session.commit()
        return hook.id


def _deliveries(db: Database) -> list[WebhookDelivery]:
    with db.session() as session:
        rows = list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        session.expunge_all()
        return rows


def test_retries_on_500_until_delivered(database_url):
    receiver = Receiver(statuses=[500, 503, 200])
    db = Database(database_url)
    try:
        _queue(db, receiver.url)
        worker = DeliveryWorker(db.sessionmaker, DeliveryPolicy(backoff_base_s=0.0), targets=LAB)
        try:
            assert worker.run_once() == 1
            [d] = _deliveries(db)
            assert (d.status, d.attempts, d.last_status_code, d.last_error) == ("pending", 1, 500, "HTTP 500")
            worker.run_once()
            worker.run_once()
            [d] = _deliveries(db)
            assert (d.status, d.attempts, d.last_status_code) == ("delivered", 3, 200)
            assert worker.run_once() == 0
        finally:
            worker.stop()
        bodies = [b for _, b in receiver.requests]
        assert len(bodies) == 3 and len(set(bodies)) == 1  # the same signed body on every try
        assert all(verify(SECRET, b, h["x-inspect-signature"]) for h, b in receiver.requests)
    finally:
        receiver.close()
        db.dispose()


def test_failed_attempt_is_scheduled_later_and_gives_up(database_url):
    db = Database(database_url)
    try:
        _queue(db, dead_url())
        worker = DeliveryWorker(db.sessionmaker, DeliveryPolicy(timeout_s=1.0, backoff_base_s=60.0,
                                                                max_attempts=2), targets=LAB)
        try:
            before = datetime.now(UTC)
            worker.run_once()
            [d] = _deliveries(db)
            nxt = d.next_attempt_at if d.next_attempt_at.tzinfo else d.next_attempt_at.replace(tzinfo=UTC)
            assert d.status == "pending" and d.attempts == 1 and d.last_status_code is None
            assert "Connect" in d.last_error
            assert nxt >= before + timedelta(seconds=59)
            assert worker.run_once() == 0  # not due yet
            with db.session() as session:
                session.get(WebhookDelivery, d.id).next_attempt_at = before
                session.commit()
            worker.run_once()
            [d] = _deliveries(db)
            assert (d.status, d.attempts) == ("failed", 2)
        finally:
            worker.stop()
    finally:
        db.dispose()


def test_worker_thread_delivers_in_the_background(database_url, receiver):
    db = Database(database_url)
    try:
        _queue(db, receiver.url, n=3)
        worker = DeliveryWorker(db.sessionmaker, targets=LAB, poll_interval_s=0.05)
        worker.start()
        try:
            wait_for(lambda: all(d.status == "delivered" for d in _deliveries(db)), what="3 deliveries")
        finally:
            worker.stop()
        assert sorted(json.loads(b)["data"]["id"] for _, b in receiver.requests) == [1, 2, 3]
    finally:
        db.dispose()


def test_two_workers_on_one_database_never_send_the_same_delivery(database_url, receiver):
    """Two service processes share one database and one webhook: each delivery is claimed before it
    is sent, so the receiver sees every delivery exactly once (SQLite and PostgreSQL)."""
    db = Database(database_url)
    try:
        _queue(db, receiver.url, n=40)
        workers = [DeliveryWorker(db.sessionmaker, DeliveryPolicy(batch_size=40), targets=LAB)
                   for _ in range(2)]
        start = threading.Barrier(2)
        sent: list[int] = [0, 0]

        def run(k: int) -> None:
            start.wait()
            while (done := workers[k].run_once()) > 0:
                sent[k] += done

        threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        ids = [headers["x-inspect-delivery"] for headers, _ in receiver.requests]
        assert len(ids) == 40 and len(set(ids)) == 40, sorted(ids)  # every delivery, none twice
        assert sum(sent) == 40
        assert all(d.status == "delivered" and d.attempts == 1 for d in _deliveries(db))
        for w in workers:
            w.stop()
    finally:
        db.dispose()
