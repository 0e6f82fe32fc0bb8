"""MES queries on a small hand-made log: every filter at its boundary, keyset pages in both orders of
both sort fields, cursor checks, limits and CSV chunks (cases found by mutation testing of
app/db/queries.py)."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.orm import Session

from app.db.models import Camera, Defect, Inspection
from app.db.queries import (
    MAX_LIMIT,
    Filters,
    QueryError,
    Sort,
    decode_cursor,
    encode_cursor,
    fetch_page,
    iter_csv,
    page_view,
)
from app.db.session import Database

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
# (captured minute, line, station, camera, part, [(class, confidence, review status, reviewed class)])
ROWS = [
    (0, "L1", "S1", "c1", "P1", [("crazing", 0.5, "pending", None)]),
    (0, "L1", "S2", "c2", "P1", []),
    (1, "L2", "S1", None, "P2", [("patches", 0.9, "confirmed", None), ("crazing", 0.3, "pending", None)]),
    (2, "L1", "S1", "c1", "P2", [("inclusion", 0.7, "reclassified", "patches")]),
    (2, "L2", "S2", None, "P3", []),
    (3, "L1", "S1", "c1", "P3", [("scratches", 0.49, "rejected", None)]),
    (-1, "L1", "S2", None, "P9", []),  # stored last, captured first: id order and time order differ
]


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    with database.session() as s:
        s.add_all([Camera(id="c1", line="L1"), Camera(id="c2", line="L1")])
        s.flush()
        for n, (minute, line, station, camera, part, defects) in enumerate(ROWS):
            row = Inspection(frame_uid=f"u{n}", camera_id=camera, line=line, station=station, part_id=part,
                             captured_at=T0 + timedelta(minutes=minute), verdict="NG" if defects else "OK",
                             defect_count=len(defects), model_version="m", width=10, height=10)
            s.add(row)
            s.flush()
            for cls, conf, status, reviewed in defects:
                s.add(Defect(inspection_id=row.id, class_id=0, class_name=cls, confidence=conf, x1=0, y1=0,
                             x2=1, y2=1, review_status=status, reviewed_class_name=reviewed))
            s.flush()
        s.commit()
    try:
        yield database
    finally:
        database.dispose()


def uids(session: Session, f: Filters, sort: Sort | None = None, limit: int = 100) -> list[str]:
    page = fetch_page(session, "inspections", f, sort or Sort("id", "asc"), limit)
    return [i.frame_uid for i in page.items]


def defect_classes(session: Session, f: Filters, sort: Sort | None = None) -> list[str]:
    page = fetch_page(session, "defects", f, sort or Sort("id", "asc"), 100)
    return [d.class_name for d, _ in page.items]


def test_time_range_is_start_inclusive_and_end_exclusive(db: Database) -> None:
    with db.session() as s:
        assert uids(s, Filters(start=T0 + timedelta(minutes=1))) == ["u2", "u3", "u4", "u5"]
        assert uids(s, Filters(end=T0 + timedelta(minutes=1))) == ["u0", "u1", "u6"]
        # an offset time is converted to UTC before it is compared
        local = timezone(timedelta(hours=2))
        assert uids(s, Filters(start=(T0 + timedelta(minutes=2)).astimezone(local))) == ["u3", "u4", "u5"]
        assert uids(s, Filters(start=T0.replace(tzinfo=None) + timedelta(minutes=3))) == ["u5"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (Filters(line="L2"), ["u2", "u4"]),
        (Filters(station="S2"), ["u1", "u4", "u6"]),
        (Filters(camera_id="c1"), ["u0", "u3", "u5"]),
        (Filters(verdict="OK"), ["u1", "u4", "u6"]),
        (Filters(part_id="P2"), ["u2", "u3"]),
        (Filters(line="L1", station="S1"), ["u0", "u3", "u5"]),
        (Filters(class_name="patches"), ["u2", "u3"]),  # u3 by its reviewed class
        (Filters(class_name="inclusion"), []),
        (Filters(min_confidence=0.5), ["u0", "u2", "u3"]),
        (Filters(min_confidence=0.9), ["u2"]),
        (Filters(review_status="pending"), ["u0", "u2"]),
        (Filters(class_name="crazing", min_confidence=0.4), ["u0"]),
        (Filters(), ["u0", "u1", "u2", "u3", "u4", "u5", "u6"]),
    ],
)
def test_inspection_filters(db: Database, filters: Filters, expected: list[str]) -> None:
    with db.session() as s:
        assert uids(s, filters) == expected


def test_defect_filters(db: Database) -> None:
    with db.session() as s:
        assert defect_classes(s, Filters(class_name="patches")) == ["patches", "inclusion"]
        assert defect_classes(s, Filters(min_confidence=0.49)) == ["crazing", "patches", "inclusion",
                                                                   "scratches"]
        assert defect_classes(s, Filters(review_status="rejected")) == ["scratches"]
        assert defect_classes(s, Filters(line="L2")) == ["patches", "crazing"]
        assert defect_classes(s, Filters(start=T0 + timedelta(minutes=2))) == ["inclusion", "scratches"]


def test_filters_active_lists_only_the_set_ones() -> None:
    assert Filters(line="L1", min_confidence=0.0).active() == {"line": "L1", "min_confidence": 0.0}
    assert Filters().active() == {}


def test_sort_is_checked() -> None:
    assert (Sort().field, Sort().order) == ("captured_at", "desc")
    with pytest.raises(QueryError, match=r"^sort must be one of captured_at, id, got 'x'$"):
        Sort("x")
    with pytest.raises(QueryError, match=r"^order must be asc or desc, got 'up'$"):
        Sort("id", "up")


def walk(s: Session, kind: str, sort: Sort, limit: int) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        page = fetch_page(s, kind, Filters(), sort, limit, cursor)  # type: ignore[arg-type]
        ids = [i.id if kind == "inspections" else i[0].id for i in page.items]
        pages.append(ids)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


@pytest.mark.parametrize(("field", "order"), [("id", "asc"), ("id", "desc"), ("captured_at", "asc"),
                                              ("captured_at", "desc")])
def test_pages_walk_the_whole_order_once(db: Database, field: str, order: str) -> None:
    with db.session() as s:
        full = [i.id for i in fetch_page(s, "inspections", Filters(), Sort(field, order), 100).items]
        minute = {i.id: i.captured_at for i in fetch_page(s, "inspections", Filters(), Sort(), 100).items}
        key = (lambda i: i) if field == "id" else (lambda i: (minute[i], i))
        assert full == sorted(full, key=key, reverse=order == "desc")
        assert (full == sorted(full, reverse=order == "desc")) is (field == "id")
        for limit in (1, 2, 4, 7):
            pages = walk(s, "inspections", Sort(field, order), limit)
            assert [i for p in pages for i in p] == full
            assert all(len(p) == limit for p in pages[:-1])
        dfull = [d.id for d, _ in fetch_page(s, "defects", Filters(), Sort(field, order), 100).items]
        assert len(dfull) == 5
        for limit in (1, 2, 5):
            assert [i for p in walk(s, "defects", Sort(field, order), limit) for i in p] == dfull


def test_the_last_page_has_no_cursor(db: Database) -> None:
    with db.session() as s:
        assert fetch_page(s, "inspections", Filters(), Sort(), 7).next_cursor is None
        assert fetch_page(s, "inspections", Filters(), Sort(), 6).next_cursor is not None
        assert fetch_page(s, "inspections", Filters(line="nope"), Sort(), 5).next_cursor is None


def test_limits(db: Database) -> None:
    with db.session() as s:
        assert len(fetch_page(s, "inspections", Filters(), Sort(), MAX_LIMIT).items) == 7
        assert len(fetch_page(s, "inspections", Filters(), Sort(), 1).items) == 1
        for bad in (0, MAX_LIMIT + 1):
            with pytest.raises(QueryError, match=rf"^limit must be between 1 and 1000, got {bad}$"):
                fetch_page(s, "inspections", Filters(), Sort(), bad)
    assert MAX_LIMIT == 1000


def test_a_cursor_is_unpadded_url_safe_json() -> None:
    cursor = encode_cursor("defects", Sort("id", "asc"), T0, 42)
    assert "=" not in cursor
    doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert doc == {"k": "defects", "s": "id", "o": "asc", "t": "2026-05-01T08:00:00Z", "i": 42}
    assert decode_cursor("defects", Sort("id", "asc"), cursor) == (T0, 42)
    assert base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)) == (
        b'{"k":"defects","s":"id","o":"asc","t":"2026-05-01T08:00:00Z","i":42}')
    for i in range(300):  # every length modulo 4 and every last character before the padding
        for kind in ("defects", "inspections"):
            c = encode_cursor(kind, Sort("captured_at", "desc"), T0 + timedelta(seconds=i), i)
            assert decode_cursor(kind, Sort("captured_at", "desc"), c) == (T0 + timedelta(seconds=i), i)
    # a naive time is taken as UTC and a "Z" time reads back aware
    t, i = decode_cursor("defects", Sort("id", "asc"), encode_cursor("defects", Sort("id", "asc"),
                                                                    T0.replace(tzinfo=None), 7))
    assert (t, t.tzinfo is not None, i) == (T0, True, 7)


def _raw_cursor(doc: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    ["!!!", _raw_cursor([1]), _raw_cursor({"k": "defects", "s": "id", "o": "asc", "t": "x", "i": 1}),
     _raw_cursor({"k": "defects", "s": "id", "o": "asc", "t": "2026-05-01T08:00:00Z", "i": "one"}),
     _raw_cursor({"k": "defects", "s": "id", "o": "asc", "t": 5, "i": 1}),
     _raw_cursor({"s": "id", "o": "asc", "t": "2026-05-01T08:00:00Z", "i": 1}),
     _raw_cursor({"k": "defects", "o": "asc", "t": "2026-05-01T08:00:00Z", "i": 1}),
     _raw_cursor({"k": "defects", "s": "id", "t": "2026-05-01T08:00:00Z", "i": 1}),
     _raw_cursor({"k": "defects", "s": "id", "o": "asc", "i": 1}),
     _raw_cursor({"k": "defects", "s": "id", "o": "asc", "t": "2026-05-01T08:00:00Z", "i": None})],
)
def test_a_broken_cursor_is_refused(cursor: str) -> None:
    with pytest.raises(QueryError, match=r"^cursor is not valid; use next_cursor from a previous page "
                                         r"unchanged$"):
        decode_cursor("defects", Sort("id", "asc"), cursor)


@pytest.mark.parametrize(("kind", "sort"), [("inspections", Sort("id", "asc")),
                                            ("defects", Sort("id", "desc")),
                                            ("defects", Sort("captured_at", "asc"))])
def test_a_cursor_of_another_query_is_refused(kind: str, sort: Sort) -> None:
    cursor = encode_cursor("defects", Sort("id", "asc"), T0, 1)
    message = (r"^cursor belongs to a defects query sorted by id asc; repeat the query with the same sort "
               r"and order$")
    with pytest.raises(QueryError, match=message):
        decode_cursor(kind, sort, cursor)  # type: ignore[arg-type]


def test_page_view_gives_the_public_model_of_each_kind(db: Database) -> None:
    with db.session() as s:
        insp = fetch_page(s, "inspections", Filters(), Sort("id", "asc"), 1)
        [view] = page_view("inspections", insp)
        assert (type(view).__name__, view.frame_uid, len(view.defects)) == ("InspectionPublic", "u0", 1)
        defs = fetch_page(s, "defects", Filters(), Sort("id", "asc"), 1)
        [dview] = page_view("defects", defs)
        assert type(dview).__name__ == "DefectInContext"
        assert (dview.class_name, dview.camera_id, dview.part_id) == ("crazing", "c1", "P1")


def csv_rows(db: Database, kind: str, **kw) -> tuple[list[str], list[list[str]]]:
    text = "".join(iter_csv(db.session, kind, Filters(), Sort("id", "asc"), **kw))  # type: ignore[arg-type]
    assert "\r\n" in text
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


def test_csv_chunks_one_page_each_with_the_header_first(db: Database) -> None:
    chunks = list(iter_csv(db.session, "inspections", Filters(), Sort("id", "asc"), chunk=4))
    assert len(chunks) == 2
    assert chunks[0].count("\r\n") == 5 and chunks[1].count("\r\n") == 3
    assert "".join(chunks) == "".join(iter_csv(db.session, "inspections", Filters(), Sort("id", "asc")))
    header = next(csv.reader(io.StringIO(chunks[0])))
    body = list(csv.reader(io.StringIO("".join(chunks))))[1:]
    assert [r[header.index("frame_uid")] for r in body] == ["u0", "u1", "u2", "u3", "u4", "u5", "u6"]
    assert "defect_count" in header and "defects" not in header


def test_csv_rows_are_capped_and_start_at_a_cursor(db: Database) -> None:
    header, rows = csv_rows(db, "inspections", chunk=2, max_rows=3)
    uid = header.index("frame_uid")
    assert [r[uid] for r in rows] == ["u0", "u1", "u2"]
    with db.session() as s:
        cursor = fetch_page(s, "inspections", Filters(), Sort("id", "asc"), 2).next_cursor
    header, rows = csv_rows(db, "inspections", cursor=cursor, max_rows=2)
    assert [r[uid] for r in rows] == ["u2", "u3"]
    assert list(iter_csv(db.session, "inspections", Filters(), Sort(), max_rows=0)) == []  # not even a header


def test_csv_of_defects_writes_none_as_an_empty_cell(db: Database) -> None:
    header, rows = csv_rows(db, "defects", chunk=500)
    assert [r[header.index("camera_id")] for r in rows] == ["c1", "", "", "c1", "c1"]
    assert [r[header.index("class_name")] for r in rows] == ["crazing", "patches", "crazing", "inclusion",
                                                              "scratches"]
    assert "None" not in {c for r in rows for c in r}


def test_csv_pages_500_rows_at_a_time_by_default(database_url: str) -> None:
    database = Database(database_url)
    try:
        with database.session() as s:
            s.add_all([Inspection(frame_uid=f"bulk{n}", captured_at=T0, verdict="OK", model_version="m",
                                  width=1, height=1) for n in range(501)])
            s.commit()
        chunks = list(iter_csv(database.session, "inspections", Filters(), Sort("id", "asc")))
        assert [c.count("\r\n") for c in chunks] == [501, 1]  # header + 500 rows, then the last row
    finally:
        database.dispose()
