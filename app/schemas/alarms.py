"""Alarms raised by the cameras file's rules: GET /alarms, POST /alarms/{id}/acknowledge and the data of
the ``alarm.raised`` webhook event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, Field

from app.schemas.common import PublicModel, UtcDatetime

if TYPE_CHECKING:
    from app.db.models import Alarm


class AlarmPublic(PublicModel):
    id: int
    rule_id: str = Field(description="the rule's id in the cameras file")
    condition: Literal["consecutive_ng", "defects_per_minute", "defects_per_metre", "camera_down_s"]
    line: str | None
    camera_id: str | None
    message: str = Field(description="what the operator reads")
    value: float = Field(description="what was measured when it fired (NG run, defects in 60 s, defects "
                                     "per metre over 60 s, seconds down)")
    limit: float = Field(description="the rule's limit")
    raised_at: UtcDatetime
    acknowledged_at: UtcDatetime | None = None
    acknowledged_by: str | None = Field(None, description="the name of the key that acknowledged it")
    acknowledge_note: str | None = None

    @classmethod
    def from_row(cls, row: Alarm) -> AlarmPublic:
        return cls(id=row.id, rule_id=row.rule_id, condition=row.condition, line=row.line,
                   camera_id=row.camera_id, message=row.message, value=row.value, limit=row.limit,
                   raised_at=row.raised_at, acknowledged_at=row.acknowledged_at,
                   acknowledged_by=row.acknowledged_by, acknowledge_note=row.acknowledge_note)


class AlarmList(PublicModel):
    items: list[AlarmPublic]


class AlarmAcknowledge(PublicModel):
    """POST /alarms/{id}/acknowledge."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=2000, description="what was done about it")
