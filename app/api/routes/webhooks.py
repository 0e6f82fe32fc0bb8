"""Webhooks (admin): POST/GET /webhooks, GET/DELETE /webhooks/{id}, GET /webhooks/{id}/deliveries.

A hook's secret is returned once, by POST; deliveries are signed with it (see app.webhooks). DELETE
deactivates the hook and fails its pending deliveries, keeping the delivery log readable."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select, update

from app.api.deps import SessionDep, SettingsDep
from app.api.openapi import problem_responses
from app.api.params import RowId
from app.api.problems import Problem
from app.db.models import Webhook, WebhookDelivery
from app.schemas import (
    DeliveryPage,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryPublic,
    WebhookList,
    WebhookPublic,
)
from app.schemas.common import MAX_ROW_ID
from app.vocabulary import utcnow
from app.webhook_targets import TargetPolicy
from app.webhooks import new_secret

router = APIRouter(tags=["webhooks"])


def _get(session: Any, hook_id: int) -> Webhook:
    hook = session.get(Webhook, hook_id)
    if hook is None:
        raise Problem(404, f"webhook {hook_id} does not exist", reason="not_found")
    return hook


@router.post("/webhooks", status_code=201, response_model=WebhookCreated,
             summary="Register a webhook; the secret is shown only here",
             responses=problem_responses(422, s422="a bad URL or event, or a target the service does not "
                                                   "send to (loopback, link-local, metadata, unspecified)"))
def create_webhook(body: WebhookCreate, session: SessionDep, settings: SettingsDep) -> WebhookCreated:
    targets = TargetPolicy.of(settings.webhook_allowed_networks, settings.webhook_refused_networks)
    targets.check(body.url, resolve_required=False)  # RefusedTarget: a 422 problem
    hook = Webhook(url=body.url, events=body.events, secret=body.secret or new_secret(), active=True,
                   created_at=utcnow())
    session.add(hook)
    session.commit()
    return WebhookCreated.from_row(hook)


@router.get("/webhooks", response_model=WebhookList, summary="Registered webhooks (without secrets)",
            responses=problem_responses(422))
def list_webhooks(session: SessionDep, include_inactive: bool = False) -> WebhookList:
    stmt = select(Webhook).order_by(Webhook.id)
    if not include_inactive:
        stmt = stmt.where(Webhook.active.is_(True))
    return WebhookList(items=[WebhookPublic.from_row(h) for h in session.scalars(stmt)])


@router.get("/webhooks/{hook_id}", response_model=WebhookPublic, summary="One webhook",
            responses=problem_responses(404, 422))
def read_webhook(hook_id: RowId, session: SessionDep) -> WebhookPublic:
    return WebhookPublic.from_row(_get(session, hook_id))


@router.delete("/webhooks/{hook_id}", status_code=204, summary="Deactivate a webhook",
               responses=problem_responses(404, 422))
def delete_webhook(hook_id: RowId, session: SessionDep) -> None:
    hook = _get(session, hook_id)
    hook.active = False
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == hook_id, WebhookDelivery.status == "pending")
        .values(status="failed", last_error="webhook deleted")
    )
    session.commit()


@router.get("/webhooks/{hook_id}/deliveries", response_model=DeliveryPage,
            summary="The delivery log of a webhook, newest first", responses=problem_responses(404, 422))
def list_deliveries(
    hook_id: RowId, session: SessionDep,
    status: Literal["pending", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID,
                                           description="page: deliveries older than this id")] = None,
) -> DeliveryPage:
    _get(session, hook_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    if before_id is not None:
        stmt = stmt.where(WebhookDelivery.id < before_id)
    rows = list(session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit + 1)))
    items = rows[:limit]
    return DeliveryPage(items=[WebhookDeliveryPublic.from_row(d) for d in items],
                        next_before_id=items[-1].id if len(rows) > limit else None)
