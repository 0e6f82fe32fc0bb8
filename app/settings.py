"""Service settings: one pydantic-settings class, environment prefix ``INSPECT_``.

A bad value stops start-up with a message naming the variable (``SettingsError``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.image_policy import ImagePolicy

ENV_PREFIX = "INSPECT_"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the directory holding `app/` and `models/`
DEFAULT_MODEL_PATH = PACKAGE_ROOT / "models" / "weights" / "defect-yolov5s-cbam-int8.onnx"


class SettingsError(ValueError):
    """One or more INSPECT_ variables hold bad values; the message names each of them."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    database_url: str = Field("sqlite:///./data/inspect.db", min_length=1,
                              description="SQLAlchemy URL: sqlite:///file.db or postgresql+psycopg://...")
    model_path: Path = Field(DEFAULT_MODEL_PATH, description="ONNX detector file")
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma list of ONNX Runtime providers; empty = automatic order")
    intra_op_threads: int = Field(0, ge=0, le=1024, description="ONNX Runtime intra-op threads (0 = auto)")
    inter_op_threads: int = Field(1, ge=0, le=1024, description="ONNX Runtime inter-op threads")
    data_dir: Path = Field(Path("./data"), description="stored images and the TensorRT engine cache")
    image_policy: ImagePolicy = Field("ng", description="which frames to store: always | ng | never")
    max_upload_mb: float = Field(16.0, gt=0, le=1024, description="largest accepted upload in MiB")
    max_pixels: int = Field(40_000_000, gt=0, description="largest accepted image (width*height)")
    conf_threshold: float = Field(0.25, ge=0.0, le=1.0)
    iou_threshold: float = Field(0.45, gt=0.0, le=1.0)
    max_det: int = Field(300, ge=1, le=10_000)
    cameras_file: Path | None = Field(None, description="camera ingest YAML (optional)")
    auth_enabled: bool = Field(True, description="require API keys")
    metrics_public: bool = Field(True, description="serve /metrics without an API key")
    demo: bool = Field(False, description="start a simulator camera (serve --demo)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("image_policy", "log_level", mode="before")
    @classmethod
    def _normalise_case(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url  # local import keeps settings cheap to import
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a database URL: {exc}") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {url.get_backend_name()!r} (use sqlite or postgresql)")
        return value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def trt_cache_dir(self) -> Path:
        return self.data_dir / "trt-cache"


def describe_errors(exc: ValidationError) -> str:
    """``INSPECT_MAX_UPLOAD_MB=abc: Input should be a valid number`` style, one per bad variable."""
    parts = []
    for err in exc.errors():
        name = ENV_PREFIX + str(err["loc"][0]).upper() if err["loc"] else "settings"
        value = err.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float) else ""
        parts.append(f"{name}{shown}: {err['msg']}")
    return "invalid settings: " + "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (overrides win) and raise ``SettingsError`` naming every bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
