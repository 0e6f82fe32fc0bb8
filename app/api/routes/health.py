"""Liveness (/healthz), readiness (/readyz: model loaded and database reachable) and /metrics; all three
answer while the database is away (no request here waits for it)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app import metrics
from app.api.deps import ServiceDep
from app.api.openapi import problem_responses
from app.api.problems import problem_response
from app.db.breaker import DOWN_REASON
from app.schemas import HealthPublic, ReadyPublic

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic, summary="The process is up")
def healthz() -> HealthPublic:
    return HealthPublic(status="ok")


@router.get("/readyz", response_model=ReadyPublic,
            summary="Ready to inspect: model loaded and database reachable",
            responses=problem_responses(503, s503="not ready; `reasons` says why"))
def readyz(service: ServiceDep) -> Response:
    reasons = []
    engine, db = service.engine, service.db
    if engine is None:
        reasons.append(service.engine_error or "no model loaded")
    # while the circuit is open the breaker's own probe decides (no connect attempt here); closed: a
    # real check, which opens it when the database is gone. The driver's text (hosts, ports) only
    # reaches the log.
    if not (db.breaker.available() and db.breaker.check_now()):
        reasons.append(DOWN_REASON)
    mqtt = {} if service.mqtt is None else {"mqtt": service.mqtt.view()}  # a broker away is no reason
    if reasons:
        return problem_response(503, "Not Ready", "; ".join(reasons), "not_ready", reasons=reasons,
                                database=db.breaker.view(), headers={"Retry-After": "10"}, **mqtt)
    ready = ReadyPublic(status="ready", model_version=engine.version, provider=engine.provider,
                        database=db.backend, **mqtt)
    return JSONResponse(ready.model_dump(mode="json", exclude_none=True))


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response,
                    responses={200: {"description": "The Prometheus text exposition format",
                                     "content": {"text/plain": {"schema": {"type": "string"}}}}})
def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
