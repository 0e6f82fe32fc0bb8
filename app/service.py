"""The service, assembled in one place for ``defect-inspect serve`` and ``defect-inspect ingest``: the
settings, the database (with its circuit breaker), the detector, the database writer with its journal
(one per process: the camera pipeline's when cameras run, else the service's own, for frames posted
over HTTP while the database is away), the API key cache, the camera pipeline and the webhook sender,
as one typed ``Service`` that ``running_service`` builds, starts and tears down. The FastAPI lifespan
(app.main) attaches it to the app, where routes reach its parts through app.api.deps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import memory, metrics
from app.admission import AdmissionGate, AdmissionLimits
from app.auth import KeyCache
from app.db.session import Database, sqlite_file
from app.engine_factory import load_engine
from app.errors import ConfigError
from app.inference import Engine
from app.ingest.config import WriterConfig
from app.ingest.journal import Journal
from app.ingest.pipeline import Pipeline
from app.ingest.startup import build_pipeline, start_ingest
from app.ingest.writer import DbWriter, open_writer
from app.retention import Pruner, RetentionPolicy
from app.settings import Settings
from app.storage_health import HEALTH
from app.webhook_targets import TargetPolicy
from app.webhooks import DeliveryWorker

if TYPE_CHECKING:
    from app.line.mqtt import MqttPublisher
    from app.line.opcua import OpcuaServer


class Role(StrEnum):
    """What a process runs. SERVE: the HTTP API with the upload detector, the webhook sender and the
    cameras of INSPECT_CAMERAS_FILE (or the demo line) when there are any. INGEST: one cameras file's
    pipeline alone; its detector is the service's detector."""

    SERVE = "serve"
    INGEST = "ingest"


@dataclass
class Service:
    """The running parts. ``engine`` None: ``engine_error`` says why (the service is up, not ready);
    ``pipeline`` None: ``ingest_error`` says why; ``webhooks`` None: deliveries wait in the database
    for a ``serve`` process to send them. ``uploads``: admission control of POST /inspections."""

    settings: Settings
    db: Database
    engine: Engine | None = None
    engine_error: str | None = None
    pipeline: Pipeline | None = None
    ingest_error: str | None = None
    webhooks: DeliveryWorker | None = None
    keys: KeyCache = field(default_factory=lambda: KeyCache(0))
    own_writer: DbWriter | None = None  # without a pipeline: the writer of HTTP uploads
    mqtt: MqttPublisher | None = None  # INSPECT_MQTT_HOST set: stored inspections go to the broker
    opcua: OpcuaServer | None = None  # INSPECT_OPCUA_ENDPOINT set: the OPC UA server
    pruner: Pruner | None = None  # the retention pass (app/retention.py)
    free_pages: memory.FreePageReturn | None = None  # the allocator's free pages back once a minute
    uploads: AdmissionGate = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.uploads = AdmissionGate(AdmissionLimits(s.upload_max_in_flight, s.upload_max_queued,
                                                     s.upload_max_wait_s))

    @property
    def writer(self) -> DbWriter | None:
        """The process's one database writer and journal: the pipeline's, else the service's own."""
        return self.pipeline.writer if self.pipeline is not None else self.own_writer

    @property
    def journal(self) -> Journal | None:
        """Where results (camera frames and HTTP uploads) wait while the database is away."""
        writer = self.writer
        return None if writer is None else writer.journal

    def stop(self) -> None:
        """Stop the pruner, drain the pipeline and the writer (every result committed or journaled),
        stop the webhook sender, close the database."""
        if self.pruner is not None:
            self.pruner.stop()
        if self.free_pages is not None:
            self.free_pages.stop()
        if self.pipeline is not None:
            self.pipeline.stop()
        if self.own_writer is not None:
            self.own_writer.stop()
        if self.mqtt is not None:  # after the writers: their last inspections are announced too
            self.mqtt.stop()
        if self.opcua is not None:
            self.opcua.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        self.db.dispose()


