"""Outgoing webhooks: events are queued as rows in ``webhook_deliveries`` inside the caller's
transaction (cheap: one small SELECT per batch and an INSERT per subscribed hook) and sent later by
:class:`DeliveryWorker`, a background thread with short timeouts and exponential backoff. A slow or dead
receiver therefore never slows the inspection path.

Every delivery is a POST of a JSON body ``{"id", "event", "created_at", "data"}`` with headers
``X-Inspect-Event``, ``X-Inspect-Delivery`` (the delivery id) and
``X-Inspect-Signature: sha256=<hex HMAC-SHA256 of the raw body with the hook's secret>``. The shapes
(body, payloads, delivery log) are the models of :mod:`app.schemas.webhooks`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.background import BackgroundLoop
from app.db.models import Defect, Inspection, Webhook, WebhookDelivery
from app.schemas import InspectionPublic
from app.schemas.webhooks import EVENTS, WebhookBody
from app.vocabulary import NG, utcnow
from app.webhook_targets import RefusedTarget, TargetPolicy

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Inspect-Signature"
EVENT_HEADER = "X-Inspect-Event"
DELIVERY_HEADER = "X-Inspect-Delivery"


def new_secret() -> str:
    return secrets.token_hex(32)


def sign(secret: str, body: bytes) -> str:
    """The value of the signature header for ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: recompute the HMAC over the raw body and compare in constant time."""
    return hmac.compare_digest(sign(secret, body), header or "")


def encode_body(delivery: WebhookDelivery) -> bytes:
    """The exact bytes sent (and signed); stable across retries of one delivery."""
    doc = WebhookBody(id=delivery.id, event=delivery.event, created_at=delivery.created_at,
                      data=delivery.payload).model_dump(mode="json")
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def inspection_payload(inspection: Inspection, defects: Iterable[Defect] | None = None) -> dict[str, Any]:
    """The ``inspection.ng`` payload of a persisted (flushed) inspection: its public model."""
    return InspectionPublic.from_row(inspection, defects).model_dump(mode="json")


def subscribers(session: Session, event: str) -> list[Webhook]:
    """The active hooks subscribed to ``event`` (one small SELECT, in the caller's transaction)."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    hooks = session.scalars(select(Webhook).where(Webhook.active.is_(True))).all()
    return [h for h in hooks if event in (h.events or ())]


def queue_deliveries(session: Session, hooks: Iterable[Webhook], event: str,
                     payload: dict[str, Any]) -> list[WebhookDelivery]:
    """Queue ``event`` for each of ``hooks`` (from :func:`subscribers`) in the caller's transaction."""
    now = utcnow()
    rows = [
        WebhookDelivery(webhook_id=h.id, event=event, payload=payload, status="pending", attempts=0,
                        created_at=now, next_attempt_at=now)
        for h in hooks
    ]
    session.add_all(rows)
    return rows


def enqueue_event(session: Session, event: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """Queue ``event`` for every active hook subscribed to it, in the caller's transaction (the caller
    commits). Returns the queued rows (none when nobody listens)."""
    return queue_deliveries(session, subscribers(session, event), event, payload)


def enqueue_inspection(session: Session, inspection: Inspection,
                       hooks: Iterable[Webhook] | None = None) -> list[WebhookDelivery]:
    """Queue ``inspection.ng`` for an NG inspection (no-op for OK). The inspection must be flushed.
    ``hooks``: the subscribers of ``inspection.ng`` when the caller already has them (a batch asks
    once); the payload is only built when someone listens."""
    if inspection.verdict != NG:
        return []
    listeners = list(subscribers(session, "inspection.ng") if hooks is None else hooks)
    if not listeners:
        return []
    return queue_deliveries(session, listeners, "inspection.ng", inspection_payload(inspection))


@dataclass
class DeliveryPolicy:
    timeout_s: float = 3.0
    max_attempts: int = 8
    backoff_base_s: float = 2.0
    backoff_max_s: float = 3600.0
    batch_size: int = 20

    def backoff(self, attempts: int) -> float:
        """Delay before the next try after ``attempts`` failed tries: base * 2**(attempts-1), capped."""
        return min(self.backoff_max_s, self.backoff_base_s * (2 ** max(0, attempts - 1)))


class DeliveryWorker:
    """Sends due deliveries from the table. ``run_once()`` does one pass (used by tests and by the
    thread); ``start()``/``stop()`` run it in a daemon thread every ``poll_interval_s``."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        policy: DeliveryPolicy | None = None,
        poll_interval_s: float = 0.5,
        client: httpx.Client | None = None,
        targets: TargetPolicy | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.policy = policy or DeliveryPolicy()
        self.targets = targets or TargetPolicy.of()  # where sending is allowed, checked before each send
        self.poll_interval_s = poll_interval_s
        self._client = client or httpx.Client(timeout=self.policy.timeout_s, follow_redirects=False)
        self._own_client = client is None
        # a pass that sent something runs again at once; a failed pass (the database away) waits a poll
        self._loop = BackgroundLoop("webhook-delivery", lambda: self.run_once() > 0, poll_interval_s)

    # -- thread -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._loop.stop(timeout)
        if self._own_client:
            self._client.close()

    def wake(self) -> None:
        """Ask for a pass now (after an enqueue) instead of at the next poll."""
        self._loop.wake()

    # -- one pass ---------------------------------------------------------------------------------
    def run_once(self) -> int:
        """Try every due delivery once; returns how many this worker attempted. Each delivery is claimed
        before it is sent (see ``claim``), so two processes on one database never send the same one."""
        now = utcnow()
        with self.session_factory() as session:
            due = session.scalars(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                .limit(self.policy.batch_size)
            ).all()
            sent = 0
            for delivery_id in due:
                if self._loop.stopping:
                    break
                if not self.claim(session, delivery_id):
                    continue  # another worker took it
                delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
                hook = session.get(Webhook, delivery.webhook_id) if delivery is not None else None
                if delivery is None or hook is None:
                    continue
                self._attempt(delivery, hook)
                session.commit()
                sent += 1
            return sent

    def claim(self, session: Session, delivery_id: int) -> bool:
        """Take a due delivery for this worker: one atomic UPDATE moves its ``next_attempt_at`` past the
        send timeout, on condition that it is still pending and due. Of two workers, exactly one sees
        the row change (SQLite and PostgreSQL alike); if this one dies mid-send, the delivery is due
        again once the lease ends (at-least-once delivery)."""
        now = utcnow()
        lease = now + timedelta(seconds=self.policy.timeout_s * 2 + 30)
        claimed = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                   WebhookDelivery.next_attempt_at <= now)
            .values(next_attempt_at=lease)
            .execution_options(synchronize_session=False)
        ).rowcount
        session.commit()
        return claimed == 1

    def _attempt(self, delivery: WebhookDelivery, hook: Webhook) -> None:
        if not hook.active:
            delivery.status = "failed"
            delivery.last_error = "webhook deleted"
            return
        body = encode_body(delivery)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "defect-inspect-webhooks/1",
            EVENT_HEADER: delivery.event,
            DELIVERY_HEADER: str(delivery.id),
            SIGNATURE_HEADER: sign(hook.secret, body),
        }
        delivery.attempts = (delivery.attempts or 0) + 1
        now = utcnow()
        try:
            self.targets.check(hook.url, resolve_required=True)
        except RefusedTarget as exc:  # the name now resolves somewhere the service does not send to
            delivery.status, delivery.last_status_code, delivery.last_error = "failed", None, str(exc)[:1000]
            log.warning("webhook delivery %s not sent: %s", delivery.id, exc)
            return
        try:
            response = self._client.post(hook.url, content=body, headers=headers,
                                         timeout=self.policy.timeout_s)
            delivery.last_status_code = response.status_code
            ok = 200 <= response.status_code < 300
            delivery.last_error = None if ok else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok = False
            delivery.last_status_code = None
            delivery.last_error = f"{type(exc).__name__}: {exc}"[:1000]
        if ok:
            delivery.status = "delivered"
            delivery.delivered_at = now
        elif delivery.attempts >= self.policy.max_attempts:
            delivery.status = "failed"
        else:
            delivery.next_attempt_at = now + timedelta(seconds=self.policy.backoff(delivery.attempts))
        log.debug("webhook delivery %s to %s: %s (attempt %d)", delivery.id, hook.url, delivery.status,
                  delivery.attempts)
