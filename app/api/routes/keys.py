"""GET /whoami (any key), and for admins: GET/POST /keys, DELETE /keys/{id} (revoke) and GET /settings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import make_url

from app.api.deps import SessionDep, SettingsDep
from app.api.problems import Problem
from app.api.security import PrincipalDep
from app.auth import create_key, list_keys, revoke_key
from app.db.models import ApiKey
from app.db.queries import iso

whoami_router = APIRouter(tags=["auth"])
admin_router = APIRouter(tags=["admin"])


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    role: Literal["camera", "mes", "operator", "admin"]


def key_view(row: ApiKey) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "role": row.role, "prefix": row.prefix,
            "created_at": iso(row.created_at), "last_used_at": iso(row.last_used_at),
            "revoked_at": iso(row.revoked_at)}


@whoami_router.get("/whoami", summary="The calling key's name and role")
def whoami(principal: PrincipalDep, settings: SettingsDep) -> dict[str, Any]:
    return {"name": principal.name, "role": principal.role, "auth_enabled": bool(settings.auth_enabled)}


@admin_router.get("/keys", summary="API keys (never the keys themselves)")
def get_keys(session: SessionDep, include_revoked: bool = False) -> dict[str, Any]:
    return {"items": [key_view(r) for r in list_keys(session, include_revoked=include_revoked)]}


@admin_router.post("/keys", status_code=201, summary="Create a key (shown only in this response)")
def post_key(body: KeyIn, session: SessionDep) -> dict[str, Any]:
    row, key = create_key(session, body.name, body.role)
    session.commit()
    return {**key_view(row), "key": key}


@admin_router.delete("/keys/{key_id}", summary="Revoke a key")
def delete_key(key_id: Annotated[int, Path(ge=1)], session: SessionDep) -> dict[str, Any]:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise Problem(404, f"key {key_id} does not exist", reason="not_found")
    revoke_key(session, row)
    session.commit()
    return key_view(row)


@admin_router.get("/settings", summary="The effective service settings (passwords hidden)")
def get_settings_view(settings: SettingsDep) -> dict[str, Any]:
    data = settings.model_dump(mode="json")
    data["database_url"] = make_url(settings.database_url).render_as_string(hide_password=True)
    return data
