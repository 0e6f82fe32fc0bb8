"""Request authentication and role checks as FastAPI dependencies.

``require(Permission.READ)`` etc. are attached to routers where they are mounted (``app.api``); the
principal they establish is stored on ``request.state.principal`` and read by routes through
``PrincipalDep`` (e.g. to write the reviewer's key name into the audit trail). 401 and 403 answers are
problem+json bodies. With ``INSPECT_AUTH_ENABLED=false`` (local demo only) every request acts as admin.

A key verified against the database is honoured from the service's key cache for
``INSPECT_KEY_CACHE_S`` seconds; a key not in the cache while the database is away (circuit open) is
answered 503 with Retry-After, since it can be neither accepted nor refused. Expiry is checked on every
request, cached or not (401 saying the key expired).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import ServiceDep
from app.api.problems import Problem
from app.auth import ANONYMOUS_ADMIN, Permission, Principal, authenticate, hash_key, looks_like_key
from app.errors import DatabaseUnavailable
from app.service import Service
from app.vocabulary import iso

# Declared as security schemes so /docs offers an "Authorize" button; auto_error=False because a missing
# key is answered below with a problem body.
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer dik_<prefix>_<secret>")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: dik_<prefix>_<secret>")

_WWW_AUTH = {"WWW-Authenticate": 'Bearer realm="defect-inspect"'}

PERMISSION_TEXT = {
    Permission.ANY: "any valid API key",
    Permission.INGEST: "role camera or admin",
    Permission.READ: "role mes, operator or admin",
    Permission.REVIEW: "role operator or admin",
    Permission.ADMIN: "role admin",
}


def current_principal(
    request: Request,
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    """Who is calling (401 problem when no valid key is presented)."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    if not service.settings.auth_enabled:
        principal = ANONYMOUS_ADMIN
    else:
        presented = (api_key or "").strip() or (bearer.credentials.strip() if bearer else "")
        if not presented:
            raise Problem(401, "an API key is required: send 'Authorization: Bearer <key>' or "
                               "'X-API-Key: <key>'", reason="unauthorized", title="Unauthorized",
                          headers=_WWW_AUTH)
        principal = _verified(service, presented)
        if principal.expired():
            expired_at = iso(principal.expires_at)
            raise Problem(401, f"the API key '{principal.name}' expired at {expired_at}; ask an admin for "
                               "a new one (`defect-inspect keys rotate`)", reason="key_expired",
                          title="Unauthorized", headers=_WWW_AUTH)
    request.state.principal = principal
    return principal


def _unknown_key() -> Problem:
    return Problem(401, "the API key is unknown or revoked", reason="unauthorized", title="Unauthorized",
                   headers=_WWW_AUTH)


def _verified(service: Service, presented: str) -> Principal:
    """The principal of ``presented``: from the key cache, else from the database (then cached)."""
    if not looks_like_key(presented):
        raise _unknown_key()
    digest = hash_key(presented)
    principal = service.keys.get(digest)
    if principal is not None:
        return principal
    if not service.db.breaker.available():
        raise DatabaseUnavailable(service.settings.db_probe_s)
    with service.db.session() as session:
        found = authenticate(session, presented)
    if found is None:
        raise _unknown_key()
    service.keys.put(digest, found)
    return found


def require(*permissions: Permission) -> Callable[..., Principal]:
    """A dependency that lets the request through only with one of ``permissions`` (403 otherwise)."""
    needed = " or ".join(PERMISSION_TEXT[p] for p in permissions)

    def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not any(principal.can(p) for p in permissions):
            raise Problem(403, f"the key '{principal.name}' has role {principal.role}; this needs "
                               f"{needed}", reason="forbidden", title="Forbidden")
        return principal

    dependency.__name__ = "require_" + "_or_".join(p.value for p in permissions)
    return dependency


def metrics_guard(
    request: Request,
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> None:
    """/metrics: public when INSPECT_METRICS_PUBLIC=true, otherwise a read key is needed."""
    if service.settings.metrics_public:
        return
    require(Permission.READ)(current_principal(request, service, bearer, api_key))


PrincipalDep = Annotated[Principal, Depends(current_principal)]
