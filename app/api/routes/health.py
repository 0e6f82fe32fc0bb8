"""Liveness (/healthz), readiness (/readyz: model loaded and database reachable) and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app import metrics
from app.api.deps import ServiceDep
from app.api.problems import problem_response

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Ready to inspect: model loaded and database reachable",
            responses={503: {"description": "not ready; `reasons` says why"}})
def readyz(service: ServiceDep) -> Response:
    reasons = []
    engine, db = service.engine, service.db
    if engine is None:
        reasons.append(service.engine_error or "no model loaded")
    db_error = db.ping()
    if db_error:
        reasons.append(db_error)
    if reasons:
        return problem_response(503, "Not Ready", "; ".join(reasons), "not_ready", reasons=reasons,
                                headers={"Retry-After": "10"})
    return JSONResponse({"status": "ready", "model_version": engine.version, "provider": engine.provider,
                         "database": db.backend})


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
