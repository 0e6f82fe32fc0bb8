"""Service settings: one pydantic-settings class, environment prefix ``INSPECT_``.

A bad value stops start-up with a message naming the variable (``SettingsError``)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.errors import ConfigError
from app.image_policy import ImagePolicy
from app.webhook_targets import ALL_NETWORKS, REFUSED_BY_DEFAULT

ENV_PREFIX = "INSPECT_"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the directory holding `app/` and `models/`
DEFAULT_MODEL_PATH = PACKAGE_ROOT / "models" / "weights" / "defect-yolov5s-int8.onnx"


class SettingsError(ConfigError):
    """One or more INSPECT_ variables hold bad values; the message names each of them."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    database_url: str = Field(
        "sqlite:///./data/inspect.db", min_length=1,
        description="SQLAlchemy URL of the defect log: SQLite (`sqlite:///./data/inspect.db`, WAL mode) or "
                    "PostgreSQL (`postgresql+psycopg://user:pw@host/db`)")
    model_path: Path = Field(
        DEFAULT_MODEL_PATH,
        description="the ONNX detector; while the file is missing the service starts, `/readyz` and "
                    "`POST /api/v1/inspections` answer 503")
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma list of ONNX Runtime providers, e.g. `cuda,cpu` or `TensorrtExecutionProvider`; "
                    "empty: the automatic order TensorRT (FP16, engine cache in `<data dir>/trt-cache`), "
                    "CUDA, DirectML, CPU, absent ones skipped with a warning")
    intra_op_threads: int = Field(
        0, ge=0, le=1024, description="ONNX Runtime threads inside one operator (0: ONNX Runtime decides)")
    inter_op_threads: int = Field(1, ge=0, le=1024, description="ONNX Runtime threads across operators")
    data_dir: Path = Field(
        Path("./data"),
        description="stored images (`images/YYYY/MM/DD/<frame_uid>.jpg`), the ingest journal (`journal/`), "
                    "the cameras' checkpoints (`checkpoints/`) and the TensorRT engine cache (`trt-cache/`)")
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(ALL_NETWORKS),
        description="comma list of networks (CIDR) webhooks may send to; every address a target resolves "
                    "to must lie in one (narrow it to the plant LAN, e.g. `10.0.0.0/8`)")
    webhook_refused_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(REFUSED_BY_DEFAULT),
        description="comma list of networks (CIDR) webhooks never send to, checked at registration and "
                    "before every send; default: loopback, unspecified, link-local (cloud metadata), "
                    "other metadata addresses and multicast")
    image_policy: ImagePolicy = Field(
        "ng", description="which uploaded frames to store: `always`, `ng` (only NG verdicts) or `never`")
    yield_target: float = Field(
        0.95, ge=0.0, le=1.0,
        description="the yield a line should reach (0-1): the dashboard colours yield green at or above it, "
                    "amber within 5 points below, red further below; `GET /api/v1/stats` returns it")
    image_jpeg_quality: int = Field(
        90, ge=1, le=100,
        description="JPEG quality (1-100) of stored camera frames and defect crops (uploads are stored as "
                    "sent); lower: fewer bytes per frame")
    store_frames: bool = Field(
        True,
        description="store whole frames; `false`: only the defect crops of NG frames (cameras with "
                    "`crops: true`), the fewest bytes per frame; a camera's `frames` key overrides it")
    retention_frame_days: float = Field(
        30.0, ge=0,
        description="stored frames older than this many days are deleted, their rows kept (the image "
                    "then reads as expired); 0: no age limit; a camera's `retention.frame_days` "
                    "overrides it")
    retention_crop_days: float = Field(
        30.0, ge=0, description="the same for defect crops; 0: no age limit")
    retention_row_days: float = Field(
        365.0, ge=0,
        description="inspection rows (with their defects and any images left) older than this many days "
                    "are deleted; 0: rows are kept for ever")
    retention_reviewed_days: float = Field(
        365.0, ge=0,
        description="inspections with a reviewed defect (confirmed, reclassified or drawn by an operator) "
                    "keep their rows and images at least this many days, whatever the limits above "
                    "say; 0: for ever")
    image_store_max_gb: float = Field(
        0.0, ge=0,
        description="size cap of the image store (frames and crops, bytes on disk), GB (10^9 bytes): each "
                    "pruner pass deletes the oldest images, unreviewed before reviewed, down to 90 % of it "
                    "or lower, leaving room for what the next interval writes; 0: no cap")
    disk_low_watermark_mb: float = Field(
        2048.0, ge=0,
        description="free space on the data folder's file system, MB (10^6 bytes), below which the pruner "
                    "deletes the oldest images until it is above again")
    disk_floor_mb: float = Field(
        512.0, ge=0,
        description="free space, MB, below which new images are not written (counted in "
                    "`inspect_images_skipped_total`, answered `image_stored: false`) while inspection and "
                    "rows go on")
    prune_interval_s: float = Field(
        60.0, gt=0, le=86_400, description="seconds between two passes of the pruner in the service")
    prune_batch: int = Field(
        500, ge=1, le=100_000,
        description="inspections handled in one pruning transaction (short transactions keep the writer "
                    "and the inspections flowing)")
    max_upload_mb: float = Field(16.0, gt=0, le=1024, description="largest accepted upload in MiB (else 413)")
    max_pixels: int = Field(
        40_000_000, gt=0,
        description="largest accepted image, width x height read from the header before decoding (else 413)")
    upload_max_in_flight: int = Field(
        2, ge=1, le=256,
        description="uploads decoded and inspected at once; each holds its decoded frame (a 6000x6000 "
                    "PNG about 110 MB while it decodes), so this also bounds the memory uploads take")
    upload_max_queued: int = Field(
        8, ge=0, le=10_000,
        description="uploads waiting for a slot beyond those in flight; one more is answered 503 with "
                    "`Retry-After` at once")
    upload_max_wait_s: float = Field(
        10.0, gt=0, le=600,
        description="longest wait of a queued upload for a slot, in seconds; then 503 with `Retry-After`")
    conf_threshold: float = Field(0.25, ge=0.0, le=1.0, description="confidence threshold of uploaded "
                                  "frames for classes the model has no operating point for (its metadata "
                                  "`operating_points`, shown by GET /api/v1/model)")
    iou_threshold: float = Field(0.45, gt=0.0, le=1.0, description="NMS IoU threshold (class-aware)")
    max_det: int = Field(300, ge=1, le=10_000, description="most detections kept per frame")
    cameras_file: Path | None = Field(
        None,
        description="the cameras file (YAML, see docs/cameras.md); when set, camera ingest runs in the "
                    "service")
    auth_enabled: bool = Field(
        True, description="require API keys; `false` makes every caller an admin (a local demo only)")
    metrics_public: bool = Field(True, description="serve `/metrics` without an API key")
    metrics_max_cameras: int = Field(
        100, ge=0, le=10_000,
        description="camera ids outside the cameras file (uploads name their own) that get their own "
                    "`camera` label in `/metrics`, first come first served; later ones count under "
                    "`camera=\"other\"`")
    key_cache_s: float = Field(
        30.0, ge=0, le=3600,
        description="seconds an API key verified against the database is honoured from memory without "
                    "asking it again (also while the database is away); a revocation or expiry made by "
                    "another process reaches this one within this time (0: ask the database every request)")
    journal_max_mb: float = Field(
        512.0, gt=0, le=1_048_576,
        description="bound of the on-disk journal (`<data dir>/journal`) that keeps uploaded frames while "
                    "the database is away, MiB; full: uploads are answered 503 with Retry-After (with "
                    "cameras running, the cameras file's `pipeline.writer.journal_max_mb` applies instead)")
    db_probe_s: float = Field(
        1.0, gt=0, le=300,
        description="while the database is away (circuit open) it is probed once this often, seconds; "
                    "requests in between are answered at once (uploads journaled, others 503)")
    mqtt_host: str | None = Field(
        None, description="the MQTT broker's host name or address; unset: no MQTT publisher (needs the "
                          "`mqtt` extra; topics and payloads in docs/integration.md)")
    mqtt_port: int = Field(1883, ge=1, le=65535,
                           description="the MQTT broker's port (8883 is usual with TLS)")
    mqtt_prefix: str = Field(
        "inspect",
        description="first topic level(s) of every MQTT topic: `<prefix>/<line>/<station>/<camera>/"
                    "inspection`; levels separated by `/`, none empty, no `+` or `#`")
    mqtt_client_id: str = Field(
        "", max_length=128,
        description="MQTT client id; empty: `defect-inspect-<host name>-<serve or ingest>` (two processes "
                    "may not share one)")
    mqtt_username: str | None = Field(None, min_length=1, description="MQTT user name (with mqtt_password)")
    mqtt_password: SecretStr | None = Field(None, description="MQTT password (never shown by the API)")
    mqtt_tls: bool = Field(False, description="connect to the broker over TLS")
    mqtt_ca_file: Path | None = Field(
        None, description="CA certificate(s) (PEM) the broker's certificate is checked against; unset: the "
                          "system's (with mqtt_tls)")
    mqtt_cert_file: Path | None = Field(
        None, description="client certificate (PEM) for brokers that authenticate clients by certificate "
                          "(with mqtt_tls and mqtt_key_file)")
    mqtt_key_file: Path | None = Field(None, description="the client certificate's private key (PEM)")
    mqtt_queue_size: int = Field(
        10_000, ge=1, le=1_000_000,
        description="MQTT messages kept in memory while the broker is away or slow; beyond, new messages "
                    "are dropped and counted (`inspect_mqtt_dropped_total`); lost on a restart (the "
                    "records are in the database)")
    mqtt_keepalive_s: int = Field(30, ge=5, le=3600,
                                  description="MQTT keep-alive in seconds: the broker sends the last will "
                                              "about 1.5 times this long after the process vanished")
    mqtt_reconnect_max_s: float = Field(
        30.0, ge=1, le=3600, description="longest wait between reconnection attempts to the broker, seconds "
                                         "(the wait doubles from 1 s up to this)")
    opcua_endpoint: str | None = Field(
        None,
        description="the OPC UA server's endpoint, e.g. `opc.tcp://0.0.0.0:4840/defect-inspect/`; unset: no "
                    "OPC UA server (needs the `opcua` extra; node ids in docs/integration.md)")
    opcua_namespace: str = Field("urn:defect-inspect", min_length=1,
                                 description="namespace URI of the OPC UA nodes (node ids are strings in it)")
    opcua_security: Annotated[list[Literal["none", "sign", "sign_and_encrypt"]], NoDecode] = Field(
        default_factory=lambda: ["none"],
        description="comma list of the OPC UA security modes offered: `none`, `sign`, `sign_and_encrypt` "
                    "(Basic256Sha256; these two need opcua_cert_file and opcua_key_file)")
    opcua_cert_file: Path | None = Field(None, description="the OPC UA server's certificate (DER or PEM)")
    opcua_key_file: Path | None = Field(None, description="the OPC UA server certificate's private key (PEM)")
    opcua_username: str | None = Field(
        None, min_length=1,
        description="OPC UA login; set: anonymous sessions are refused and only this user (with "
                    "opcua_password) may connect")
    opcua_password: SecretStr | None = Field(None, description="the OPC UA user's password")
    opcua_user_certs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="comma list of trusted user certificate files (DER or PEM): a client that signs in "
                    "with one of them (X.509 user token) opens a session as the certificate's subject "
                    "common name; needs opcua_cert_file and opcua_key_file (the token is signed against the "
                    "server certificate)")
    verdict_queue_size: int = Field(
        1000, ge=1, le=1_000_000,
        description="provisional verdicts (published as soon as inference ends, before the commit) waiting "
                    "for the MQTT publisher or the OPC UA server; beyond this the newest are dropped and "
                    "counted, inference never waits")
    shifts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["06:00", "14:00", "22:00"],
        description="comma list of shift start times, `HH:MM` in shift_timezone; the line counters "
                    "(inspected, NG, yield) of MQTT and OPC UA count from the start of the current shift")
    shift_timezone: str = Field(
        "UTC", min_length=1, description="IANA time zone of the shift start times, e.g. `Europe/Berlin`")
    demo: bool = Field(False, description="start a simulator camera (`serve --demo` sets it)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="log level: `DEBUG`, `INFO`, `WARNING` or `ERROR` (any case)")

    @field_validator("providers", "webhook_allowed_networks", "webhook_refused_networks", "opcua_security",
                     "opcua_user_certs", "shifts", mode="before")
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("webhook_allowed_networks", "webhook_refused_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # ValueError: not a network; the variable is named
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

    @field_validator("mqtt_prefix")
    @classmethod
    def _check_mqtt_prefix(cls, value: str) -> str:
        from app.line.topics import check_prefix

        return check_prefix(value)

    @field_validator("mqtt_host", "mqtt_username", "opcua_endpoint", "opcua_username", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file", "opcua_cert_file", "opcua_key_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("opcua_user_certs")
    @classmethod
    def _readable_files(cls, value: list[Path]) -> list[Path]:
        missing = [str(p) for p in value if not p.is_file()]
        if missing:
            raise ValueError(f"no such file: {', '.join(missing)}")
        return value

    @field_validator("shifts")
    @classmethod
    def _check_shifts(cls, value: list[str]) -> list[str]:
        from app.line.shifts import parse_starts

        parse_starts(value)  # ValueError names the bad entry
        return value

    @field_validator("shift_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)") from None
        return value

    @field_validator("opcua_endpoint")
    @classmethod
    def _check_opcua_endpoint(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is not None:
            parts = urlsplit(value)
            if parts.scheme != "opc.tcp" or not parts.hostname or parts.port is None:
                raise ValueError("expected opc.tcp://<host>:<port>/<path>")
        return value

    @model_validator(mode="after")
    def _check_opcua(self) -> Settings:
        if (self.opcua_username is None) != (self.opcua_password is None):
            raise ValueError("INSPECT_OPCUA_USERNAME and INSPECT_OPCUA_PASSWORD go together")
        secure = set(self.opcua_security) - {"none"}
        if secure and (self.opcua_cert_file is None or self.opcua_key_file is None):
            raise ValueError("INSPECT_OPCUA_SECURITY sign or sign_and_encrypt needs INSPECT_OPCUA_CERT_FILE "
                             "and INSPECT_OPCUA_KEY_FILE")
        if not self.opcua_security:
            raise ValueError("INSPECT_OPCUA_SECURITY names no security mode")
        if self.opcua_user_certs and (self.opcua_cert_file is None or self.opcua_key_file is None):
            raise ValueError("INSPECT_OPCUA_USER_CERTS needs INSPECT_OPCUA_CERT_FILE and "
                             "INSPECT_OPCUA_KEY_FILE")
        return self

    @model_validator(mode="after")
    def _check_mqtt_login(self) -> Settings:
        if self.mqtt_password is not None and self.mqtt_username is None:
            raise ValueError("INSPECT_MQTT_PASSWORD needs INSPECT_MQTT_USERNAME")
        if (self.mqtt_cert_file is None) != (self.mqtt_key_file is None):
            raise ValueError("INSPECT_MQTT_CERT_FILE and INSPECT_MQTT_KEY_FILE go together")
        if (self.mqtt_cert_file or self.mqtt_ca_file) and not self.mqtt_tls:
            raise ValueError("INSPECT_MQTT_CA_FILE and INSPECT_MQTT_CERT_FILE need INSPECT_MQTT_TLS=true")
        return self

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
