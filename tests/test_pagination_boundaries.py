"""Keyset pagination (``app.db.queries.fetch_page``) on its boundaries, on SQLite and PostgreSQL:
equal ``captured_at`` values broken by id in both orders, limit 1, ``MAX_LIMIT`` and one more, a last
page that exactly fills the limit, and cursors that belong to another query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from db_helpers import NAMES, Frame, store_frames
from sqlalchemy import select

from app.db.models import Defect, Inspection
from app.db.queries import MAX_LIMIT, Filters, QueryError, Sort, fetch_page
from app.db.session import Database

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
# minutes after T0 per frame, stored in frame_uid order (so ids follow it): ties spread over the ids
OFFSETS = [5, 0, 5, 0, 3, 5, 0, 3, 5, 0]


def store(db: Database, offsets: list[int], defects_per_frame: int = 0) -> None:
    """One frame per offset, in frame_uid order (so ids follow the list)."""
    boxes = [(NAMES[k % len(NAMES)], 0.9, (1.0, 1.0, 5.0, 5.0)) for k in range(defects_per_frame)]
    store_frames(db, [Frame(f"f{i:05d}", T0 + timedelta(minutes=m), boxes) for i, m in enumerate(offsets)])


def key(item, kind: str) -> tuple[datetime, int]:
    if kind == "inspections":
        return item.captured_at, item.id
    defect, inspection = item
    return inspection.captured_at, defect.id


def walk(db: Database, kind: str, sort: Sort, limit: int) -> list[list[tuple[datetime, int]]]:
    """Every page from the first to the one without a next_cursor, as (captured_at, id) keys."""
    pages, cursor = [], None
    with db.session() as s:
        while True:
            page = fetch_page(s, kind, Filters(), sort, limit, cursor)
            pages.append([key(item, kind) for item in page.items])
            if page.next_cursor is None:
                return pages
            cursor = page.next_cursor
            assert len(pages) <= 1000, "pagination does not end"


def expected(db: Database, kind: str, sort: Sort) -> list[tuple[datetime, int]]:
    """The order the pages must follow, from a plain unordered read sorted here."""
    if kind == "inspections":
        stmt = select(Inspection.captured_at, Inspection.id)
    else:
        stmt = select(Inspection.captured_at, Defect.id).join(Inspection, Defect.inspection)
    with db.session() as s:
        keys = [(t, i) for t, i in s.execute(stmt)]
    by = (lambda k: k[1]) if sort.field == "id" else (lambda k: (k[0], k[1]))
    return sorted(keys, key=by, reverse=sort.order == "desc")


SORTS = [Sort("captured_at", "asc"), Sort("captured_at", "desc"), Sort("id", "asc"), Sort("id", "desc")]


@pytest.mark.parametrize("sort", SORTS, ids=lambda s: f"{s.field}-{s.order}")
def test_inspection_pages_break_time_ties_by_id(db, sort):
    store(db, OFFSETS)
    want = expected(db, "inspections", sort)
    assert len(want) == len(OFFSETS)
    for limit in (1, 2, 3, 4, len(OFFSETS)):
        pages = walk(db, "inspections", sort, limit)
        assert [k for page in pages for k in page] == want, limit  # nothing skipped, nothing repeated
        assert [len(p) for p in pages[:-1]] == [limit] * (len(pages) - 1), limit
        assert 1 <= len(pages[-1]) <= limit, limit  # no empty trailing page


@pytest.mark.parametrize("sort", SORTS[:2], ids=lambda s: f"{s.field}-{s.order}")
def test_defect_pages_break_ties_by_defect_id(db, sort):
    # three defects per frame: every defect shares its time with at least two others
    store(db, OFFSETS[:4], defects_per_frame=3)
    pages = walk(db, "defects", sort, 2)
    want = expected(db, "defects", sort)
    assert len(want) == 12
    assert [k for page in pages for k in page] == want
    assert [len(p) for p in pages] == [2] * 6


def test_a_page_that_exactly_fills_the_limit_is_the_last(db):
    store(db, OFFSETS[:4])
    with db.session() as s:
        whole = fetch_page(s, "inspections", Filters(), Sort(), 4)
        assert len(whole.items) == 4 and whole.next_cursor is None
        first = fetch_page(s, "inspections", Filters(), Sort(), 2)
        assert len(first.items) == 2 and first.next_cursor is not None
        second = fetch_page(s, "inspections", Filters(), Sort(), 2, first.next_cursor)
        assert len(second.items) == 2 and second.next_cursor is None
        one_short = fetch_page(s, "inspections", Filters(), Sort(), 3)
        assert len(one_short.items) == 3 and one_short.next_cursor is not None
        assert fetch_page(s, "inspections", Filters(), Sort(), 5).next_cursor is None


def test_an_empty_result_has_no_cursor(db):
    with db.session() as s:
        page = fetch_page(s, "inspections", Filters(), Sort(), 1)
    assert page.items == [] and page.next_cursor is None


def test_max_limit_is_accepted_and_one_more_is_refused(db):
    store(db, [i % 7 for i in range(MAX_LIMIT + 1)])
    with db.session() as s:
        full = fetch_page(s, "inspections", Filters(), Sort("captured_at", "asc"), MAX_LIMIT)
        assert len(full.items) == MAX_LIMIT and full.next_cursor is not None
        rest = fetch_page(s, "inspections", Filters(), Sort("captured_at", "asc"), MAX_LIMIT,
                          full.next_cursor)
        assert len(rest.items) == 1 and rest.next_cursor is None
        seen = {i.id for i in full.items} | {i.id for i in rest.items}
        assert len(seen) == MAX_LIMIT + 1
        for bad in (MAX_LIMIT + 1, 0, -1):
            with pytest.raises(QueryError, match=f"between 1 and {MAX_LIMIT}, got {bad}"):
                fetch_page(s, "inspections", Filters(), Sort(), bad)


MISMATCHES = [
    ("inspections", Sort("captured_at", "asc"), "inspections", Sort("captured_at", "desc")),
    ("inspections", Sort("captured_at", "desc"), "inspections", Sort("id", "desc")),
    ("inspections", Sort("id", "asc"), "inspections", Sort("id", "desc")),
    ("inspections", Sort("captured_at", "desc"), "defects", Sort("captured_at", "desc")),
    ("defects", Sort("id", "asc"), "inspections", Sort("id", "asc")),
]


def test_a_cursor_from_another_query_is_refused(db):
    store(db, OFFSETS[:3], defects_per_frame=1)
    with db.session() as s:
        for kind, sort, other_kind, other_sort in MISMATCHES:
            cursor = fetch_page(s, kind, Filters(), sort, 1).next_cursor
            assert cursor is not None
            with pytest.raises(QueryError, match=f"cursor belongs to a {kind} query sorted by {sort.field} "
                                                 f"{sort.order}"):
                fetch_page(s, other_kind, Filters(), other_sort, 1, cursor)
            assert len(fetch_page(s, kind, Filters(), sort, 1, cursor).items) == 1


def test_a_malformed_cursor_is_refused(db):
    with db.session() as s:
        for cursor in ("not-a-cursor", "=", "e30", "eyJrIjoiaW5zcGVjdGlvbnMifQ"):  # e30: {}; then {"k": ...}
            with pytest.raises(QueryError, match="cursor is not valid"):
                fetch_page(s, "inspections", Filters(), Sort(), 1, cursor)
