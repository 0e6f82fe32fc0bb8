"""Review by frame: GET /review/queue (frames and their boxes, newest first), POST
/inspections/{id}/defects (a defect the model missed, drawn by an operator) and POST
/inspections/{id}/review (mark a frame fully reviewed, or reopen it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.api.deps import ServiceDep, SessionDep, require_engine
from app.api.listing import CursorParam, LimitParam, OrderParam, filters_params
from app.api.openapi import problem_responses
from app.api.params import RowId
from app.api.problems import Problem
from app.api.routes.defects import load_defect
from app.api.security import PrincipalDep
from app.db.models import Inspection
from app.db.queries import Filters, Sort, fetch_page
from app.errors import UserError
from app.reviews import add_missed_defect, set_frame_state
from app.schemas import DefectDetail, InspectionPublic
from app.schemas.inspections import FrameReviewCreate, MissedDefectCreate
from app.schemas.review import ReviewQueueItem, ReviewQueuePage

read_router = APIRouter(tags=["review"])
review_router = APIRouter(tags=["review"])
QUEUE_LIMIT = 20


@read_router.get("/review/queue", response_model=ReviewQueuePage,
                 summary="The review queue: one item per frame with all its boxes",
                 responses=problem_responses(400, 422, s400="a bad cursor or range"))
def review_queue(session: SessionDep, filters: Annotated[Filters, Depends(filters_params)],
                 order: OrderParam = "desc", limit: LimitParam = None,
                 cursor: CursorParam = None) -> ReviewQueuePage:
    """The filters are those of GET /inspections: ``review_status=pending`` gives the frames with a box
    still to decide, ``fully_reviewed=false`` every frame not yet marked fully reviewed (OK frames
    included, where a missed defect may be drawn)."""
    sort = Sort("captured_at", order)
    page = fetch_page(session, "inspections", filters, sort, limit or QUEUE_LIMIT, cursor)
    items = [ReviewQueueItem.of_frame(InspectionPublic.from_row(row)) for row in page.items]
    return ReviewQueuePage(items=items, next_cursor=page.next_cursor, limit=limit or QUEUE_LIMIT,
                           sort=sort.field, order=sort.order)


def _inspection(session: Session, inspection_id: int) -> Inspection:
    stmt = (select(Inspection).where(Inspection.id == inspection_id)
            .options(selectinload(Inspection.defects)).with_for_update(of=Inspection)
            .execution_options(populate_existing=True))
    row = session.scalars(stmt).first()
    if row is None:
        raise Problem(404, f"inspection {inspection_id} does not exist", reason="not_found")
    return row


@review_router.post("/inspections/{inspection_id}/defects", response_model=DefectDetail, status_code=201,
                    summary="Record a defect the model missed (a box drawn by an operator)",
                    responses=problem_responses(
                        404, 422, 503, s404="no such inspection",
                        s422="a class that is not a model class, or a box outside the frame",
                        s503="no model loaded to check the class against"))
def add_defect(inspection_id: RowId, body: MissedDefectCreate, service: ServiceDep, session: SessionDep,
               principal: PrincipalDep) -> DefectDetail:
    names = list(require_engine(service, "cannot check the class against the model").names)
    inspection = _inspection(session, inspection_id)
    try:
        defect = add_missed_defect(session, inspection, body.class_name, body.box, principal.name, names,
                                   body.note)
    except UserError:
        session.rollback()
        raise
    session.commit()
    if service.webhooks is not None:
        service.webhooks.wake()
    return DefectDetail.from_row(load_defect(session, defect.id))


@review_router.post("/inspections/{inspection_id}/review", response_model=InspectionPublic,
                    summary="Mark a frame fully reviewed, or reopen it",
                    responses=problem_responses(404, 409, 422, s404="no such inspection",
                                                s409="complete: a box of the frame is still pending"))
def review_frame(inspection_id: RowId, body: FrameReviewCreate, session: SessionDep,
                 principal: PrincipalDep) -> InspectionPublic:
    inspection = _inspection(session, inspection_id)
    try:
        set_frame_state(session, inspection, body.action, principal.name, body.note)
    except UserError:
        session.rollback()
        raise
    session.commit()
    return InspectionPublic.from_row(_inspection(session, inspection_id))

