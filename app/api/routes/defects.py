"""GET /defects (filtered list, JSON or CSV), GET /defects/{id} (with its inspection and review
history) and POST /defects/{id}/review."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.api.deps import DatabaseDep, ServiceDep, SessionDep, require_engine
from app.api.listing import (
    CursorParam,
    FormatParam,
    LimitParam,
    OrderParam,
    SortParam,
    filters_params,
    list_response,
)
from app.api.problems import Problem
from app.api.security import PrincipalDep
from app.db.models import Defect, Inspection
from app.db.queries import Filters, defect_view, inspection_view
from app.reviews import ReviewError, ReviewRequest, review_defect, review_view

read_router = APIRouter(tags=["mes"])
review_router = APIRouter(tags=["review"])

DefectId = Annotated[int, Path(ge=1)]


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["confirm", "reject", "reclassify"]
    class_name: str | None = Field(None, min_length=1, max_length=64,
                                   description="the new class (reclassify only); must be a model class")
    note: str | None = Field(None, max_length=2000)


def _load(session: Session, defect_id: int, for_update: bool = False) -> Defect:
    stmt = (select(Defect).where(Defect.id == defect_id)
            .options(selectinload(Defect.reviews),
                     selectinload(Defect.inspection).selectinload(Inspection.defects))
            .execution_options(populate_existing=True))
    if for_update:
        stmt = stmt.with_for_update(of=Defect)
    defect = session.scalars(stmt).first()
    if defect is None:
        raise Problem(404, f"defect {defect_id} does not exist", reason="not_found")
    return defect


def defect_detail(defect: Defect) -> dict[str, Any]:
    return {
        **defect_view(defect, defect.inspection),
        "inspection": inspection_view(defect.inspection),
        "history": [review_view(r) for r in defect.reviews],
    }


@read_router.get("/defects", summary="Defects matching the filters, newest first by default",
                 responses={200: {"content": {"application/json": {}, "text/csv": {}}}})
def list_defects(
    request: Request,
    db: DatabaseDep,
    filters: Annotated[Filters, Depends(filters_params)],
    sort: SortParam = "captured_at",
    order: OrderParam = "desc",
    limit: LimitParam = None,
    cursor: CursorParam = None,
    fmt: FormatParam = None,
) -> Any:
    return list_response(request, db, "defects", filters, sort, order, limit, cursor, fmt)


@read_router.get("/defects/{defect_id}", summary="One defect, its inspection and its review history")
def read_defect(defect_id: DefectId, session: SessionDep) -> dict[str, Any]:
    return defect_detail(_load(session, defect_id))


def _class_names(service: ServiceDep) -> list[str]:
    return list(require_engine(service, "cannot check the class against the model").names)


@review_router.post("/defects/{defect_id}/review", summary="Confirm, reject or reclassify a defect",
                    responses={404: {"description": "no such defect"},
                               422: {"description": "bad action or class_name not a model class"}})
def review(defect_id: DefectId, body: ReviewIn, service: ServiceDep, session: SessionDep,
           principal: PrincipalDep) -> dict[str, Any]:
    names = _class_names(service) if body.action == "reclassify" else []
    defect = _load(session, defect_id, for_update=True)
    try:
        review_defect(session, defect, ReviewRequest(body.action, body.class_name, body.note),
                      actor=principal.name, class_names=names)
    except ReviewError:
        session.rollback()
        raise
    session.commit()
    if service.webhooks is not None:
        service.webhooks.wake()
    return defect_detail(_load(session, defect_id))
