"""API keys, the caller, the loaded model, the effective settings and the health probes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, SecretStr, create_model

from app.schemas.common import DocumentedPattern, LongName, PublicModel, UtcDatetime
from app.schemas.ingest import StorageState
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


class OperatingPointPublic(PublicModel):
    """One class's operating point: its confidence threshold and what it scored where it was chosen."""

    threshold: float = Field(description="minimum confidence of a box of this class")
    precision: float | None = Field(None, description="share of the boxes kept that are true (IoU >= 0.5)")
    recall: float | None = Field(None, description="share of the true boxes found")
    f1: float | None = None
    instances: int | None = Field(None, description="true boxes of this class in the images it was "
                                                    "chosen on")


class OperatingPointsPublic(PublicModel):
    """The model's own per-class thresholds (metadata `operating_points`): the default threshold of each
    class, below a camera's `thresholds` and above the global confidence threshold."""

    method: str | None = Field(None, description="`best_f1` (the threshold of best F1 per class) or "
                                                 "`min_precision` (the lowest threshold that reaches it)")
    min_precision: float | None = Field(None, description="the precision target (`min_precision`)")
    split: str | None = Field(None, description="the data split the points were chosen on")
    images: int | None = Field(None, description="images of that split")
    match_iou: float | None = Field(None, description="IoU at which a box counts as true")
    carried_from: str | None = Field(None, description="the version of the model that chose these points "
                                                       "and whose figures these are, when this model took "
                                                       "them over (fitted on all the data after the choice, "
                                                       "`evaluate --operating-points-from`); null: chosen "
                                                       "with this model")
    classes: dict[str, OperatingPointPublic] = Field(default_factory=dict, description="by class name")


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
    operating_points: OperatingPointsPublic | None = Field(
        None, description="per-class confidence thresholds stored in the model (null: none; every class "
                          "then has the global threshold)")


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
    storage: StorageState = Field(description="free space, the low-disk state and skipped images")


def _shown_as(annotation: Any) -> Any:
    """The type a setting has in the answer: a secret is shown masked (``**********``) or null, a plain
    string there (a ``SecretStr`` is write-only in JSON Schema, which no answer may carry)."""
    return str | None if annotation == SecretStr | None else annotation


SettingsPublic = create_model(
    "SettingsPublic",
    __base__=PublicModel,
    __doc__="The effective service settings (INSPECT_* variables); passwords are hidden.",
    **{name: (_shown_as(field.annotation), Field(description=field.description))
       for name, field in Settings.model_fields.items()},
)
