"""`defect-inspect ingest`: the camera pipeline alone (no upload API), with /healthz, /readyz, /metrics
and /api/v1/cameras on HOST:PORT for Prometheus and the orchestrator; or in the foreground without
HTTP (``--no-http``), ending when every finite source is done, after ``--seconds``, or on a signal."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from app.errors import UserError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ingest", help="run the camera ingest pipeline (cameras YAML: --cameras or INSPECT_CAMERAS_FILE)",
        description="Capture, inspect and store frames of the cameras in the cameras file.")
    p.add_argument("--cameras", default=None, help="cameras YAML (default INSPECT_CAMERAS_FILE)")
    p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                   help="bind address of the health/metrics endpoint (default $HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")),
                   help="port of the health/metrics endpoint (default $PORT or 8000)")
    p.add_argument("--no-http", action="store_true",
                   help="no HTTP endpoint: run in the foreground, stop when all finite sources end")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (with --no-http)")
    p.add_argument("--check", action="store_true", help="validate the cameras file and exit")
    p.set_defaults(func=run)


def _prepare(args: argparse.Namespace):
    from app.ingest.config import load_cameras
    from app.ingest.service import cameras_path, check_start
    from app.settings import load_settings

    settings = load_settings()  # SettingsError: a UserError naming the variable
    path = cameras_path(settings, args.cameras)
    if path is None:
        raise UserError("no cameras file: give --cameras FILE or set INSPECT_CAMERAS_FILE")
    if args.check:  # the file only (the service may be running on this data folder)
        load_cameras(path)  # CamerasConfigError (a UserError) names the file, line and key
    else:  # also refuses a data folder whose journal another process holds
        check_start(settings, Path(path))
    if not settings.model_path.is_file():
        raise UserError(f"model file not found: {settings.model_path} (set INSPECT_MODEL_PATH)")
    return settings, Path(path)


def create_ingest_app(settings, path: Path):
    """A small FastAPI app: health, metrics and camera state; its lifespan runs the pipeline."""
    from fastapi import FastAPI

    from app import __version__, metrics
    from app.api import API_PREFIX, METRICS_DEPENDENCIES, READ_DEPENDENCIES
    from app.api.problems import install_problem_handlers
    from app.api.routes import cameras, health
    from app.db.session import Database
    from app.ingest.service import build_pipeline

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.database_url)
        pipeline = build_pipeline(settings, path, db)
        app.state.db, app.state.engine, app.state.engine_error = db, pipeline.engine, None
        app.state.ingest, app.state.ingest_error = pipeline.start(), None
        metrics.set_model_info(pipeline.engine.version, pipeline.engine.provider)
        try:
            yield
        finally:
            pipeline.stop()
            db.dispose()

    app = FastAPI(title="Defect inspection: camera ingest", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(health.metrics_router, dependencies=METRICS_DEPENDENCIES)
    app.include_router(cameras.router, prefix=API_PREFIX, dependencies=READ_DEPENDENCIES)
    return app


def run_foreground(settings, path: Path, seconds: float | None) -> dict:
    from app.db.session import Database
    from app.ingest.service import build_pipeline

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    pipeline = build_pipeline(settings, path, db)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()
    try:
        pipeline.start()
        while not stop.wait(0.2):
            if seconds is not None and time.monotonic() - t0 >= seconds:
                break
            if pipeline.finished():
                break
    finally:
        pipeline.stop()
        db.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return pipeline.snapshot() | {"seconds": round(time.monotonic() - t0, 2)}


def run(args: argparse.Namespace) -> int:
    settings, path = _prepare(args)
    if args.check:
        print(f"{path}: ok")
        return 0
    if args.no_http or args.seconds is not None:
        print(json.dumps(run_foreground(settings, path, args.seconds), default=str))
        return 0
    import uvicorn

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: must be 1-65535")
    uvicorn.run(create_ingest_app(settings, path), host=args.host, port=args.port,
                log_level=settings.log_level.lower())
    return 0
