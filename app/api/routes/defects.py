"""GET /defects (filtered list, JSON or CSV), GET /defects/{id} (with its inspection and review
history) and POST /defects/{id}/review."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.api.deps import SessionDep
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
from app.api.openapi import STATUS_TITLES, problem_responses
from app.api.problems import Problem
from app.api.security import PrincipalDep
from app.db.models import Defect, Inspection
from app.db.queries import Filters
from app.reviews import ReviewError, ReviewRequest, review_defect
from app.schemas import DefectDetail, DefectInContext, DefectPage, ReviewCreate

read_router = APIRouter(tags=["mes"])
review_router = APIRouter(tags=["review"])

DefectId = Annotated[int, Path(ge=1)]


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


@read_router.get("/defects", response_model=DefectPage,
                 summary="Defects matching the filters, newest first by default",
                 responses=list_responses("defects", DefectInContext))
def list_defects(
    request: Request,
    filters: Annotated[Filters, Depends(filters_params)],
    sort: SortParam = "captured_at",
    order: OrderParam = "desc",
    limit: LimitParam = None,
    cursor: CursorParam = None,
    fmt: FormatParam = None,
) -> Any:
    return list_response(request, "defects", filters, sort, order, limit, cursor, fmt)


@read_router.get("/defects/{defect_id}", response_model=DefectDetail,
                 summary="One defect, its inspection and its review history",
                 responses=problem_responses(404, 422))
def read_defect(defect_id: DefectId, session: SessionDep) -> DefectDetail:
    return DefectDetail.from_row(_load(session, defect_id))


def _class_names(request: Request) -> list[str]:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        reason = getattr(request.app.state, "engine_error", None) or "no model loaded"
        raise Problem(503, f"cannot check the class against the model: {reason}", reason="model_unavailable",
                      title="Model Unavailable", headers={"Retry-After": "30"})
    return list(engine.names)


@review_router.post("/defects/{defect_id}/review", response_model=DefectDetail,
                    summary="Confirm, reject or reclassify a defect",
                    responses=problem_responses(
                        404, 422, 503, s404="no such defect",
                        s422="a bad action, or a class_name that is not a model class",
                        s503="reclassify: no model loaded to check the class against"))
def review(defect_id: DefectId, body: ReviewCreate, request: Request, session: SessionDep,
           principal: PrincipalDep) -> DefectDetail:
    names = _class_names(request) if body.action == "reclassify" else []
    defect = _load(session, defect_id, for_update=True)
    try:
        review_defect(session, defect, ReviewRequest(body.action, body.class_name, body.note),
                      actor=principal.name, class_names=names)
    except ReviewError as exc:
        session.rollback()
        raise Problem(422, str(exc), reason="invalid_review", title=STATUS_TITLES[422]) from None
    session.commit()
    worker = getattr(request.app.state, "webhook_worker", None)
    if worker is not None:
        worker.wake()
    return DefectDetail.from_row(_load(session, defect_id))
