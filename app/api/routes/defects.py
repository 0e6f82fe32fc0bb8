"""GET /defects (filtered list, JSON or CSV), GET /defects/{id} (with its inspection and review
history) and POST /defects/{id}/review (confirm, reject, reclassify, a corrected box, undo)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
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
    list_responses,
)
from app.api.openapi import problem_responses
from app.api.params import RowId
from app.api.problems import Problem
from app.api.security import PrincipalDep
from app.db.models import Defect, Inspection
from app.db.queries import Filters
from app.errors import UserError
from app.reviews import ReviewRequest, review_defect
from app.schemas import DefectDetail, DefectInContext, DefectPage, ReviewCreate

read_router = APIRouter(tags=["mes"])
review_router = APIRouter(tags=["review"])


def load_defect(session: Session, defect_id: int, for_update: bool = False) -> Defect:
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


@read_router.get("/defects", response_model=DefectPage,
                 summary="Defects matching the filters, newest first by default",
                 responses=list_responses("defects", DefectInContext))
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


@read_router.get("/defects/{defect_id}", response_model=DefectDetail,
                 summary="One defect, its inspection and its review history",
                 responses=problem_responses(404, 422))
def read_defect(defect_id: RowId, session: SessionDep) -> DefectDetail:
    return DefectDetail.from_row(load_defect(session, defect_id))


def _class_names(service: ServiceDep) -> list[str]:
    return list(require_engine(service, "cannot check the class against the model").names)


@review_router.post("/defects/{defect_id}/review", response_model=DefectDetail,
                    summary="Confirm, reject or reclassify a defect (with corrected corners), or undo",
                    responses=problem_responses(
                        404, 409, 422, 503, s404="no such defect", s409="undo: nothing left to undo",
                        s422="a bad action, a class_name that is not a model class, a box outside the "
                             "frame",
                        s503="reclassify: no model loaded to check the class against"))
def review(defect_id: RowId, body: ReviewCreate, service: ServiceDep, session: SessionDep,
           principal: PrincipalDep) -> DefectDetail:
    if body.action == "reclassify":
        names = _class_names(service)
    else:  # an undo back to a reclassified state restores the class id where a model is loaded
        names = list(service.engine.names) if service.engine is not None else []
    defect = load_defect(session, defect_id, for_update=True)
    try:
        review_defect(session, defect, ReviewRequest(body.action, body.class_name, body.note, body.box),
                      actor=principal.name, class_names=names)
    except UserError:
        session.rollback()
        raise
    session.commit()
    if service.webhooks is not None:
        service.webhooks.wake()
    return DefectDetail.from_row(load_defect(session, defect_id))
