"""MES API on seeded data: filters, keyset pagination, CSV, parts verdict, stats, images, reviews with
their audit trail, and export-reviewed. Runs on SQLite and (with INSPECT_TEST_POSTGRES_URL) PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import cv2
import numpy as np
import pytest
from mes_helpers import NAMES, SEED, T0, assert_problem, make_key, seed_database
from sqlalchemy import select

from app.db.models import Defect, DefectReview
from app.db.session import Database


@pytest.fixture
def seeded(client, app_settings) -> dict[int, int]:
    return seed_database(app_settings.database_url, app_settings.data_dir)


def _z(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _newest_first(seeded, items) -> list[int]:
    """Inspection ids of ``items`` (seed rows) in the API's default order: captured_at desc, id desc."""
    rows = sorted(items, key=lambda s: (s.captured_at, seeded[s.index]), reverse=True)
    return [seeded[s.index] for s in rows]


def _all_pages(client, url: str, limit: int) -> tuple[list[dict], int]:
    items, pages, cursor = [], 0, None
    while True:
        sep = "&" if "?" in url else "?"
        resp = client.get(f"{url}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor:
            assert 'rel="next"' in resp.headers["link"] and cursor in resp.headers["link"]
        else:
            assert "link" not in resp.headers
            return items, pages


# -- filters --------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, pred", [
    ("line=L2", lambda s: s.line == "L2"),
    ("line=L1&station=S2", lambda s: s.line == "L1" and s.station == "S2"),
    ("verdict=NG", lambda s: s.verdict == "NG"),
    ("verdict=OK&line=L1", lambda s: s.verdict == "OK" and s.line == "L1"),
    ("camera_id=cam-l1-s1", lambda s: s.camera_id == "cam-l1-s1"),
    ("part_id=P004", lambda s: s.part_id == "P004"),
    ("class_name=scratches", lambda s: any(d.class_name == "scratches" for d in s.defects)),
    ("min_confidence=0.7", lambda s: any(d.confidence >= 0.7 for d in s.defects)),
    ("review_status=pending", lambda s: bool(s.defects)),
    (f"from={_z(T0 + timedelta(minutes=21))}&to={_z(T0 + timedelta(minutes=56))}",
     lambda s: T0 + timedelta(minutes=21) <= s.captured_at < T0 + timedelta(minutes=56)),
])
def test_inspection_filters(client, seeded, query, pred):
    expected = _newest_first(seeded, [s for s in SEED if pred(s)])
    assert expected, "the seed must exercise the filter"
    resp = client.get(f"/api/v1/inspections?{query}&limit=1000")
    assert resp.status_code == 200, resp.text
    assert [i["id"] for i in resp.json()["items"]] == expected


def test_defect_filters_and_fields(client, seeded):
    resp = client.get("/api/v1/defects?line=L1&min_confidence=0.5&limit=1000")
    assert resp.status_code == 200
    items = resp.json()["items"]
    # defect ids grow in seed order, so (captured_at, inspection id, position) orders like (captured_at, id)
    expected = sorted(((s, k, d) for s in SEED for k, d in enumerate(s.defects)
                       if s.line == "L1" and d.confidence >= 0.5),
                      key=lambda t: (t[0].captured_at, seeded[t[0].index], t[1]), reverse=True)
    assert [(i["inspection_id"], i["class_name"], i["confidence"]) for i in items] == \
        [(seeded[s.index], d.class_name, pytest.approx(d.confidence)) for s, _, d in expected]
    first = items[0]
    assert first["line"] == "L1" and first["review_status"] == "pending" and len(first["box"]) == 4
    assert first["captured_at"].endswith("Z")


def test_bad_filters_are_problems(client, seeded):
    assert_problem(client.get("/api/v1/inspections?verdict=MAYBE"), 422)
    assert_problem(client.get("/api/v1/defects?min_confidence=2"), 422)
    assert_problem(client.get("/api/v1/inspections?from=2026-03-02T10:00:00Z&to=2026-03-02T09:00:00Z"), 400)
    assert_problem(client.get("/api/v1/inspections?cursor=not-a-cursor"), 400)
    first = client.get("/api/v1/inspections?limit=2").json()
    # a cursor only fits the sort it came from
    assert_problem(client.get(f"/api/v1/inspections?limit=2&order=asc&cursor={first['next_cursor']}"), 400)
    assert_problem(client.get(f"/api/v1/defects?limit=2&cursor={first['next_cursor']}"), 400)


