"""The HTTP API. ``include_routers`` is the one place where routes are mounted and where their
access rules are attached: the auth module plugs its role checks into the lists below, e.g.
``UPLOAD_DEPENDENCIES = [Depends(require_role("camera"))]``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.api.routes import cameras, health, inspections, model

API_PREFIX = "/api/v1"

# Access rules per group of routes (FastAPI ``Depends(...)`` objects), applied in include_routers.
UPLOAD_DEPENDENCIES: list[Any] = []  # POST /api/v1/inspections (cameras, MES clients)
READ_DEPENDENCIES: list[Any] = []  # GET /api/v1/inspections/...
MODEL_DEPENDENCIES: list[Any] = []  # GET /api/v1/model
METRICS_DEPENDENCIES: list[Any] = []  # GET /metrics (see INSPECT_METRICS_PUBLIC)


def include_routers(app: FastAPI) -> None:
    app.include_router(health.router)
    app.include_router(health.metrics_router, dependencies=METRICS_DEPENDENCIES)
    app.include_router(inspections.upload_router, prefix=API_PREFIX, dependencies=UPLOAD_DEPENDENCIES)
    app.include_router(inspections.read_router, prefix=API_PREFIX, dependencies=READ_DEPENDENCIES)
    app.include_router(model.router, prefix=API_PREFIX, dependencies=MODEL_DEPENDENCIES)
    app.include_router(cameras.router, prefix=API_PREFIX, dependencies=READ_DEPENDENCIES)
