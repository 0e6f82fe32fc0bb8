"""Request dependencies as ``Annotated`` aliases: ``ServiceDep`` (the running service, app.service),
and its parts ``SettingsDep``, ``DatabaseDep``, ``SessionDep``, ``EngineDep`` (503 without a model) and
``UploadGateDep`` (admission control of uploads).
The lifespan (app.main) attaches the service with ``attach_service``; nothing else reads or writes
``app.state``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.applications import Starlette

from app.admission import AdmissionGate
from app.db.session import Database
from app.errors import DatabaseUnavailable, Unavailable
from app.inference import Engine
from app.service import Service
from app.settings import Settings


def attach_service(app: Starlette, service: Service) -> None:
    app.state.service = service


def service_of(app: Starlette) -> Service:
    """The service the lifespan attached to ``app``."""
    service = app.state.service
    if not isinstance(service, Service):
        raise TypeError(f"app.state.service is a {type(service).__name__}, not a Service")
    return service


def get_service(request: Request) -> Service:
    return service_of(request.app)


ServiceDep = Annotated[Service, Depends(get_service)]


def get_settings(service: ServiceDep) -> Settings:
    return service.settings


def get_database(service: ServiceDep) -> Database:
    return service.db


def get_session(service: ServiceDep) -> Iterator[Session]:
    """A session; a 503 problem at once while the database is away (its circuit breaker is open)."""
    if not service.db.breaker.available():
        raise DatabaseUnavailable(service.settings.db_probe_s)
    with service.db.session() as session:
        yield session


def get_upload_gate(service: ServiceDep) -> AdmissionGate:
    return service.uploads


def get_engine(service: ServiceDep) -> Engine:
    return require_engine(service, "the detector is not available")


def require_engine(service: Service, what: str) -> Engine:
    """The service's detector, or a 503 problem ``{what}: {why}`` (missing or broken model)."""
    if service.engine is None:
        reason = service.engine_error or "no model loaded"
        raise Unavailable(f"{what}: {reason}", reason="model_unavailable", retry_after_s=30)
    return service.engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session)]
EngineDep = Annotated[Engine, Depends(get_engine)]
UploadGateDep = Annotated[AdmissionGate, Depends(get_upload_gate)]
