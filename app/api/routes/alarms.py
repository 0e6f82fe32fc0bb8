"""GET /alarms (raised by the cameras file's rules; open ones, or all) and POST /alarms/{id}/acknowledge
(an operator; who and when are kept)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select

from app.api.deps import SessionDep
from app.api.openapi import problem_responses
from app.api.params import RowId
from app.api.problems import Problem
from app.api.security import PrincipalDep
from app.db.models import Alarm
from app.ingest.alarms import acknowledge_by_id
from app.schemas.alarms import AlarmAcknowledge, AlarmList, AlarmPublic

read_router = APIRouter(tags=["alarms"])
ack_router = APIRouter(tags=["alarms"])


StateQuery = Annotated[Literal["open", "all"], Query(description="open: not yet acknowledged")]


@read_router.get("/alarms", response_model=AlarmList, summary="Alarms, newest first",
                 responses=problem_responses(422))
def list_alarms(session: SessionDep, state: StateQuery = "open",
                limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> AlarmList:
    stmt = select(Alarm).order_by(Alarm.id.desc()).limit(limit)
    if state == "open":
        stmt = stmt.where(Alarm.acknowledged_at.is_(None))
    return AlarmList(items=[AlarmPublic.from_row(a) for a in session.scalars(stmt)])


@ack_router.post("/alarms/{alarm_id}/acknowledge", response_model=AlarmPublic,
                 summary="Acknowledge an alarm: its rule may fire again once its condition builds up again",
                 responses=problem_responses(404, 409, 422, s404="no such alarm",
                                             s409="already acknowledged"))
def acknowledge_alarm(alarm_id: RowId, body: AlarmAcknowledge, session: SessionDep,
                      principal: PrincipalDep) -> AlarmPublic:
    alarm = acknowledge_by_id(session, alarm_id, principal.name, body.note)
    if alarm is None:
        raise Problem(404, f"alarm {alarm_id} does not exist", reason="not_found")
    session.commit()
    return AlarmPublic.from_row(alarm)
