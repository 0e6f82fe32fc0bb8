"""The service, assembled in one place for ``defect-inspect serve`` and ``defect-inspect ingest``: the
settings, the database, the detector, the camera pipeline (with its journal) and the webhook sender, as
one typed ``Service`` that ``running_service`` builds, starts and tears down. The FastAPI lifespan
(app.main) attaches it to the app, where routes reach its parts through app.api.deps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from app import metrics
from app.db.session import Database, sqlite_file
from app.engine_factory import load_engine
from app.inference import Engine
from app.ingest.journal import Journal
from app.ingest.pipeline import Pipeline
from app.ingest.startup import build_pipeline, start_ingest
from app.retention import Pruner, RetentionPolicy
from app.settings import Settings
from app.storage_health import HEALTH
from app.webhook_targets import TargetPolicy
from app.webhooks import DeliveryWorker


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
    for a ``serve`` process to send them."""

    settings: Settings
    db: Database
    engine: Engine | None = None
    engine_error: str | None = None
    pipeline: Pipeline | None = None
    ingest_error: str | None = None
    webhooks: DeliveryWorker | None = None
    pruner: Pruner | None = None

    @property
    def journal(self) -> Journal | None:
        """Where camera results wait while the database is away (the pipeline's)."""
        return None if self.pipeline is None else self.pipeline.journal

    def stop(self) -> None:
        """Drain the pipeline (every result committed or journaled), stop the webhook sender, close the
        database."""
        if self.pruner is not None:
            self.pruner.stop()
        if self.pipeline is not None:
            self.pipeline.stop()
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
    HEALTH.reset()
    HEALTH.configure(jpeg_quality=settings.image_jpeg_quality, store_frames=settings.store_frames,
                     floor_mb=settings.disk_floor_mb, watermark_mb=settings.disk_low_watermark_mb,
                     data_dir=settings.data_dir)
    service = Service(settings, Database(settings.database_url))
    if service.db.ping() is None:  # a SQLite file exists now: a deletion or replacement is noticed
        HEALTH.watch_database_file(sqlite_file(service.db.url))
    try:
        if cameras is not None:
            service.pipeline = build_pipeline(settings, cameras, service.db).start()
            service.engine = service.pipeline.engine
        else:
            service.engine, service.engine_error = load_engine(settings)
            service.pipeline, service.ingest_error = start_ingest(settings, service.db)
            # webhook deliveries: queued in the database, sent by this background thread (app/webhooks.py)
            targets = TargetPolicy.of(settings.webhook_allowed_networks, settings.webhook_refused_networks)
            service.webhooks = DeliveryWorker(service.db.sessionmaker, targets=targets)
            service.webhooks.start()
        # retention: a background pass every INSPECT_PRUNE_INTERVAL_S (app/retention.py)
        cameras = service.pipeline.config.cameras if service.pipeline is not None else ()
        policy = RetentionPolicy.from_settings(settings, cameras)
        service.pruner = Pruner(service.db, settings.data_dir, policy)
        service.pruner.start(settings.prune_interval_s)
    except BaseException:
        service.stop()
        raise
    engine = service.engine
    metrics.set_model_info(engine.version if engine else None, engine.provider if engine else None)
    return service


@contextmanager
def running_service(settings: Settings, role: Role = Role.SERVE,
                    cameras: Path | None = None) -> Iterator[Service]:
    """``start_service`` for the length of a ``with`` block; stopped (drained) at its end."""
    service = start_service(settings, role, cameras)
    try:
        yield service
    finally:
        service.stop()
