"""RFC 9457 problem details: every error the API answers is ``application/problem+json`` with
type, title, status and detail. Validation errors (422) and unexpected failures (500) too."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import metrics
from app.db.breaker import is_outage
from app.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    TooLarge,
    Unavailable,
    UnsupportedMedia,
    UserError,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://defect-inspect.local/problems/"

# The HTTP status of each kind of user error (the first kind in an error's MRO wins).
STATUS_OF_KIND: dict[type[UserError], int] = {
    NotFound: 404, Conflict: 409, TooLarge: 413, UnsupportedMedia: 415, InvalidInput: 422,
    Unavailable: 503, UserError: 400,
}
# RFC 9110 section 15 reason phrases, the titles of problem bodies (Python 3.11's http.HTTPStatus still
# says "Unprocessable Entity" and "Request Entity Too Large").
STATUS_TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    410: "Gone",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def status_of(error: UserError) -> int:
    return next(STATUS_OF_KIND[kind] for kind in type(error).__mro__ if kind in STATUS_OF_KIND)


def title_of(status: int) -> str:
    if status in STATUS_TITLES:
        return STATUS_TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Problem(Exception):
    """Raise from anywhere in a request to answer with a problem body.

    ``reason`` is a short slug: the problem ``type`` URI ends with it and it labels
    ``inspect_request_errors_total``."""

    def __init__(self, status: int, detail: str, *, reason: str | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = int(status)
        self.detail = detail
        self.reason = reason or _slug(self.status)
        self.title = title or title_of(self.status)
        self.headers = headers
        self.extra = extra


DEFAULT_RETRY_AFTER_S = 10  # Retry-After of an Unavailable that does not know its own wait


def _slug(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
    except ValueError:
        return f"http-{status}"


def problem_response(status: int, title: str, detail: str, reason: str, *,
                     headers: dict[str, str] | None = None, instance: str | None = None,
                     **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + reason, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _count(reason: str) -> None:
    metrics.REQUEST_ERRORS_TOTAL.labels(reason=reason).inc()


async def _problem_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    _count(exc.reason)
    return problem_response(exc.status, exc.title, exc.detail, exc.reason, headers=exc.headers,
                            instance=request.url.path, **exc.extra)


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    reason = _slug(exc.status_code)
    _count(reason)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return problem_response(exc.status_code, title_of(exc.status_code), detail, reason,
                            headers=getattr(exc, "headers", None), instance=request.url.path)


async def _user_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UserError)
    _count(exc.reason)
    status = status_of(exc)
    # Unavailable: trying again can succeed, after its own wait when it knows one
    retry_after = (exc.retry_after_s or DEFAULT_RETRY_AFTER_S) if isinstance(exc, Unavailable) else None
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return problem_response(status, title_of(status), str(exc), exc.reason, headers=headers,
                            instance=request.url.path)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    detail = detail or "invalid request"
    _count("validation")
    return problem_response(422, title_of(422), detail, "validation", instance=request.url.path,
                            errors=errors)


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    _count("internal")
    return problem_response(500, "Internal Server Error", "an unexpected error occurred; see the server log",
                            "internal", instance=request.url.path)


async def _database_handler(request: Request, exc: Exception) -> JSONResponse:
    """A request that lost the database midway: 503 (its session opened the circuit breaker)."""
    if not is_outage(exc):
        return await _unexpected_handler(request, exc)
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return await _user_error_handler(request, DatabaseUnavailable(5))


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _problem_handler)
    app.add_exception_handler(UserError, _user_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(DBAPIError, _database_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