# -- pagination -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sort, order", [("captured_at", "desc"), ("captured_at", "asc"), ("id", "desc"),
                                         ("id", "asc")])
def test_inspection_pages_have_no_duplicates_or_gaps(client, seeded, sort, order):
    items, pages = _all_pages(client, f"/api/v1/inspections?sort={sort}&order={order}", limit=7)
    ids = [i["id"] for i in items]
    def key(s):
        return (s.captured_at, seeded[s.index]) if sort == "captured_at" else seeded[s.index]

    expected = [seeded[s.index] for s in sorted(SEED, key=key, reverse=order == "desc")]
    assert ids == expected
    assert pages == -(-len(SEED) // 7)


def test_defect_pages_with_a_filter(client, seeded):
    items, _ = _all_pages(client, "/api/v1/defects?sort=captured_at&order=asc&verdict=NG", limit=2)
    ids = [i["id"] for i in items]
    assert len(ids) == len(set(ids)) == sum(len(s.defects) for s in SEED)
    times = [(i["captured_at"], i["id"]) for i in items]
    assert times == sorted(times)


# -- CSV ------------------------------------------------------------------------------------------

def test_csv_by_format_and_by_accept_header(client, seeded):
    resp = client.get("/api/v1/inspections?format=csv&line=L2")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [int(r["id"]) for r in rows] == _newest_first(seeded, [s for s in SEED if s.line == "L2"])
    assert {r["line"] for r in rows} == {"L2"}

    resp = client.get("/api/v1/defects?class_name=scratches", headers={"Accept": "text/csv"})
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    expected = [d for s in SEED for d in s.defects if d.class_name == "scratches"]
    assert len(rows) == len(expected) > 0
    assert {r["class_name"] for r in rows} == {"scratches"}
    assert {"x1", "y2", "review_status", "captured_at"} <= set(rows[0])


def test_csv_streams_more_rows_than_one_chunk(client, seeded):
    from app.api.deps import service_of
    from app.db.queries import Filters, Sort, iter_csv

    sessionmaker = service_of(client.app).db.sessionmaker
    chunks = list(iter_csv(sessionmaker, "inspections", Filters(), Sort("id", "asc"), chunk=4))
    assert len(seeded) > 4 and len(chunks) > 2  # one chunk per page of 4 rows (the header in the first)
    text = "".join(chunks)
    assert text == client.get("/api/v1/inspections?format=csv&sort=id&order=asc").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["id"]) for r in rows] == sorted(seeded.values())
    limited = list(csv.DictReader(io.StringIO(client.get("/api/v1/inspections?format=csv&limit=5").text)))
    assert len(limited) == 5


# -- parts ----------------------------------------------------------------------------------------

def test_part_verdict_uses_the_latest_inspection_per_station(client, seeded, app_settings):
    from app.db.models import Inspection

    # P000 is seed 0 (L1/S1, NG), 1 (L1/S2, OK), 2 (L2/S1, OK). A later OK re-inspection at L1/S1 clears it.
    resp = client.get("/api/v1/parts/P000")
    assert resp.status_code == 200
    body = resp.json()
    assert body["verdict"] == "NG" and body["inspections"] == 3
    by_station = {(s["line"], s["station"]): s for s in body["stations"]}
    assert by_station[("L1", "S1")]["verdict"] == "NG"
    assert by_station[("L1", "S2")]["verdict"] == "OK"

    db = Database(app_settings.database_url)
    with db.session() as session:
        session.add(Inspection(frame_uid="rework-1", camera_id="cam-l1-s1", line="L1", station="S1",
                               part_id="P000", captured_at=T0 + timedelta(hours=5), verdict="OK",
                               defect_count=0, model_version="seed-1", width=160, height=120))
        session.commit()
    db.dispose()
    body = client.get("/api/v1/parts/P000").json()
    assert body["verdict"] == "OK" and body["inspections"] == 4
    latest = {(s["line"], s["station"]): s for s in body["stations"]}[("L1", "S1")]
    assert latest["latest"]["frame_uid"] == "rework-1" and latest["inspections"] == 2

    assert_problem(client.get("/api/v1/parts/NOPE"), 404)


# -- stats ----------------------------------------------------------------------------------------

