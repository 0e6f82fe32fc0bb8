"""The HTTP API. ``include_routers`` is the one place where routes are mounted and where their
access rules are attached: the auth module plugs its role checks into the lists below, e.g.
``UPLOAD_DEPENDENCIES = [Depends(require_role("camera"))]``."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI

from app.api.openapi import install_problem_schema, problem_responses
from app.api.routes import cameras, health, inspections, model
from app.api.security import metrics_guard, require
from app.auth import Permission

API_PREFIX = "/api/v1"

# Access rules per group of routes (FastAPI ``Depends(...)`` objects), applied in include_routers.
# POST /api/v1/inspections; PUT/DELETE /api/v1/cameras/{id}/part (the line says which part is there)
UPLOAD_DEPENDENCIES: list[Any] = [Depends(require(Permission.INGEST))]
READ_DEPENDENCIES: list[Any] = [Depends(require(Permission.READ))]  # GET /api/v1/inspections/...
# GET /api/v1/inspections/by-frame/{uid}: the camera that posted a frame, and readers
RESULT_DEPENDENCIES: list[Any] = [Depends(require(Permission.INGEST, Permission.READ))]
MODEL_DEPENDENCIES: list[Any] = [Depends(require(Permission.ANY))]  # GET /api/v1/model
METRICS_DEPENDENCIES: list[Any] = [Depends(metrics_guard)]  # GET /metrics (see INSPECT_METRICS_PUBLIC)
REVIEW_DEPENDENCIES: list[Any] = [Depends(require(Permission.REVIEW))]  # POST /api/v1/defects/{id}/review
ADMIN_DEPENDENCIES: list[Any] = [Depends(require(Permission.ADMIN))]  # keys, webhooks, settings

# The problems those rules answer, documented on every route they guard.
KEY_PROBLEMS = problem_responses(401)  # any valid key
ROLE_PROBLEMS = problem_responses(401, 403)  # a key with the right role


def include_routers(app: FastAPI) -> None:
    app.include_router(health.router)
    app.include_router(health.metrics_router, dependencies=METRICS_DEPENDENCIES, responses=ROLE_PROBLEMS)
    app.include_router(inspections.upload_router, prefix=API_PREFIX, dependencies=UPLOAD_DEPENDENCIES,
                       responses=ROLE_PROBLEMS)
    app.include_router(inspections.result_router, prefix=API_PREFIX, dependencies=RESULT_DEPENDENCIES,
                       responses=ROLE_PROBLEMS)
    app.include_router(inspections.read_router, prefix=API_PREFIX, dependencies=READ_DEPENDENCIES,
                       responses=ROLE_PROBLEMS)
    app.include_router(model.router, prefix=API_PREFIX, dependencies=MODEL_DEPENDENCIES,
                       responses=KEY_PROBLEMS)
    app.include_router(cameras.router, prefix=API_PREFIX, dependencies=READ_DEPENDENCIES,
                       responses=ROLE_PROBLEMS)
    app.include_router(cameras.part_router, prefix=API_PREFIX, dependencies=UPLOAD_DEPENDENCIES,
                       responses=ROLE_PROBLEMS)
    include_mes_routers(app)
    install_problem_schema(app)


def include_ingest_routers(app: FastAPI) -> None:
    """``defect-inspect ingest``: health, metrics and the camera state only."""
    app.include_router(health.router)
    app.include_router(health.metrics_router, dependencies=METRICS_DEPENDENCIES)
    app.include_router(cameras.router, prefix=API_PREFIX, dependencies=READ_DEPENDENCIES)
    app.include_router(cameras.part_router, prefix=API_PREFIX, dependencies=UPLOAD_DEPENDENCIES)


def include_mes_routers(app: FastAPI) -> None:
    """MES queries, reviews, keys, webhooks (app/api/routes/) and the dashboard at /."""
    from app.api.dashboard import mount_dashboard
    from app.api.routes import (
        alarms,
        defects,
        frame_review,
        images,
        inspection_list,
        keys,
        parts,
        stats,
        tracks,
        webhooks,
    )

    for router in (inspection_list.router, images.router, defects.read_router, parts.router, stats.router,
                   frame_review.read_router, alarms.read_router, tracks.router):
        app.include_router(router, prefix=API_PREFIX, dependencies=READ_DEPENDENCIES, responses=ROLE_PROBLEMS)
    for router in (defects.review_router, frame_review.review_router, alarms.ack_router):
        app.include_router(router, prefix=API_PREFIX, dependencies=REVIEW_DEPENDENCIES,
                           responses=ROLE_PROBLEMS)
    app.include_router(keys.whoami_router, prefix=API_PREFIX, dependencies=MODEL_DEPENDENCIES,
                       responses=KEY_PROBLEMS)
    app.include_router(keys.admin_router, prefix=API_PREFIX, dependencies=ADMIN_DEPENDENCIES,
                       responses=ROLE_PROBLEMS)
    app.include_router(webhooks.router, prefix=API_PREFIX, dependencies=ADMIN_DEPENDENCIES,
                       responses=ROLE_PROBLEMS)
    mount_dashboard(app)
