"""Review of detected defects by an operator: confirm, reject or reclassify. Every action (re-reviews
included) appends one ``defect_reviews`` audit row with who, when, the state before and after, and queues
a ``defect.reviewed`` webhook event in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.db.models import Defect, DefectReview
from app.errors import InvalidInput
from app.schemas import DefectPublic, DefectReviewedEvent
from app.vocabulary import utcnow
from app.webhooks import enqueue_event

ACTIONS: dict[str, str] = {"confirm": "confirmed", "reject": "rejected", "reclassify": "reclassified"}


class ReviewError(InvalidInput):
    """A review request that cannot be applied."""

    reason = "invalid_review"


@dataclass(frozen=True)
class ReviewRequest:
    action: str
    class_name: str | None = None
    note: str | None = None


def effective_class_name(defect: Defect) -> str | None:
    """The class a defect carries after review: None if rejected, the reviewed class where set."""
    if defect.review_status == "rejected":
        return None
    return defect.reviewed_class_name or defect.class_name


def review_defect(session: Session, defect: Defect, request: ReviewRequest, actor: str,
                  class_names: Sequence[str]) -> DefectReview:
    """Apply ``request`` to ``defect`` as ``actor``; the caller commits. ``class_names`` are the model's
    classes (a reclassification must name one of them)."""
    if request.action not in ACTIONS:
        raise ReviewError(f"action must be one of {', '.join(ACTIONS)}, got {request.action!r}")
    if request.action == "reclassify":
        if not request.class_name:
            raise ReviewError("reclassify needs a class_name")
        if request.class_name not in class_names:
            raise ReviewError(
                f"class_name {request.class_name!r} is not a model class; expected one of "
                f"{', '.join(class_names)}"
            )
        new_class_id: int | None = list(class_names).index(request.class_name)
        new_class_name: str | None = request.class_name
    elif request.class_name is not None:
        raise ReviewError(f"class_name is only accepted with action reclassify, not {request.action}")
    elif request.action == "confirm":
        new_class_id, new_class_name = defect.class_id, defect.class_name
    else:
        new_class_id, new_class_name = None, None

    note = request.note.strip() if request.note else None
    now = utcnow()
    before_status = defect.review_status or "pending"
    before_class = effective_class_name(defect)

    defect.review_status = ACTIONS[request.action]
    defect.reviewed_class_id = new_class_id
    defect.reviewed_class_name = new_class_name
    defect.reviewed_by = actor
    defect.reviewed_at = now
    defect.review_note = note

    audit = DefectReview(
        defect_id=defect.id,
        actor=actor,
        action=request.action,
        before_status=before_status,
        after_status=defect.review_status,
        before_class_name=before_class,
        after_class_name=effective_class_name(defect),
        note=note,
        created_at=now,
    )
    session.add(audit)
    session.flush()
    event = DefectReviewedEvent(**DefectPublic.fields_of(defect), review_id=audit.id, action=request.action)
    enqueue_event(session, "defect.reviewed", event.model_dump(mode="json"))
    return audit
