"""Review of detected defects by an operator: confirm, reject or reclassify a box (optionally with its
corners corrected), draw a defect the model missed, undo the last action on a box, and mark a frame
"fully reviewed". Every action (re-reviews and undos included) appends one audit row with who, when and
the state before and after (``defect_reviews`` for boxes, ``frame_reviews`` for frames); box actions queue
a ``defect.reviewed`` webhook event in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.db.models import Defect, DefectReview, FrameReview, Inspection
from app.errors import Conflict, InvalidInput
from app.schemas import DefectPublic, DefectReviewedEvent
from app.vocabulary import utcnow
from app.webhooks import enqueue_event

ACTIONS: dict[str, str] = {"confirm": "confirmed", "reject": "rejected", "reclassify": "reclassified"}
ABSENT = "absent"  # the before-state of a defect an operator drew: there was no box
FRAME_ACTIONS = ("complete", "reopen")
Box = tuple[float, float, float, float]


class ReviewError(InvalidInput):
    """A review request that cannot be applied."""

    reason = "invalid_review"


@dataclass(frozen=True)
class ReviewRequest:
    action: str
    class_name: str | None = None
    note: str | None = None
    box: Sequence[float] | None = None  # corrected corners (confirm or reclassify)


def effective_class_name(defect: Defect) -> str | None:
    """The class a defect carries after review: None if rejected, the reviewed class where set."""
    if defect.review_status == "rejected":
        return None
    return defect.reviewed_class_name or defect.class_name


def box_of(defect: Defect) -> list[float]:
    return [defect.x1, defect.y1, defect.x2, defect.y2]


def checked_box(box: Sequence[float], width: int, height: int) -> Box:
    """``box`` (x1, y1, x2, y2 in image pixels) with its corners in order, inside the frame and at least
    one pixel wide and high; a ReviewError otherwise."""
    if len(box) != 4:
        raise ReviewError(f"box must be [x1, y1, x2, y2], got {len(box)} numbers")
    x1, x2 = sorted((float(box[0]), float(box[2])))
    y1, y2 = sorted((float(box[1]), float(box[3])))
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise ReviewError(f"box {list(box)} is outside the {width}x{height} frame")
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise ReviewError(f"box {list(box)} is less than one pixel wide or high")
    return x1, y1, x2, y2


def _class_id(name: str, class_names: Sequence[str]) -> int:
    if name not in class_names:
        raise ReviewError(f"class_name {name!r} is not a model class; expected one of "
                          f"{', '.join(class_names)}")
    return list(class_names).index(name)


def _set_box(defect: Defect, box: Box) -> None:
    defect.x1, defect.y1, defect.x2, defect.y2 = box


def _audit(session: Session, defect: Defect, actor: str, action: str, before: tuple[str, str | None],
           note: str | None, *, before_box: list[float] | None = None, after_box: list[float] | None = None,
           undoes: int | None = None) -> DefectReview:
    row = DefectReview(
        defect_id=defect.id, actor=actor, action=action, before_status=before[0],
        after_status=defect.review_status, before_class_name=before[1],
        after_class_name=effective_class_name(defect), before_box=before_box, after_box=after_box,
        undoes_review_id=undoes, note=note, created_at=defect.reviewed_at or utcnow(),
    )
    session.add(row)
    session.flush()
    event = DefectReviewedEvent(**DefectPublic.fields_of(defect), review_id=row.id, action=action)
    enqueue_event(session, "defect.reviewed", event.model_dump(mode="json"))
    return row


def _clean(note: str | None) -> str | None:
    return note.strip() or None if note else None


def review_defect(session: Session, defect: Defect, request: ReviewRequest, actor: str,
                  class_names: Sequence[str]) -> DefectReview:
    """Apply ``request`` to ``defect`` as ``actor``; the caller commits. ``class_names`` are the model's
    classes (a reclassification must name one of them). Action ``undo`` reverts the defect's last action
    that is not yet undone (:func:`undo_last_review`)."""
    if request.action == "undo":
        if request.class_name is not None or request.box is not None:
            raise ReviewError("undo takes no class_name or box")
        return undo_last_review(session, defect, actor, class_names, request.note)
    if request.action not in ACTIONS:
        raise ReviewError(f"action must be one of {', '.join([*ACTIONS, 'undo'])}, got {request.action!r}")
    if request.action == "reclassify":
        if not request.class_name:
            raise ReviewError("reclassify needs a class_name")
        new_class_id: int | None = _class_id(request.class_name, class_names)
        new_class_name: str | None = request.class_name
    elif request.class_name is not None:
        raise ReviewError(f"class_name is only accepted with action reclassify, not {request.action}")
    elif request.action == "confirm":
        new_class_id, new_class_name = defect.class_id, defect.class_name
    else:
        new_class_id, new_class_name = None, None
    if request.box is not None and request.action == "reject":
        raise ReviewError("a corrected box is only accepted with confirm or reclassify")
    new_box = None
    if request.box is not None:
        inspection = defect.inspection
        new_box = checked_box(request.box, inspection.width, inspection.height)

    before = (defect.review_status or "pending", effective_class_name(defect))
    old_box = box_of(defect)
    defect.review_status = ACTIONS[request.action]
    defect.reviewed_class_id = new_class_id
    defect.reviewed_class_name = new_class_name
    defect.reviewed_by = actor
    defect.reviewed_at = utcnow()
    defect.review_note = _clean(request.note)
    moved = new_box is not None and list(new_box) != old_box
    if new_box is not None:
        _set_box(defect, new_box)
    return _audit(session, defect, actor, request.action, before, defect.review_note,
                  before_box=old_box if moved else None, after_box=box_of(defect) if moved else None)


def add_missed_defect(session: Session, inspection: Inspection, class_name: str, box: Sequence[float],
                      actor: str, class_names: Sequence[str], note: str | None = None) -> Defect:
    """A defect the model missed, drawn by ``actor``: stored as a confirmed defect of source
    ``operator`` (confidence 1) with an ``add`` audit row; the caller commits. The inspection's verdict
    and defect_count stay the model's."""
    class_id = _class_id(class_name, class_names)
    x1, y1, x2, y2 = checked_box(box, inspection.width, inspection.height)
    now = utcnow()
    defect = Defect(inspection_id=inspection.id, class_id=class_id, class_name=class_name, confidence=1.0,
                    x1=x1, y1=y1, x2=x2, y2=y2, review_status="confirmed", reviewed_class_id=class_id,
                    reviewed_class_name=class_name, reviewed_by=actor, reviewed_at=now,
                    review_note=_clean(note), source="operator")
    session.add(defect)
    session.flush()
    _audit(session, defect, actor, "add", (ABSENT, None), defect.review_note, after_box=box_of(defect))
    return defect


