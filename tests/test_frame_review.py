"""Review by frame, straight on the database (SQLite and PostgreSQL) and through the HTTP API: a box
confirmed with corrected corners, undo of the last action (audited, chained, a drawn box withdrawn), a
defect the model missed drawn by an operator, a frame marked fully reviewed (refused while a box is
pending), the review queue of frames, and the miss rate beside the false-positive rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from db_helpers import NAMES, Frame, store_frames
from sqlalchemy import select

from app.db.models import Defect, DefectReview, FrameReview, Inspection
from app.db.queries import Filters
from app.db.stats import StatsRange, compute_stats
from app.errors import Conflict
from app.reviews import (
    ReviewError,
    ReviewRequest,
    add_missed_defect,
    review_defect,
    set_frame_state,
)

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


@pytest.fixture
def frame(db) -> tuple[int, list[int]]:
    """One 100x80 frame with two pending boxes: (inspection id, [defect ids])."""
    (stored,) = store_frames(db, [Frame("f1", T0, [("patches", 0.8, (10.0, 10.0, 30.0, 30.0)),
                                                   ("crazing", 0.6, (50.0, 20.0, 70.0, 40.0))])])
    return stored.row.id, [d.id for d in stored.row.defects]


def review(db, defect_id: int, request: ReviewRequest, actor: str = "alice") -> None:
    with db.session() as s:
        d = s.get(Defect, defect_id)
        review_defect(s, d, request, actor, NAMES)
        s.commit()


def state(db, defect_id: int) -> tuple:
    with db.session() as s:
        d = s.get(Defect, defect_id)
        return d.review_status, d.reviewed_class_id, d.reviewed_class_name, [d.x1, d.y1, d.x2, d.y2]


def audit(db, defect_id: int) -> list[tuple]:
    with db.session() as s:
        rows = s.scalars(select(DefectReview).where(DefectReview.defect_id == defect_id)
                         .order_by(DefectReview.id))
        return [(r.action, r.before_status, r.after_status, r.before_box, r.after_box,
                 r.undoes_review_id is not None) for r in rows]


def test_confirm_with_corrected_corners_moves_the_box_and_audits_both(db, frame):
    _, (first, _) = frame
    review(db, first, ReviewRequest("confirm", box=[32.0, 28.0, 8.0, 12.0]))  # corners in any order
    assert state(db, first) == ("confirmed", 1, "patches", [8.0, 12.0, 32.0, 28.0])
    assert audit(db, first) == [("confirm", "pending", "confirmed", [10.0, 10.0, 30.0, 30.0],
                                 [8.0, 12.0, 32.0, 28.0], False)]


@pytest.mark.parametrize(("box", "message"), [
    ([0, 0, 101, 10], "outside the 100x80 frame"),
    ([-1, 0, 10, 10], "outside"),
    ([5, 5, 5.5, 20], "less than one pixel"),
])
def test_a_box_outside_the_frame_or_empty_is_refused(db, frame, box, message):
    _, (first, _) = frame
    with pytest.raises(ReviewError, match=message):
        review(db, first, ReviewRequest("confirm", box=box))
    with pytest.raises(ReviewError, match="only accepted with confirm or reclassify"):
        review(db, first, ReviewRequest("reject", box=[1, 1, 5, 5]))
    assert state(db, first)[0] == "pending" and audit(db, first) == []


def test_undo_reverts_the_last_action_each_time_and_is_audited(db, frame):
    _, (first, _) = frame
    review(db, first, ReviewRequest("reclassify", class_name="scratches"))
    review(db, first, ReviewRequest("confirm", box=[12.0, 12.0, 28.0, 28.0]))
    review(db, first, ReviewRequest("undo"), actor="bob")
    assert state(db, first) == ("reclassified", 2, "scratches", [10.0, 10.0, 30.0, 30.0])
    review(db, first, ReviewRequest("undo"), actor="bob")
    assert state(db, first) == ("pending", None, None, [10.0, 10.0, 30.0, 30.0])
    assert [row[:3] for row in audit(db, first)] == [
        ("reclassify", "pending", "reclassified"), ("confirm", "reclassified", "confirmed"),
        ("undo", "confirmed", "reclassified"), ("undo", "reclassified", "pending")]
    with db.session() as s:
        rows = s.scalars(select(DefectReview).where(DefectReview.defect_id == first)
                         .order_by(DefectReview.id)).all()
        assert [r.undoes_review_id for r in rows[2:]] == [rows[1].id, rows[0].id]
        assert {r.actor for r in rows[2:]} == {"bob"}
    with pytest.raises(Conflict, match="no review left to undo"):
        review(db, first, ReviewRequest("undo"))


def test_a_drawn_missed_defect_is_confirmed_from_the_operator_and_undo_withdraws_it(db, frame):
    inspection_id, _ = frame
    with db.session() as s:
        added = add_missed_defect(s, s.get(Inspection, inspection_id), "scratches", [80, 60, 90, 75],
                                  "carol", NAMES, note=" a scratch the model missed ")
        s.commit()
        added_id = added.id
    with db.session() as s:
        d = s.get(Defect, added_id)
        assert (d.source, d.review_status, d.class_name, d.reviewed_class_name, d.reviewed_by, d.confidence,
                d.review_note) == ("operator", "confirmed", "scratches", "scratches", "carol", 1.0,
                                   "a scratch the model missed")
        ins = s.get(Inspection, inspection_id)
        assert (ins.defect_count, ins.verdict) == (2, "NG")  # the model's result stays as it was
    assert audit(db, added_id) == [("add", "absent", "confirmed", None, [80.0, 60.0, 90.0, 75.0], False)]
    review(db, added_id, ReviewRequest("undo"))
    assert state(db, added_id)[0] == "rejected"
    with db.session() as s, pytest.raises(ReviewError, match="not a model class"):
        add_missed_defect(s, s.get(Inspection, inspection_id), "rust", [1, 1, 5, 5], "carol", NAMES)


def test_a_frame_is_fully_reviewed_only_once_every_box_is_decided(db, frame):
    inspection_id, (first, second) = frame
    review(db, first, ReviewRequest("confirm"))
    with db.session() as s, pytest.raises(Conflict, match=f"1 pending defect\\(s\\) \\({second}\\)"):
        set_frame_state(s, s.get(Inspection, inspection_id), "complete", "alice")
    review(db, second, ReviewRequest("reject"))
    with db.session() as s:
        set_frame_state(s, s.get(Inspection, inspection_id), "complete", "alice")
        s.commit()
    with db.session() as s:
        ins = s.get(Inspection, inspection_id)
        assert ins.fully_reviewed_at is not None and ins.fully_reviewed_by == "alice"
    # undoing a decision back to pending reopens the frame, audited
    review(db, second, ReviewRequest("undo"), actor="bob")
    with db.session() as s:
        assert s.get(Inspection, inspection_id).fully_reviewed_at is None
        rows = s.scalars(select(FrameReview).order_by(FrameReview.id)).all()
        assert [(r.actor, r.action, r.fully_reviewed) for r in rows] == [
            ("alice", "complete", True), ("bob", "reopen", False)]


def test_the_miss_rate_counts_fully_reviewed_frames_only(db):
    frames = store_frames(db, [
        Frame("a", T0, [("patches", 0.9, (1.0, 1.0, 9.0, 9.0)), ("crazing", 0.5, (20.0, 20.0, 30.0, 30.0)),
                        ("scratches", 0.7, (40.0, 40.0, 50.0, 50.0))]),
        Frame("b", T0 + timedelta(minutes=1)),  # OK frame: the operator finds a miss on it
        Frame("c", T0 + timedelta(minutes=2), [("patches", 0.9, (1.0, 1.0, 9.0, 9.0))]),  # not completed
    ])
    a, b, c = (f.row for f in frames)
    with db.session() as s:
        defects = {d.id: d for d in s.scalars(select(Defect))}
        for d_id, action in zip([d.id for d in a.defects], ("confirm", "reject", "confirm"), strict=True):
            review_defect(s, defects[d_id], ReviewRequest(action), "op", NAMES)
        add_missed_defect(s, s.get(Inspection, b.id), "crazing", [10, 10, 20, 20], "op", NAMES)
        add_missed_defect(s, s.get(Inspection, c.id), "crazing", [10, 10, 20, 20], "op", NAMES)
        for ins_id in (a.id, b.id):
            set_frame_state(s, s.get(Inspection, ins_id), "complete", "op")
        review_defect(s, defects[c.defects[0].id], ReviewRequest("confirm"), "op", NAMES)
        s.commit()
    with db.session() as s:
        r = compute_stats(s, StatsRange.build(T0, T0 + timedelta(hours=1), "hour"), Filters()).reviews
    # the false-positive rate is over the model's boxes: 1 rejected of 4 reviewed
    assert (r.confirmed, r.rejected, r.reviewed, r.false_positive_rate) == (3, 1, 4, 0.25)
    # over frames a and b: 1 miss beside 2 of the model's boxes kept
    assert (r.fully_reviewed_frames, r.missed, r.found) == (2, 1, 2)
    assert r.miss_rate == pytest.approx(1 / 3, abs=1e-3)


# -- the HTTP API ---------------------------------------------------------------------------------

def test_the_api_queues_frames_records_misses_and_frame_state(client, app_settings):
    from mes_helpers import NAMES as MODEL_NAMES
    from mes_helpers import seed_database

    seeded = seed_database(app_settings.database_url, app_settings.data_dir)
    queue = client.get("/api/v1/review/queue", params={"review_status": "pending", "limit": 100}).json()
    assert queue["items"] and all(i["kind"] == "frame" and i["pending"] >= 1 for i in queue["items"])
    assert len({i["key"] for i in queue["items"]}) == len(queue["items"])
    item = queue["items"][0]
    ins = item["inspection"]
    assert item["key"] == f"frame:{ins['id']}" and item["pending"] == len(ins["defects"])
    assert all(d["source"] == "model" for d in ins["defects"])

    refused = client.post(f"/api/v1/inspections/{ins['id']}/review", json={"action": "complete"})
    assert refused.status_code == 409 and "pending" in refused.json()["detail"]
    for d in ins["defects"]:
        assert client.post(f"/api/v1/defects/{d['id']}/review", json={"action": "confirm"}).status_code == 200
    bad = client.post(f"/api/v1/inspections/{ins['id']}/defects",
                      json={"class_name": MODEL_NAMES[0], "box": [0, 0, ins["width"] + 5, 10]})
    assert bad.status_code == 422
    added = client.post(f"/api/v1/inspections/{ins['id']}/defects",
                        json={"class_name": MODEL_NAMES[1], "box": [2, 3, 40, 30]})
    assert added.status_code == 201, added.text
    body = added.json()
    assert (body["source"], body["review_status"], body["box"]) == ("operator", "confirmed", [2, 3, 40, 30])
    assert [h["action"] for h in body["history"]] == ["add"]
    done = client.post(f"/api/v1/inspections/{ins['id']}/review", json={"action": "complete"})
    assert done.status_code == 200 and done.json()["fully_reviewed_at"]
    assert client.post("/api/v1/inspections/999999/review", json={"action": "complete"}).status_code == 404

    left = client.get("/api/v1/review/queue", params={"fully_reviewed": "false", "limit": 1000}).json()
    assert ins["id"] not in [i["inspection"]["id"] for i in left["items"]]
    assert len(left["items"]) == len(seeded) - 1  # OK frames too: a miss may be drawn on them
    stats = client.get("/api/v1/stats", params={"from": "2026-01-01T00:00:00Z",
                                                "to": "2026-12-31T00:00:00Z", "bucket": "day"}).json()
    assert stats["reviews"]["fully_reviewed_frames"] == 1 and stats["reviews"]["missed"] == 1
    undo = client.post(f"/api/v1/defects/{body['id']}/review", json={"action": "undo"})
    assert undo.status_code == 200 and undo.json()["review_status"] == "rejected"
    again = client.post(f"/api/v1/defects/{body['id']}/review", json={"action": "undo"})
    assert again.status_code == 409


def test_drawn_misses_and_corrected_boxes_reach_the_reviewed_export(db, tmp_path):
    from app.reviewed_export import export_reviewed

    data_dir = tmp_path / "data"
    frames = store_frames(db, [Frame("ng", T0, [("patches", 0.9, (10.0, 10.0, 30.0, 30.0))]),
                               Frame("ok", T0 + timedelta(minutes=1))],
                          data_dir=data_dir, image_policy="always")
    ng, ok = (f.row for f in frames)
    with db.session() as s:
        review_defect(s, s.get(Defect, ng.defects[0].id), ReviewRequest("confirm", box=[20, 20, 40, 40]),
                      "op", NAMES)
        add_missed_defect(s, s.get(Inspection, ok.id), "scratches", [50, 40, 90, 80], "op", NAMES)
        s.commit()
    out = tmp_path / "out"
    with db.session() as s:
        report = export_reviewed(s, data_dir, out, NAMES)
    assert sum(report.images.values()) == 2 and report.boxes == 2
    labels = {p.stem: p.read_text().split() for p in out.glob("labels/*/*.txt")}
    # the corrected box (centre 0.3, 0.375; 0.2 x 0.25) and the drawn miss (class 2, scratches)
    assert labels["ng"] == ["1", "0.300000", "0.375000", "0.200000", "0.250000"]
    assert labels["ok"] == ["2", "0.700000", "0.750000", "0.400000", "0.500000"]
