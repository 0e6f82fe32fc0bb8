"""Webhooks (admin): POST/GET /webhooks, GET/DELETE /webhooks/{id}, GET /webhooks/{id}/deliveries.

A hook's secret is returned once, by POST; deliveries are signed with it (see app.webhooks). DELETE
deactivates the hook and fails its pending deliveries, keeping the delivery log readable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select, update

from app.api.deps import SessionDep
from app.api.problems import Problem
from app.db.models import Webhook, WebhookDelivery
from app.db.queries import iso
from app.webhooks import EVENTS, delivery_view, new_secret, validate_events, validate_url

router = APIRouter(tags=["webhooks"])
HookId = Annotated[int, Path(ge=1)]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=1024, description="http(s) URL receiving POSTs")
    events: list[str] = Field(min_length=1, description=f"any of {', '.join(EVENTS)}")
    secret: str | None = Field(None, min_length=16, max_length=128,
                               description="HMAC key; generated when left out")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_url(value)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return validate_events(value)


def hook_view(hook: Webhook) -> dict[str, Any]:
    return {"id": hook.id, "url": hook.url, "events": list(hook.events or []), "active": hook.active,
            "created_at": iso(hook.created_at)}


def _get(session: Any, hook_id: int) -> Webhook:
    hook = session.get(Webhook, hook_id)
    if hook is None:
        raise Problem(404, f"webhook {hook_id} does not exist", reason="not_found")
    return hook


@router.post("/webhooks", status_code=201, summary="Register a webhook; the secret is shown only here")
def create_webhook(body: WebhookIn, session: SessionDep) -> dict[str, Any]:
    hook = Webhook(url=body.url, events=body.events, secret=body.secret or new_secret(), active=True,
                   created_at=datetime.now(UTC))
    session.add(hook)
    session.commit()
    return {**hook_view(hook), "secret": hook.secret}


@router.get("/webhooks", summary="Registered webhooks (without secrets)")
def list_webhooks(session: SessionDep, include_inactive: bool = False) -> dict[str, Any]:
    stmt = select(Webhook).order_by(Webhook.id)
    if not include_inactive:
        stmt = stmt.where(Webhook.active.is_(True))
    return {"items": [hook_view(h) for h in session.scalars(stmt)]}


@router.get("/webhooks/{hook_id}", summary="One webhook")
def read_webhook(hook_id: HookId, session: SessionDep) -> dict[str, Any]:
    return hook_view(_get(session, hook_id))


@router.delete("/webhooks/{hook_id}", status_code=204, summary="Deactivate a webhook")
def delete_webhook(hook_id: HookId, session: SessionDep) -> None:
    hook = _get(session, hook_id)
    hook.active = False
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == hook_id, WebhookDelivery.status == "pending")
        .values(status="failed", last_error="webhook deleted")
    )
    session.commit()


@router.get("/webhooks/{hook_id}/deliveries", summary="The delivery log of a webhook, newest first")
def list_deliveries(
    hook_id: HookId, session: SessionDep,
    status: Literal["pending", "delivered", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[int | None, Query(ge=1, description="page: deliveries older than this id")] = None,
) -> dict[str, Any]:
    _get(session, hook_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    if before_id is not None:
        stmt = stmt.where(WebhookDelivery.id < before_id)
    rows = list(session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(limit + 1)))
    items = rows[:limit]
    return {"items": [delivery_view(d) for d in items],
            "next_before_id": items[-1].id if len(rows) > limit else None}
