"""API keys, the caller, the loaded model, the effective settings and the health probes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, create_model

from app.schemas.common import DocumentedPattern, LongName, PublicModel, UtcDatetime
from app.schemas.line import MqttStatePublic
from app.settings import Settings

if TYPE_CHECKING:
    from app.db.models import ApiKey

Role = Literal["camera", "mes", "operator", "admin"]


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


# A name (no control characters) with at least one character that is not white space.
KeyName = Annotated[LongName, AfterValidator(not_blank),
                    DocumentedPattern(r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$")]


class ApiKeyBase(PublicModel):
    name: str
    role: Role


class ApiKeyCreate(ApiKeyBase):
    """POST /keys."""

    model_config = ConfigDict(extra="forbid")

    name: KeyName
    expires_in_days: int | None = Field(None, ge=1, le=3650,
                                        description="the key expires this many days from now (null: never)")


class ApiKeyPublic(ApiKeyBase):
    """An API key's record; never the key itself."""

    id: int
    prefix: str = Field(description="the dik_<prefix>_ part that identifies the key in logs")
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None
    revoked_at: UtcDatetime | None
    expires_at: UtcDatetime | None = Field(description="after this the key is refused (null: never)")

    @classmethod
    def fields_of(cls, row: ApiKey) -> dict[str, Any]:
        return dict(id=row.id, name=row.name, role=row.role, prefix=row.prefix, created_at=row.created_at,
                    last_used_at=row.last_used_at, revoked_at=row.revoked_at, expires_at=row.expires_at)

    @classmethod
    def from_row(cls, row: ApiKey) -> ApiKeyPublic:
        return cls(**cls.fields_of(row))


class ApiKeyCreated(ApiKeyPublic):
    """The answer of POST /keys: the only time the key is shown."""

    key: str

    @classmethod
    def from_row(cls, row: ApiKey, key: str) -> ApiKeyCreated:  # type: ignore[override]
        return cls(**cls.fields_of(row), key=key)


class ApiKeyList(PublicModel):
    items: list[ApiKeyPublic]


class WhoamiPublic(PublicModel):
    name: str = Field(description="the key's name: the one written into audit rows")
    role: str
    auth_enabled: bool
    expires_at: UtcDatetime | None = Field(None, description="when the calling key expires (null: never)")


class ModelInfoPublic(PublicModel):
    """The loaded detector."""

    path: str
    version: str
    names: list[str] = Field(description="class names, by class id")
    imgsz: list[int]
    layout: str | None
    provider: str
    providers: list[str]
    available_providers: list[str]
    input_shape: list[int | str]
    quantization: str | None
    stride: list[int]
    anchors: list[list[float]] | None = Field(
        None, description="anchor boxes in input pixels, one list of width,height pairs per output level "
        "(yolov5 layout; null for anchor-free models)")
    rect: bool | None = Field(None, description="free-size input: batches are padded to a rectangle")


class HealthPublic(PublicModel):
    status: Literal["ok"]


class ReadyPublic(PublicModel):
    status: Literal["ready"]
    model_version: str
    provider: str
    database: str = Field(description="the database backend (sqlite or postgresql)")
    mqtt: MqttStatePublic | None = Field(
        None, description="the MQTT publisher, when INSPECT_MQTT_HOST is set (a broker away does not make "
                          "the service unready)")


SettingsPublic = create_model(
    "SettingsPublic",
    __base__=PublicModel,
    __doc__="The effective service settings (INSPECT_* variables); the database password is hidden.",
    **{name: (field.annotation, Field(description=field.description))
       for name, field in Settings.model_fields.items()},
)