def _last_undoable(defect: Defect) -> DefectReview | None:
    undone = {r.undoes_review_id for r in defect.reviews if r.action == "undo"}
    for row in sorted(defect.reviews, key=lambda r: r.id, reverse=True):
        if row.action != "undo" and row.id not in undone:
            return row
    return None


def _restored_class_id(defect: Defect, name: str | None, class_names: Sequence[str]) -> int | None:
    """The model index of ``name``: the detected class's own, else its place among ``class_names``
    (None when no model is loaded to say)."""
    if name is None:
        return None
    if name == defect.class_name:
        return defect.class_id
    return list(class_names).index(name) if name in class_names else None


def undo_last_review(session: Session, defect: Defect, actor: str, class_names: Sequence[str],
                     note: str | None = None) -> DefectReview:
    """Put ``defect`` back as it was before its last action not yet undone, with an ``undo`` audit row
    naming that action; the caller commits. Undoing the ``add`` of a drawn defect withdraws it (status
    rejected: it leaves the exported labels and the miss count). A Conflict when nothing is left."""
    target = _last_undoable(defect)
    if target is None:
        raise Conflict(f"defect {defect.id} has no review left to undo")
    before = (defect.review_status or "pending", effective_class_name(defect))
    status = "rejected" if target.before_status == ABSENT else target.before_status
    old_box = box_of(defect)
    defect.review_status = status
    if status == "pending":
        defect.reviewed_class_id = defect.reviewed_class_name = defect.reviewed_by = None
        defect.reviewed_at = None
    else:
        name = None if status == "rejected" else (target.before_class_name or defect.class_name)
        defect.reviewed_class_name = name
        defect.reviewed_class_id = _restored_class_id(defect, name, class_names)
        defect.reviewed_by = actor
        defect.reviewed_at = utcnow()
    defect.review_note = None
    if target.before_box is not None:
        _set_box(defect, tuple(float(v) for v in target.before_box))  # type: ignore[arg-type]
    moved = box_of(defect) != old_box
    if status == "pending" and defect.inspection.fully_reviewed_at is not None:
        set_frame_state(session, defect.inspection, "reopen", actor,
                        f"defect {defect.id} is pending again (undo)")
    return _audit(session, defect, actor, "undo", before, _clean(note),
                  before_box=old_box if moved else None, after_box=box_of(defect) if moved else None,
                  undoes=target.id)


def set_frame_state(session: Session, inspection: Inspection, action: str, actor: str,
                    note: str | None = None) -> FrameReview:
    """``complete``: the frame is fully reviewed (every box decided, every missed defect drawn; a
    Conflict while a box is pending); ``reopen``: it is not any more. One ``frame_reviews`` audit row;
    the caller commits."""
    if action not in FRAME_ACTIONS:
        raise ReviewError(f"action must be one of {', '.join(FRAME_ACTIONS)}, got {action!r}")
    if action == "complete":
        pending = [d.id for d in inspection.defects if (d.review_status or "pending") == "pending"]
        if pending:
            raise Conflict(f"inspection {inspection.id} still has {len(pending)} pending defect(s) "
                           f"({', '.join(map(str, pending[:5]))}); decide them first")
        inspection.fully_reviewed_at = utcnow()
        inspection.fully_reviewed_by = actor
    else:
        inspection.fully_reviewed_at = None
        inspection.fully_reviewed_by = None
    row = FrameReview(inspection_id=inspection.id, actor=actor, action=action,
                      fully_reviewed=action == "complete", note=_clean(note), created_at=utcnow())
    session.add(row)
    session.flush()
    return row
