"""MES queries over inspections and defects: filters, keyset pagination with opaque cursors, and CSV.

Times are stored in UTC (SQLite keeps them naive, PostgreSQL as timestamptz); every datetime that enters
a query goes through :func:`app.vocabulary.to_utc` first. Rows leave as the public models of
:mod:`app.schemas` (JSON pages and CSV rows alike).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from app.db.models import Defect, Inspection
from app.errors import UserError
from app.schemas import DefectInContext, InspectionPublic, PublicModel, csv_columns, csv_values
from app.vocabulary import iso, to_utc

Kind = Literal["inspections", "defects"]
SORT_FIELDS = ("captured_at", "id")
ORDERS = ("asc", "desc")
MAX_LIMIT = 1000


class QueryError(UserError):
    """A bad filter, sort, range or cursor."""

    reason = "bad_query"


def _bind_time(value: datetime) -> datetime:
    # SQLite's DateTime ignores tzinfo when binding; feed it UTC so comparisons line up.
    return to_utc(value)


@dataclass(frozen=True)
class Filters:
    """All filters of GET /inspections and GET /defects. ``start`` is inclusive, ``end`` exclusive."""

    start: datetime | None = None
    end: datetime | None = None
    line: str | None = None
    station: str | None = None
    camera_id: str | None = None
    verdict: str | None = None
    class_name: str | None = None
    min_confidence: float | None = None
    review_status: str | None = None
    part_id: str | None = None
    fully_reviewed: bool | None = None  # the frame's review state (an operator marked it complete)

    def active(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Sort:
    field: str = "captured_at"
    order: str = "desc"

    def __post_init__(self) -> None:
        if self.field not in SORT_FIELDS:
            raise QueryError(f"sort must be one of {', '.join(SORT_FIELDS)}, got {self.field!r}")
        if self.order not in ORDERS:
            raise QueryError(f"order must be asc or desc, got {self.order!r}")


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None


# -- cursors --------------------------------------------------------------------------------------

def encode_cursor(kind: Kind, sort: Sort, captured_at: datetime, row_id: int) -> str:
    doc = {"k": kind, "s": sort.field, "o": sort.order, "t": iso(captured_at), "i": row_id}
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: Kind, sort: Sort, cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
        t = to_utc(datetime.fromisoformat(doc["t"].replace("Z", "+00:00")))
        i = int(doc["i"])
        k, s, o = doc["k"], doc["s"], doc["o"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise QueryError("cursor is not valid; use next_cursor from a previous page unchanged") from exc
    if (k, s, o) != (kind, sort.field, sort.order):
        raise QueryError(
            f"cursor belongs to a {k} query sorted by {s} {o}; repeat the query with the same sort and order"
        )
    return t, i


# -- filters --------------------------------------------------------------------------------------

def effective_class():  # noqa: ANN201 - SQL expression
    """The class a defect has after review: the reviewed class where set, else the detected class."""
    return func.coalesce(Defect.reviewed_class_name, Defect.class_name)


def _defect_conditions(f: Filters) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.class_name is not None:
        conds.append(effective_class() == f.class_name)
    if f.min_confidence is not None:
        conds.append(Defect.confidence >= f.min_confidence)
    if f.review_status is not None:
        conds.append(Defect.review_status == f.review_status)
    return conds


def inspection_conditions(f: Filters) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.start is not None:
        conds.append(Inspection.captured_at >= _bind_time(f.start))
    if f.end is not None:
        conds.append(Inspection.captured_at < _bind_time(f.end))
    for name in ("line", "station", "camera_id", "verdict", "part_id"):
        value = getattr(f, name)
        if value is not None:
            conds.append(getattr(Inspection, name) == value)
    if f.fully_reviewed is not None:
        column = Inspection.fully_reviewed_at
        conds.append(column.is_not(None) if f.fully_reviewed else column.is_(None))
    return conds


def _keyset(
    sort: Sort, time_col: Any, id_col: Any, after: tuple[datetime, int] | None
) -> ColumnElement[bool] | None:
    if after is None:
        return None
    t, i = after
    t = _bind_time(t)
    if sort.field == "id":
        return id_col > i if sort.order == "asc" else id_col < i
    if sort.order == "asc":
        return or_(time_col > t, and_(time_col == t, id_col > i))
    return or_(time_col < t, and_(time_col == t, id_col < i))


def _order(sort: Sort, time_col: Any, id_col: Any) -> list[Any]:
    cols = [id_col] if sort.field == "id" else [time_col, id_col]
    return [c.asc() if sort.order == "asc" else c.desc() for c in cols]


def inspections_select(f: Filters, sort: Sort, after: tuple[datetime, int] | None = None) -> Select:
    stmt = select(Inspection).options(selectinload(Inspection.defects))
    conds = inspection_conditions(f)
    dconds = _defect_conditions(f)
    if dconds:
        conds.append(exists().where(Defect.inspection_id == Inspection.id, *dconds))
    ks = _keyset(sort, Inspection.captured_at, Inspection.id, after)
    if ks is not None:
        conds.append(ks)
    return stmt.where(*conds).order_by(*_order(sort, Inspection.captured_at, Inspection.id))


def defects_select(f: Filters, sort: Sort, after: tuple[datetime, int] | None = None) -> Select:
    stmt = select(Defect, Inspection).join(Inspection, Inspection.id == Defect.inspection_id)
    conds = inspection_conditions(f) + _defect_conditions(f)
    ks = _keyset(sort, Inspection.captured_at, Defect.id, after)
    if ks is not None:
        conds.append(ks)
    return stmt.where(*conds).order_by(*_order(sort, Inspection.captured_at, Defect.id))


def fetch_page(session: Session, kind: Kind, f: Filters, sort: Sort, limit: int,
               cursor: str | None = None) -> Page:
    """One page of ``kind``; items are Inspection rows, or (Defect, Inspection) pairs for defects."""
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    after = decode_cursor(kind, sort, cursor) if cursor else None
    if kind == "inspections":
        rows: Sequence[Any] = session.scalars(inspections_select(f, sort, after).limit(limit + 1)).all()
    else:
        rows = session.execute(defects_select(f, sort, after).limit(limit + 1)).all()
    items = list(rows[:limit])
    next_cursor = None
    if len(rows) > limit and items:
        last = items[-1]
        if kind == "inspections":
            next_cursor = encode_cursor(kind, sort, last.captured_at, last.id)
        else:
            defect, inspection = last
            next_cursor = encode_cursor(kind, sort, inspection.captured_at, defect.id)
    return Page(items=items, next_cursor=next_cursor)


# -- views ----------------------------------------------------------------------------------------

ITEM_MODELS: dict[Kind, type[PublicModel]] = {"inspections": InspectionPublic, "defects": DefectInContext}
"""The public model of one item of each kind: a JSON page item and a CSV row."""


def page_view(kind: Kind, page: Page) -> list[PublicModel]:
    if kind == "inspections":
        return [InspectionPublic.from_row(i) for i in page.items]
    return [DefectInContext.from_rows(d, i) for d, i in page.items]


def _csv_row(kind: Kind, item: Any) -> list[Any]:
    if kind == "inspections":
        view: PublicModel = InspectionPublic.from_row(item, defects=())  # the CSV has defect_count only
    else:
        view = DefectInContext.from_rows(*item)
    return csv_values(view)


# -- CSV ------------------------------------------------------------------------------------------

def iter_csv(session_factory: Callable[[], Session], kind: Kind, f: Filters, sort: Sort,
             chunk: int = 500, cursor: str | None = None, max_rows: int | None = None) -> Iterator[str]:
    """The result (from ``cursor``, at most ``max_rows`` rows, default all) as CSV text chunks, read page
    by page with its own session, so it can be streamed after the request's session is gone."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(csv_columns(ITEM_MODELS[kind]))
    left = max_rows
    with session_factory() as session:
        while left is None or left > 0:
            size = chunk if left is None else min(chunk, left)
            page = fetch_page(session, kind, f, sort, size, cursor)
            for item in page.items:
                writer.writerow(["" if v is None else v for v in _csv_row(kind, item)])
            if left is not None:
                left -= len(page.items)
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            session.expunge_all()
            if page.next_cursor is None:
                return
            cursor = page.next_cursor
