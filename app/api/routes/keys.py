"""GET /whoami (any key), and for admins: GET/POST /keys, DELETE /keys/{id} (revoke) and GET /settings."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy.engine import make_url

from app.api.deps import ServiceDep, SessionDep, SettingsDep
from app.api.openapi import problem_responses
from app.api.params import RowId
from app.api.problems import Problem
from app.api.security import PrincipalDep
from app.auth import create_key, list_keys, revoke_key
from app.db.models import ApiKey
from app.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyPublic, SettingsPublic, WhoamiPublic

whoami_router = APIRouter(tags=["auth"])
admin_router = APIRouter(tags=["admin"])


@whoami_router.get("/whoami", response_model=WhoamiPublic, summary="The calling key's name and role")
def whoami(principal: PrincipalDep, settings: SettingsDep) -> WhoamiPublic:
    return WhoamiPublic(name=principal.name, role=principal.role, auth_enabled=bool(settings.auth_enabled),
                        expires_at=principal.expires_at)


@admin_router.get("/keys", response_model=ApiKeyList, summary="API keys (never the keys themselves)",
                  responses=problem_responses(422))
def get_keys(session: SessionDep, include_revoked: bool = False) -> ApiKeyList:
    return ApiKeyList(items=[ApiKeyPublic.from_row(r)
                             for r in list_keys(session, include_revoked=include_revoked)])


@admin_router.post("/keys", status_code=201, response_model=ApiKeyCreated,
                   summary="Create a key (shown only in this response)", responses=problem_responses(422))
def post_key(body: ApiKeyCreate, session: SessionDep) -> ApiKeyCreated:
    lifetime = None if body.expires_in_days is None else timedelta(days=body.expires_in_days)
    row, key = create_key(session, body.name, body.role, lifetime)
    session.commit()
    return ApiKeyCreated.from_row(row, key)


@admin_router.delete("/keys/{key_id}", response_model=ApiKeyPublic, summary="Revoke a key",
                     responses=problem_responses(404, 422))
def delete_key(key_id: RowId, session: SessionDep, service: ServiceDep) -> ApiKeyPublic:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise Problem(404, f"key {key_id} does not exist", reason="not_found")
    revoke_key(session, row)
    session.commit()
    service.keys.forget(row.id)  # this process at once; others within INSPECT_KEY_CACHE_S
    return ApiKeyPublic.from_row(row)


@admin_router.get("/settings", response_model=SettingsPublic,
                  summary="The effective service settings (passwords hidden)")
def get_settings_view(settings: SettingsDep) -> SettingsPublic:
    data = settings.model_dump(mode="json")
    data["database_url"] = make_url(settings.database_url).render_as_string(hide_password=True)
    return SettingsPublic.model_validate(data)
