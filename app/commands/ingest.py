"""`defect-inspect ingest`: the camera pipeline alone (no upload API), with /healthz, /readyz, /metrics
and /api/v1/cameras on HOST:PORT for Prometheus and the orchestrator; or in the foreground without
HTTP (``--no-http``), ending when every finite source is done, after ``--seconds``, or on a signal."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import NotFound, UserError

if TYPE_CHECKING:
    from app.settings import Settings

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
    p.add_argument("--check", action="store_true",
                   help="validate the cameras file and exit; warns about capture devices this machine lacks")
    p.add_argument("--from-start", action="store_true",
                   help="read files and folders from their start: forget the cameras' checkpoints "
                        "(frames already stored are replays, not stored twice)")
    p.set_defaults(func=run)


def _prepare(args: argparse.Namespace) -> tuple[Settings, Path]:
    from app.db.migrate import check_schema
    from app.engine_factory import missing_model
    from app.ingest.config import load_cameras
    from app.ingest.startup import cameras_path, check_start
    from app.settings import load_settings

    settings = load_settings()  # SettingsError: a UserError naming the variable
    path = cameras_path(settings, args.cameras)
    if path is None:
        raise UserError("no cameras file: give --cameras FILE or set INSPECT_CAMERAS_FILE")
    if args.check:  # the file only (the service may be running on this data folder)
        load_cameras(path)  # CamerasConfigError (a UserError) names the file, line and key
    else:  # also refuses a data folder whose journal another process holds
        check_start(settings, Path(path))
        check_schema(settings.database_url)  # SchemaMismatch: migrations not run
        if args.from_start:
            forget_checkpoints(settings, Path(path))
    reason = missing_model(settings)
    if reason is not None:
        raise NotFound(reason)
    return settings, Path(path)


def forget_checkpoints(settings: Settings, path: Path) -> None:
    """``--from-start``: remove the checkpoints of the file's cameras, so their sources are read again."""
    from app.ingest.checkpoints import CheckpointStore, checkpoints_dir
    from app.ingest.config import load_cameras

    cameras = [cam.id for cam in load_cameras(path).cameras]
    removed = CheckpointStore(checkpoints_dir(settings.data_dir)).forget(cameras)
    if removed:
        log.warning("--from-start: checkpoints removed, reading from the start: %s", ", ".join(removed))


def run_foreground(settings: Settings, path: Path, seconds: float | None) -> dict:
    """The pipeline without HTTP until every finite source is done, ``seconds`` pass or a signal comes;
    returns its final snapshot."""
    from app.service import Role, running_service

    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    t0 = time.monotonic()
    try:
        with running_service(settings, Role.INGEST, path) as service:
            pipeline = service.pipeline
            assert pipeline is not None  # the ingest role runs its cameras file or raises
            while not stop.wait(0.2):
                if seconds is not None and time.monotonic() - t0 >= seconds:
                    break
                if pipeline.finished():
                    break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return pipeline.snapshot() | {"seconds": round(time.monotonic() - t0, 2)}


def run(args: argparse.Namespace) -> int:
    settings, path = _prepare(args)
    if args.check:
        from app.ingest.startup import device_warnings

        for warning in device_warnings(path):
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{path}: ok")
        return 0
    if args.no_http or args.seconds is not None:
        print(json.dumps(run_foreground(settings, path, args.seconds), default=str))
        return 0
    import uvicorn

    from app.main import create_ingest_app

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: must be 1-65535")
    uvicorn.run(create_ingest_app(settings, path), host=args.host, port=args.port,
                log_level=settings.log_level.lower())
    return 0
