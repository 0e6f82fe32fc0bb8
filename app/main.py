"""``create_app()``: the FastAPI application. The lifespan wires settings, database and detector
into ``app.state``; a missing or broken model leaves the service up but not ready (/readyz)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__, metrics
from app.api import include_routers
from app.api.problems import install_problem_handlers
from app.db.session import Database
from app.inference import Engine
from app.ingest.service import start_ingest
from app.settings import Settings, get_settings
from app.webhooks import DeliveryWorker

log = logging.getLogger(__name__)


def load_engine(settings: Settings) -> tuple[Engine | None, str | None]:
    """The detector, or (None, reason) when the model is missing or cannot be loaded."""
    path = settings.model_path
    if not path.is_file():
        reason = f"model file not found: {path} (set INSPECT_MODEL_PATH or export a model)"
        log.warning(reason)
        return None, reason
    try:
        engine = Engine(path, providers=settings.providers or None,
                        intra_op_threads=settings.intra_op_threads,
                        inter_op_threads=settings.inter_op_threads, trt_cache_dir=settings.trt_cache_dir)
    except Exception as exc:  # a broken model must not stop the service: /readyz reports it
        reason = f"cannot load model {path}: {exc}"
        log.error(reason)
        return None, reason
    return engine, None


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; ``settings`` default to the environment (``SettingsError`` on bad values)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.database_url)
        engine, engine_error = load_engine(settings)
        app.state.db = db
        app.state.engine = engine
        app.state.engine_error = engine_error
        metrics.set_model_info(engine.version if engine else None, engine.provider if engine else None)
        # camera ingest (INSPECT_CAMERAS_FILE, or the demo line with --demo); a bad file stops start-up
        app.state.ingest, app.state.ingest_error = start_ingest(settings, db)
        # webhook deliveries: queued in the database, sent by this background thread (app/webhooks.py)
        app.state.webhook_worker = DeliveryWorker(db.sessionmaker)
        app.state.webhook_worker.start()
        try:
            yield
        finally:
            if app.state.ingest is not None:
                app.state.ingest.stop()  # drains queues, commits or journals every result
            app.state.webhook_worker.stop()
            db.dispose()

    app = FastAPI(
        title="Defect inspection",
        version=__version__,
        description="Surface-defect detection (YOLOv5s+CBAM on ONNX Runtime) with a SQL defect log.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_problem_handlers(app)
    include_routers(app)
    return app
