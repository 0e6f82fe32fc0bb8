"""GET /inspections: filtered, keyset-paginated inspections (JSON or CSV)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from app.api.deps import DatabaseDep
from app.api.listing import (
    CursorParam,
    FormatParam,
    LimitParam,
    OrderParam,
    SortParam,
    filters_params,
    list_response,
    list_responses,
)
from app.db.queries import Filters
from app.schemas import InspectionPage, InspectionPublic

router = APIRouter(tags=["mes"])


@router.get("/inspections", response_model=InspectionPage,
            summary="Inspections matching the filters, newest first by default",
            responses=list_responses("inspections", InspectionPublic))
def list_inspections(
    request: Request,
    db: DatabaseDep,
    filters: Annotated[Filters, Depends(filters_params)],
    sort: SortParam = "captured_at",
    order: OrderParam = "desc",
    limit: LimitParam = None,
    cursor: CursorParam = None,
    fmt: FormatParam = None,
) -> Any:
    """Defect filters (class_name, min_confidence, review_status) keep inspections having at least one
    matching defect."""
    return list_response(request, db, "inspections", filters, sort, order, limit, cursor, fmt)
