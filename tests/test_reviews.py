"""app.reviews straight on the database (SQLite and PostgreSQL): confirm, reject and reclassify set the
defect's reviewed state and effective class, each action (re-reviews too) appends one audit row with the
state before and after and queues one ``defect.reviewed`` event; a request that cannot apply changes
nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from db_helpers import NAMES, Frame, store_frames
from sqlalchemy import select

from app.db.models import Defect, DefectReview, Webhook, WebhookDelivery
from app.db.queries import Filters, Sort, fetch_page
from app.errors import InvalidInput
from app.reviews import ReviewError, ReviewRequest, effective_class_name, review_defect

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


@pytest.fixture
def defect_id(db) -> int:
    """One pending 'patches' defect, and a hook subscribed to defect.reviewed."""
    (stored,) = store_frames(db, [Frame("r1", T0, [("patches", 0.8, (10.0, 10.0, 30.0, 30.0))])])
    with db.session() as s:
        s.add(Webhook(url="http://127.0.0.1:9/rev", events=["defect.reviewed"], secret="s" * 32))
        s.commit()
    return stored.row.defects[0].id


def apply(db, defect_id: int, request: ReviewRequest, actor: str = "alice") -> DefectReview:
    with db.session() as s:
        audit = review_defect(s, s.get(Defect, defect_id), request, actor, NAMES)
        s.commit()
        return audit


def audit_rows(db, defect_id: int) -> list[tuple]:
    with db.session() as s:
        rows = s.scalars(select(DefectReview).where(DefectReview.defect_id == defect_id)
                         .order_by(DefectReview.id)).all()
        return [(r.actor, r.action, r.before_status, r.after_status, r.before_class_name, r.after_class_name,
                 r.note) for r in rows]


def events(db) -> list[dict]:
    with db.session() as s:
        rows = s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        return [{"event": d.event, **{k: d.payload[k] for k in ("action", "review_status", "review_id")}}
                for d in rows]


def reviewed(db, defect_id: int) -> tuple:
    with db.session() as s:
        d = s.get(Defect, defect_id)
        return (d.review_status, d.class_name, d.reviewed_class_id, d.reviewed_class_name, d.reviewed_by,
                d.review_note, effective_class_name(d))


def test_a_new_defect_is_pending_with_its_detected_class(db, defect_id):
    assert reviewed(db, defect_id) == ("pending", "patches", None, None, None, None, "patches")


def test_confirm_keeps_the_detected_class(db, defect_id):
    audit = apply(db, defect_id, ReviewRequest("confirm", note="  looks right \n"))
    assert reviewed(db, defect_id) == ("confirmed", "patches", 1, "patches", "alice", "looks right",
                                       "patches")
    assert audit_rows(db, defect_id) == [("alice", "confirm", "pending", "confirmed", "patches", "patches",
                                          "looks right")]
    assert events(db) == [{"event": "defect.reviewed", "action": "confirm", "review_status": "confirmed",
                           "review_id": audit.id}]


def test_reject_leaves_no_effective_class(db, defect_id):
    apply(db, defect_id, ReviewRequest("reject"))
    assert reviewed(db, defect_id) == ("rejected", "patches", None, None, "alice", None, None)
    assert audit_rows(db, defect_id) == [("alice", "reject", "pending", "rejected", "patches", None, None)]


def test_reclassify_sets_the_class_and_its_model_index(db, defect_id):
    apply(db, defect_id, ReviewRequest("reclassify", class_name="scratches"))
    assert reviewed(db, defect_id) == ("reclassified", "patches", 2, "scratches", "alice", None, "scratches")
    with db.session() as s:  # the queries filter by the same effective class
        by_class = fetch_page(s, "defects", Filters(class_name="scratches"), Sort(), 10).items
        assert [d.id for d, _ in by_class] == [defect_id]
        assert fetch_page(s, "defects", Filters(class_name="patches"), Sort(), 10).items == []


def test_every_re_review_appends_an_audit_row_and_an_event(db, defect_id):
    first = apply(db, defect_id, ReviewRequest("reclassify", class_name="crazing"), actor="alice")
    second = apply(db, defect_id, ReviewRequest("reject", note="dust"), actor="bob")
    third = apply(db, defect_id, ReviewRequest("confirm"), actor="carol")
    assert audit_rows(db, defect_id) == [
        ("alice", "reclassify", "pending", "reclassified", "patches", "crazing", None),
        ("bob", "reject", "reclassified", "rejected", "crazing", None, "dust"),
        ("carol", "confirm", "rejected", "confirmed", None, "patches", None),
    ]
    # confirming after a reclassification goes back to the detected class, and clears the old note
    assert reviewed(db, defect_id) == ("confirmed", "patches", 1, "patches", "carol", None, "patches")
    assert [(e["action"], e["review_id"]) for e in events(db)] == [
        ("reclassify", first.id), ("reject", second.id), ("confirm", third.id)]


@pytest.mark.parametrize(("request_", "message"), [
    (ReviewRequest("approve"), "action must be one of confirm, reject, reclassify, undo, got 'approve'"),
    (ReviewRequest("Confirm"), "got 'Confirm'"),
    (ReviewRequest("reclassify"), "reclassify needs a class_name"),
    (ReviewRequest("reclassify", class_name=""), "reclassify needs a class_name"),
    (ReviewRequest("reclassify", class_name="rust"), "class_name 'rust' is not a model class; expected one "
                                                     "of crazing, patches, scratches"),
    (ReviewRequest("confirm", class_name="patches"), "class_name is only accepted with action reclassify, "
                                                     "not confirm"),
    (ReviewRequest("reject", class_name="crazing"), "not reject"),
])
def test_a_request_that_cannot_apply_changes_nothing(db, defect_id, request_, message):
    with db.session() as s:
        with pytest.raises(ReviewError, match=message) as caught:
            review_defect(s, s.get(Defect, defect_id), request_, "alice", NAMES)
        s.commit()
    assert isinstance(caught.value, InvalidInput)  # a 422 at the HTTP edge
    assert reviewed(db, defect_id) == ("pending", "patches", None, None, None, None, "patches")
    assert audit_rows(db, defect_id) == [] and events(db) == []
