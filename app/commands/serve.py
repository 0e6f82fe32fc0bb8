"""`defect-inspect serve`: run the API with uvicorn."""

from __future__ import annotations

import argparse

from app.errors import UserError
from app.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the HTTP service (OpenAPI at /docs)",
                              description="Run the inspection service (settings: INSPECT_* variables).")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--demo", action="store_true", help="also start a simulator camera (INSPECT_DEMO)")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    overrides = {"demo": True} if args.demo else {}
    if args.log_level:
        overrides["log_level"] = args.log_level.upper()
    settings = load_settings(**overrides)  # SettingsError: a UserError naming the variable
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: must be 1-65535")
    from app.db.migrate import check_schema
    from app.ingest.journal import ensure_journal_free
    from app.ingest.startup import cameras_path, check_start

    # a bad cameras file, a data folder another process holds or a database whose schema is not this
    # version's: one line, exit 2, before the server starts
    if settings.cameras_file is not None:
        check_start(settings, cameras_path(settings))
    else:  # the demo line never stops start-up; a second service on the same data folder (journal) does
        ensure_journal_free(settings.data_dir / "journal")
    check_schema(settings.database_url)
    app = create_app(settings)
    if settings.demo and settings.auth_enabled:  # a ready operator key for the dashboard (app/auth.py)
        from app.auth import announce_demo_key

        announce_demo_key(settings.database_url, settings.data_dir, f"http://{args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level.lower())
    return 0
