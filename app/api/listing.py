"""The query side of GET /inspections and GET /defects: filter parameters, keyset pages as JSON (with
``next_cursor`` and a ``Link: <...>; rel="next"`` header) or the whole result streamed as CSV."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.openapi import problem_responses
from app.api.params import QUERY_TIME, ClassNameQuery, NameQuery, PartIdQuery
from app.api.problems import Problem
from app.db.models import REVIEW_STATUSES
from app.db.queries import (
    Filters,
    Kind,
    Sort,
    decode_cursor,
    fetch_page,
    iter_csv,
    page_view,
)
from app.db.session import Database
from app.schemas import DefectPage, InspectionPage, PageBase, PublicModel, csv_columns
from app.schemas.common import DatetimeInput
from app.schemas.inspections import ReviewStatus
from app.vocabulary import VERDICTS, Verdict

DEFAULT_LIMIT = 50
PAGE_MODELS: dict[Kind, type[PageBase]] = {"inspections": InspectionPage, "defects": DefectPage}


def list_responses(kind: Kind, item: type[PublicModel]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a list route: a JSON page or CSV (whose header is ``item``'s flat fields), and
    the problems a query can answer."""
    header = ",".join(csv_columns(item))
    return {200: {"description": f"A page of {kind} (JSON), or all of them as CSV (format=csv or "
                                 "Accept: text/csv)",
                  "content": {"text/csv": {"schema": {"type": "string"}, "example": header + "\r\n"}}},
            **problem_responses(400, 422, s400="a bad cursor, sort or range")}


def filters_params(
    start: Annotated[DatetimeInput | None, Query(alias="from", description="captured at or after"),
                     QUERY_TIME] = None,
    end: Annotated[DatetimeInput | None, Query(alias="to", description="captured before (ISO 8601)"),
                   QUERY_TIME] = None,
    line: NameQuery = None,
    station: NameQuery = None,
    camera_id: NameQuery = None,
    verdict: Annotated[Verdict | None, Query()] = None,
    class_name: ClassNameQuery = None,
    min_confidence: Annotated[float | None, Query(ge=0.0, le=1.0)] = None,
    review_status: Annotated[ReviewStatus | None, Query()] = None,
    part_id: PartIdQuery = None,
    fully_reviewed: Annotated[bool | None, Query(
        description="frames an operator marked fully reviewed (true) or not (false)")] = None,
) -> Filters:
    assert verdict is None or verdict in VERDICTS
    assert review_status is None or review_status in REVIEW_STATUSES
    if start is not None and end is not None and start >= end:
        raise Problem(400, "'from' must be before 'to'", reason="bad_range")
    return Filters(start=start, end=end, line=line, station=station, camera_id=camera_id, verdict=verdict,
                   class_name=class_name, min_confidence=min_confidence, review_status=review_status,
                   part_id=part_id, fully_reviewed=fully_reviewed)


def wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def list_response(request: Request, db: Database, kind: Kind, filters: Filters, sort_field: str, order: str,
                  limit: int | None, cursor: str | None, fmt: str | None) -> Any:
    sort = Sort(sort_field, order)  # QueryError (a bad sort, cursor or limit): a 400 problem
    if wants_csv(request, fmt):
        # Validate the cursor now: once streaming has started an error can no longer be answered.
        if cursor:
            decode_cursor(kind, sort, cursor)
        return StreamingResponse(
            iter_csv(db.sessionmaker, kind, filters, sort, cursor=cursor, max_rows=limit),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{kind}.csv"'},
        )
    with db.session() as session:
        page = fetch_page(session, kind, filters, sort, limit or DEFAULT_LIMIT, cursor)
        body = PAGE_MODELS[kind](items=page_view(kind, page), next_cursor=page.next_cursor,
                                 limit=limit or DEFAULT_LIMIT, sort=sort.field, order=sort.order)
    headers = {}
    if page.next_cursor:
        next_url = request.url.include_query_params(cursor=page.next_cursor)
        headers["Link"] = f'<{next_url}>; rel="next"'
    return JSONResponse(body.model_dump(mode="json"), headers=headers)


SortParam = Annotated[Literal["captured_at", "id"], Query(description="sort key")]
OrderParam = Annotated[Literal["asc", "desc"], Query()]
LimitParam = Annotated[int | None, Query(
    ge=1, le=1000, description=f"page size (JSON default {DEFAULT_LIMIT}; CSV default: all rows)")]
CursorParam = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")]
FormatParam = Annotated[Literal["json", "csv"] | None, Query(alias="format",
                                                              description="csv, or send Accept: text/csv")]
