"""Webhooks: the subscription, its delivery log and the event payloads receivers get."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator

from app.schemas.common import PLAIN, PublicModel, UtcDatetime, no_control_characters
from app.schemas.inspections import AuditAction, DefectPublic

if TYPE_CHECKING:
    from app.db.models import Webhook, WebhookDelivery

EVENTS = ("inspection.ng", "defect.reviewed", "alarm.raised")
DeliveryStatus = Literal["pending", "delivered", "failed"]
# what validate_url checks, for the JSON schema
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s][^\x00-\x1f\x7f]*$"


def validate_url(url: str) -> str:
    no_control_characters(url)  # a NUL or a line break is no part of a URL (and no part of a header)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"webhook url must be an absolute http(s) URL, got {url!r}")
    return url


def validate_events(events: Iterable[str]) -> list[str]:
    out: list[str] = []
    for event in events:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENTS)}")
        if event not in out:
            out.append(event)
    if not out:
        raise ValueError("a webhook needs at least one event")
    return out


class WebhookBase(PublicModel):
    url: str = Field(description="http(s) URL receiving POSTs")
    events: list[str] = Field(description=f"any of {', '.join(EVENTS)}")


class WebhookCreate(WebhookBase):
    """POST /webhooks."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, PLAIN] = Field(min_length=8, max_length=1024,
                                       description="http(s) URL receiving POSTs",
                                       json_schema_extra={"format": "uri", "pattern": URL_PATTERN})
    events: list[str] = Field(min_length=1, max_length=16, description=f"any of {', '.join(EVENTS)}",
                              json_schema_extra={"items": {"type": "string", "enum": list(EVENTS)}})
    secret: Annotated[str, PLAIN] | None = Field(None, min_length=16, max_length=128,
                                                 description="HMAC key; generated when left out")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_url(value)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return validate_events(value)


class WebhookPublic(WebhookBase):
    """A registered webhook (never its secret)."""

    id: int
    active: bool
    created_at: UtcDatetime

    @classmethod
    def fields_of(cls, row: Webhook) -> dict[str, Any]:
        return dict(id=row.id, url=row.url, events=list(row.events or []), active=row.active,
                    created_at=row.created_at)

    @classmethod
    def from_row(cls, row: Webhook) -> WebhookPublic:
        return cls(**cls.fields_of(row))


class WebhookCreated(WebhookPublic):
    """The answer of POST /webhooks: the only time the secret is shown."""

    secret: str

    @classmethod
    def from_row(cls, row: Webhook) -> WebhookCreated:
        return cls(**cls.fields_of(row), secret=row.secret)


class WebhookList(PublicModel):
    items: list[WebhookPublic]


class WebhookDeliveryPublic(PublicModel):
    """One queued event for one webhook and how sending it went."""

    id: int
    webhook_id: int
    event: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: UtcDatetime
    next_attempt_at: UtcDatetime
    delivered_at: UtcDatetime | None
    payload: dict[str, Any] = Field(description="the data member of the body sent")

    @classmethod
    def from_row(cls, row: WebhookDelivery) -> WebhookDeliveryPublic:
        return cls(id=row.id, webhook_id=row.webhook_id, event=row.event, status=row.status,
                   attempts=row.attempts or 0, last_status_code=row.last_status_code,
                   last_error=row.last_error, created_at=row.created_at, next_attempt_at=row.next_attempt_at,
                   delivered_at=row.delivered_at, payload=row.payload)


class DeliveryPage(PublicModel):
    items: list[WebhookDeliveryPublic]
    next_before_id: int | None = Field(description="pass as before_id for older deliveries")


class DefectReviewedEvent(DefectPublic):
    """The data of a ``defect.reviewed`` event: the defect after review, and the review."""

    review_id: int
    action: AuditAction


class WebhookBody(PublicModel):
    """What a receiver gets (signed in X-Inspect-Signature); ``data`` is an InspectionPublic for
    ``inspection.ng``, a DefectReviewedEvent for ``defect.reviewed`` and an AlarmPublic for
    ``alarm.raised``."""

    id: int
    event: str
    created_at: UtcDatetime
    data: dict[str, Any]