def test_stats_counts_yield_classes_and_false_positive_rate(client, seeded):
    start, end = _z(T0), _z(T0 + timedelta(hours=3))
    url = f"/api/v1/stats?from={start}&to={end}&bucket=hour"
    body = client.get(url).json()
    n_ng = sum(s.verdict == "NG" for s in SEED)
    assert body["totals"] == {"inspections": len(SEED), "ok": len(SEED) - n_ng, "ng": n_ng,
                              "yield": pytest.approx((len(SEED) - n_ng) / len(SEED), abs=1e-6)}
    for line in ("L1", "L2"):
        rows = [s for s in SEED if s.line == line]
        ng = sum(s.verdict == "NG" for s in rows)
        [got] = [r for r in body["lines"] if r["line"] == line]
        assert (got["inspections"], got["ng"]) == (len(rows), ng)
        assert got["yield"] == pytest.approx((len(rows) - ng) / len(rows), abs=1e-6)
    assert {(r["line"], r["station"]) for r in body["stations"]} == {("L1", "S1"), ("L1", "S2"), ("L2", "S1")}
    expected_classes: dict[str, int] = {}
    for s in SEED:
        for d in s.defects:
            expected_classes[d.class_name] = expected_classes.get(d.class_name, 0) + 1
    assert {r["class_name"]: r["defects"] for r in body["classes"]} == expected_classes
    # hourly buckets: 3 in the range, and the timeline adds up to the totals
    assert len(body["buckets"]) == 3
    first_hour = [s for s in SEED if s.captured_at < T0 + timedelta(hours=1)]
    got_first = sum(r["inspections"] for r in body["timeline"] if r["bucket"] == body["buckets"][0])
    assert got_first == len(first_hour)
    assert sum(r["defects"] for r in body["class_timeline"]) == sum(expected_classes.values())
    assert body["reviews"]["false_positive_rate"] is None

    # two reviews: one rejected, one confirmed -> FP rate 0.5; the rejected box leaves the class counts
    defects = client.get("/api/v1/defects?class_name=scratches&sort=id&order=asc").json()["items"]
    client.post(f"/api/v1/defects/{defects[0]['id']}/review", json={"action": "reject"})
    client.post(f"/api/v1/defects/{defects[1]['id']}/review", json={"action": "confirm"})
    body = client.get(url).json()
    assert body["reviews"]["reviewed"] == 2 and body["reviews"]["rejected"] == 1
    assert body["reviews"]["false_positive_rate"] == pytest.approx(0.5)
    assert {r["class_name"]: r["defects"] for r in body["classes"]}["scratches"] == \
        expected_classes["scratches"] - 1

    day = client.get(f"/api/v1/stats?from={start}&to={end}&bucket=day&line=L2").json()
    assert day["totals"]["inspections"] == sum(s.line == "L2" for s in SEED)
    assert len(day["buckets"]) == 1
    assert_problem(client.get(f"/api/v1/stats?from={end}&to={start}"), 400)
    assert_problem(client.get("/api/v1/stats?bucket=week"), 422)


# -- images ---------------------------------------------------------------------------------------

def test_original_and_annotated_images(client, seeded):
    ng = next(s for s in SEED if len(s.defects) == 2)
    iid = seeded[ng.index]
    orig = client.get(f"/api/v1/inspections/{iid}/image")
    assert orig.status_code == 200 and orig.headers["content-type"] == "image/jpeg"
    a = cv2.imdecode(np.frombuffer(orig.content, np.uint8), cv2.IMREAD_COLOR)
    ann = client.get(f"/api/v1/inspections/{iid}/image/annotated")
    assert ann.status_code == 200 and ann.headers["content-type"] == "image/jpeg"
    b = cv2.imdecode(np.frombuffer(ann.content, np.uint8), cv2.IMREAD_COLOR)
    assert a is not None and b is not None and a.shape == b.shape == (120, 160, 3)
    diff = np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 40
    # the drawn box edges differ from the original; far from any box the frame is unchanged
    x1, y1, x2, y2 = (int(v) for v in ng.defects[0].box)
    assert diff[y1:y2 + 1, x1].mean() > 0.5
    assert diff[100:, :10].mean() < 0.05

    ok = next(s for s in SEED if not s.defects)
    assert_problem(client.get(f"/api/v1/inspections/{seeded[ok.index]}/image"), 404)
    assert_problem(client.get(f"/api/v1/inspections/{seeded[ok.index]}/image/annotated"), 404)
    assert_problem(client.get("/api/v1/inspections/999999/image/annotated"), 404)