def start_service(settings: Settings, role: Role = Role.SERVE, cameras: Path | None = None) -> Service:
    """Build and start the service. SERVE: a missing or broken model leaves the service up without a
    detector; a bad INSPECT_CAMERAS_FILE raises (the demo line never does). INGEST: the pipeline of
    ``cameras``, raising CamerasConfigError, ModelLoadError or JournalInUse. Nothing is left running
    when it raises."""
    if (cameras is not None) != (role is Role.INGEST):
        raise ValueError("a cameras file is given for the ingest role, and only for it")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    memory.apply_memory_policy()  # frames and uploads leave the process when freed: RSS stays flat
    metrics.CAMERA_LABELS.configure(settings.metrics_max_cameras)  # the cameras of the pipeline register
    HEALTH.reset()
    HEALTH.configure(jpeg_quality=settings.image_jpeg_quality, store_frames=settings.store_frames,
                     floor_mb=settings.disk_floor_mb, watermark_mb=settings.disk_low_watermark_mb,
                     data_dir=settings.data_dir)
    service = Service(settings, Database(settings.database_url, probe_s=settings.db_probe_s),
                      keys=KeyCache(settings.key_cache_s))
    if service.db.ping() is None:  # a SQLite file exists now: a deletion or replacement is noticed
        HEALTH.watch_database_file(sqlite_file(service.db.url))
    try:
        if cameras is not None:
            service.pipeline = build_pipeline(settings, cameras, service.db).start()
            service.engine = service.pipeline.engine
        else:
            service.engine, service.engine_error = load_engine(settings)
            service.pipeline, service.ingest_error = start_ingest(settings, service.db)
            if service.pipeline is None:  # HTTP uploads still need a journal while the database is away
                service.own_writer = open_writer(service.db, settings.data_dir,
                                                 WriterConfig(journal_max_mb=settings.journal_max_mb))
                service.own_writer.start()
            # webhook deliveries: queued in the database, sent by this background thread (app/webhooks.py)
            targets = TargetPolicy.of(settings.webhook_allowed_networks, settings.webhook_refused_networks)
            service.webhooks = DeliveryWorker(service.db.sessionmaker, targets=targets)
            service.webhooks.start()
        service.mqtt = start_mqtt(service, role)
        service.opcua = start_opcua(service)
        # retention: a background pass every INSPECT_PRUNE_INTERVAL_S (app/retention.py)
        camera_configs = service.pipeline.config.cameras if service.pipeline is not None else ()
        policy = RetentionPolicy.from_settings(settings, camera_configs)
        service.pruner = Pruner(service.db, settings.data_dir, policy)
        service.pruner.start(settings.prune_interval_s)
        service.free_pages = memory.FreePageReturn().start()
    except BaseException:
        service.stop()
        raise
    engine = service.engine
    metrics.set_model_info(engine.version if engine else None, engine.provider if engine else None)
    return service


def camera_states(service: Service) -> list[dict[str, Any]]:
    """The cameras' states (``CameraState.snapshot``), none without a pipeline."""
    return [] if service.pipeline is None else service.pipeline.snapshot()["cameras"]


def feed_line_sink(writer: DbWriter, pipeline: Pipeline | None, sink: MqttPublisher | OpcuaServer) -> None:
    """Hang a line protocol's publisher on the writer (stored inspections and tracks, after the commit)
    and on the pipeline's inference workers (provisional verdicts, before it)."""
    writer.stored_listeners.append(sink.inspections_stored)
    writer.track_listeners.append(sink.tracks_stored)
    if pipeline is not None:
        pipeline.detection.verdict_listeners.append(sink.verdicts.offer)


def start_mqtt(service: Service, role: Role) -> MqttPublisher | None:
    """The MQTT publisher (app.line.mqtt) on the process's writer, when INSPECT_MQTT_HOST is set."""
    settings = service.settings
    if not settings.mqtt_host or service.writer is None:
        return None
    try:
        from app.line.mqtt import MqttConfig, MqttPublisher
    except ImportError:
        raise ConfigError("INSPECT_MQTT_HOST is set but paho-mqtt is not installed "
                          "(pip install 'defect-inspection[mqtt]')") from None
    config = MqttConfig.from_settings(settings, role.value)
    if config is None:
        return None
    publisher = MqttPublisher(config, service.db.sessionmaker, cameras=lambda: camera_states(service),
                              parts=service.pipeline.parts if service.pipeline is not None else None)
    feed_line_sink(service.writer, service.pipeline, publisher)
    alarms = service.pipeline.alarms if service.pipeline is not None else None
    if alarms is not None:  # alarms on their own topic, beside the inspections
        alarms.raised_listeners.append(lambda alarm: publisher.publish_alarm(
            alarm.line, None, alarm.camera_id, alarm.model_dump_json().encode()))
    return publisher.start()


def start_opcua(service: Service) -> OpcuaServer | None:
    """The OPC UA server (app.line.opcua) fed by the process's writer, when INSPECT_OPCUA_ENDPOINT is
    set; raises when its endpoint cannot be bound."""
    if not service.settings.opcua_endpoint or service.writer is None:
        return None
    try:
        from app.line.opcua import OpcuaConfig, OpcuaServer
    except ImportError:
        raise ConfigError("INSPECT_OPCUA_ENDPOINT is set but asyncua is not installed "
                          "(pip install 'defect-inspection[opcua]')") from None
    config = OpcuaConfig.from_settings(service.settings)
    if config is None:
        return None
    server = OpcuaServer(config, service.db.sessionmaker, cameras=lambda: camera_states(service),
                         parts=service.pipeline.parts if service.pipeline is not None else None)
    feed_line_sink(service.writer, service.pipeline, server)
    return server.start()


@contextmanager
def running_service(settings: Settings, role: Role = Role.SERVE,
                    cameras: Path | None = None) -> Iterator[Service]:
    """``start_service`` for the length of a ``with`` block; stopped (drained) at its end."""
    service = start_service(settings, role, cameras)
    try:
        yield service
    finally:
        service.stop()
