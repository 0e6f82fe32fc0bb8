"""Request dependencies as ``Annotated`` aliases: ``SettingsDep``, ``DatabaseDep``, ``SessionDep``,
``EngineDep``. Everything comes from ``app.state`` (set by the lifespan in app.main)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.api.problems import Problem
from app.db.session import Database
from app.inference import Engine
from app.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_database(request: Request) -> Database:
    return request.app.state.db


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.db.session() as session:
        yield session


def get_engine(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        reason = getattr(request.app.state, "engine_error", None) or "no model loaded"
        raise Problem(503, f"the detector is not available: {reason}", reason="model_unavailable",
                      title="Model Unavailable", headers={"Retry-After": "30"})
    return engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session)]
EngineDep = Annotated[Engine, Depends(get_engine)]