def test_annotated_image_missing_file_is_404(client, seeded, app_settings):
    ng = next(s for s in SEED if s.defects)
    (app_settings.data_dir / f"images/seed/{ng.frame_uid}.jpg").unlink()
    assert_problem(client.get(f"/api/v1/inspections/{seeded[ng.index]}/image/annotated"), 404)


# -- reviews --------------------------------------------------------------------------------------

@pytest.fixture
def operator_client(app_settings, seeded):
    """The app with auth on and an operator key named 'op-anna' in the headers."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    key = make_key(app_settings.database_url, "operator", "op-anna")
    # beside `client`: a data folder (journal) of its own
    settings = app_settings.model_copy(update={"auth_enabled": True,
                                               "data_dir": app_settings.data_dir.with_name("data-op")})
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        yield c


def _audit(database_url: str, defect_id: int) -> tuple[Defect, list[DefectReview]]:
    db = Database(database_url)
    try:
        with db.session() as session:
            defect = session.get(Defect, defect_id)
            rows = list(session.scalars(select(DefectReview).where(DefectReview.defect_id == defect_id)
                                        .order_by(DefectReview.id)))
            session.expunge_all()
            return defect, rows
    finally:
        db.dispose()


def test_review_is_stored_audited_and_can_be_redone(operator_client, app_settings):
    client = operator_client
    item = client.get("/api/v1/defects?review_status=pending&limit=1").json()["items"][0]
    did = item["id"]

    resp = client.post(f"/api/v1/defects/{did}/review", json={"action": "confirm", "note": "clear crack"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["review_status"] == "confirmed"
    defect, audit = _audit(app_settings.database_url, did)
    assert defect.review_status == "confirmed" and defect.reviewed_by == "op-anna"
    assert defect.reviewed_class_name == item["class_name"]
    assert len(audit) == 1
    a = audit[0]
    assert (a.actor, a.action, a.before_status, a.after_status, a.note) == \
        ("op-anna", "confirm", "pending", "confirmed", "clear crack")

    resp = client.post(f"/api/v1/defects/{did}/review",
                       json={"action": "reclassify", "class_name": "patches"})
    assert resp.status_code == 200
    defect, audit = _audit(app_settings.database_url, did)
    assert (defect.review_status, defect.reviewed_class_name, defect.reviewed_class_id) == \
        ("reclassified", "patches", NAMES.index("patches"))
    assert len(audit) == 2
    assert (audit[1].before_status, audit[1].after_status, audit[1].before_class_name,
            audit[1].after_class_name) == ("confirmed", "reclassified", item["class_name"], "patches")

    client.post(f"/api/v1/defects/{did}/review", json={"action": "reject"})
    detail = client.get(f"/api/v1/defects/{did}").json()
    assert detail["review_status"] == "rejected"
    assert [h["action"] for h in detail["history"]] == ["confirm", "reclassify", "reject"]
    assert detail["history"][2]["after_class_name"] is None and detail["history"][2]["actor"] == "op-anna"
    assert detail["inspection"]["id"] == item["inspection_id"]
    assert did not in [d["id"] for d in client.get("/api/v1/defects?review_status=pending&limit=1000")
                       .json()["items"]]
    rejected = client.get("/api/v1/defects?review_status=rejected").json()["items"]
    assert [d["id"] for d in rejected] == [did]


def test_bad_reviews_are_422_problems_and_change_nothing(client, seeded, app_settings):
    did = client.get("/api/v1/defects?limit=1").json()["items"][0]["id"]
    body = assert_problem(client.post(f"/api/v1/defects/{did}/review",
                                      json={"action": "reclassify", "class_name": "rust"}), 422)
    assert "rust" in body["detail"] and "crazing" in body["detail"]
    assert_problem(client.post(f"/api/v1/defects/{did}/review", json={"action": "reclassify"}), 422)
    assert_problem(client.post(f"/api/v1/defects/{did}/review",
                               json={"action": "confirm", "class_name": "patches"}), 422)
    assert_problem(client.post(f"/api/v1/defects/{did}/review", json={"action": "approve"}), 422)
    assert_problem(client.post(f"/api/v1/defects/{did}/review", json={"action": "confirm", "x": 1}), 422)
    assert_problem(client.post("/api/v1/defects/999999/review", json={"action": "confirm"}), 404)
    defect, audit = _audit(app_settings.database_url, did)
    assert defect.review_status == "pending" and audit == []


# -- export-reviewed ------------------------------------------------------------------------------

def test_export_reviewed_writes_a_trainable_dataset(client, seeded, app_settings, tmp_path, capsys):
    from app.cli import main

    two = next(s for s in SEED if len(s.defects) == 2)  # reviewed: one reclassified, one rejected
    one = next(s for s in SEED if len(s.defects) == 1)  # reviewed: confirmed
    gone = [s for s in SEED if len(s.defects) == 2][1]  # all rejected -> background image
    pending = [s for s in SEED if len(s.defects) == 1][1]  # left pending -> excluded
    detail = {s.index: client.get(f"/api/v1/defects?part_id={s.part_id}&camera_id={s.camera_id}&sort=id"
                                  "&order=asc").json()["items"] for s in (two, one, gone, pending)}
    d_two = [d for d in detail[two.index] if d["inspection_id"] == seeded[two.index]]
    client.post(f"/api/v1/defects/{d_two[0]['id']}/review",
                json={"action": "reclassify", "class_name": "inclusion"})
    client.post(f"/api/v1/defects/{d_two[1]['id']}/review", json={"action": "reject"})
    [d_one] = [d for d in detail[one.index] if d["inspection_id"] == seeded[one.index]]
    client.post(f"/api/v1/defects/{d_one['id']}/review", json={"action": "confirm"})
    for d in detail[gone.index]:
        if d["inspection_id"] == seeded[gone.index]:
            client.post(f"/api/v1/defects/{d['id']}/review", json={"action": "reject"})

    out = tmp_path / "export"
    rc = main(["dataset", "export-reviewed", "--out", str(out), "--names", ",".join(NAMES),
               "--database-url", app_settings.database_url, "--data-dir", str(app_settings.data_dir)])
    assert rc == 0, capsys.readouterr().err
    labels = {p.stem: p.read_text().split("\n")[:-1] for p in out.glob("labels/*/*.txt")}
    assert set(labels) == {two.frame_uid, one.frame_uid, gone.frame_uid}
    assert labels[gone.frame_uid] == []
    [line_two] = labels[two.frame_uid]
    cls, cx, cy, w, h = line_two.split()
    x1, y1, x2, y2 = two.defects[0].box
    assert int(cls) == NAMES.index("inclusion")
    assert (float(cx), float(cy), float(w), float(h)) == pytest.approx(
        ((x1 + x2) / 2 / 160, (y1 + y2) / 2 / 120, (x2 - x1) / 160, (y2 - y1) / 120), abs=1e-5)
    assert labels[one.frame_uid][0].split()[0] == str(one.defects[0].class_id)

    try:
        from models.data.formats import load_data_yaml
    except ImportError:  # pragma: no cover - the training package is optional here
        load_data_yaml = None
    if load_data_yaml is not None:
        spec = load_data_yaml(out / "data.yaml")
        assert spec.names == list(NAMES)
        listed = {p.stem for p in spec.train + spec.val}
        assert listed == set(labels)
        for p in spec.train + spec.val:
            assert cv2.imread(str(p)) is not None

    # --include-pending adds the pending image with its detected class
    out2 = tmp_path / "export2"
    assert main(["dataset", "export-reviewed", "--out", str(out2), "--names", ",".join(NAMES),
                 "--include-pending", "--line", pending.line, "--database-url", app_settings.database_url,
                 "--data-dir", str(app_settings.data_dir)]) == 0
    stems = {p.stem for p in out2.glob("labels/*/*.txt")}
    assert pending.frame_uid in stems and all(s.startswith("seed-") for s in stems)
    assert main(["dataset", "export-reviewed", "--out", str(out2), "--names", ",".join(NAMES),
                 "--database-url", app_settings.database_url]) == 2
    assert "not empty" in capsys.readouterr().err


def test_export_reviewed_with_nothing_reviewed_is_a_clear_error(seeded, app_settings, tmp_path, capsys):
    from app.cli import main

    rc = main(["dataset", "export-reviewed", "--out", str(tmp_path / "x"), "--names", ",".join(NAMES),
               "--database-url", app_settings.database_url, "--data-dir", str(app_settings.data_dir)])
    assert rc == 2
    assert "nothing to export" in capsys.readouterr().err
