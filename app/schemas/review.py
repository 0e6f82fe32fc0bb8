"""The review queue: what an operator decides, one item at a time. An item is a frame (an inspection
with all its boxes); the ``kind`` field leaves room for other kinds of item beside frames (a tracked
defect seen over many frames of a streaming camera)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.schemas.common import PublicModel
from app.schemas.inspections import InspectionPublic, PageBase

QueueKind = Literal["frame"]


class ReviewQueueItem(PublicModel):
    kind: QueueKind = Field("frame", description="frame: one inspected frame and all its boxes")
    key: str = Field(description="stable id of the item across pages and refreshes, e.g. frame:42")
    pending: int = Field(description="boxes still to decide")
    fully_reviewed: bool = Field(description="an operator marked the frame fully reviewed")
    inspection: InspectionPublic

    @classmethod
    def of_frame(cls, inspection: InspectionPublic) -> ReviewQueueItem:
        pending = sum(1 for d in inspection.defects if (d.review_status or "pending") == "pending")
        return cls(key=f"frame:{inspection.id}", pending=pending,
                   fully_reviewed=inspection.fully_reviewed_at is not None, inspection=inspection)


class ReviewQueuePage(PageBase):
    items: list[ReviewQueueItem]
