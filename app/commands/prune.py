"""`defect-inspect prune [--dry-run]`: one pass of the retention pruner (the service runs the same pass
every INSPECT_PRUNE_INTERVAL_S), printing what it deleted, or with ``--dry-run`` what it would."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prune", help="delete images and rows past the retention policy (INSPECT_RETENTION_*)",
        description="One pass of the retention pruner over INSPECT_DATABASE_URL and INSPECT_DATA_DIR: rows, "
                    "frames and crops older than their limits, then the oldest images while the store is "
                    "above INSPECT_IMAGE_STORE_MAX_GB or free space below INSPECT_DISK_LOW_WATERMARK_MB. "
                    "Prints a JSON summary.")
    p.add_argument("--dry-run", action="store_true", help="delete nothing; print what would be deleted")
    p.add_argument("--cameras", default=None,
                   help="cameras file whose per-camera `retention` applies (default: INSPECT_CAMERAS_FILE)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from app.db.session import Database, require_existing_database
    from app.ingest.config import load_cameras
    from app.retention import Pruner, RetentionPolicy
    from app.settings import load_settings
    from app.storage_health import HEALTH

    settings = load_settings()
    require_existing_database(settings.database_url)
    path = args.cameras or settings.cameras_file
    cameras = load_cameras(Path(path)).cameras if path else []
    HEALTH.configure(jpeg_quality=settings.image_jpeg_quality, store_frames=settings.store_frames,
                     floor_mb=settings.disk_floor_mb, watermark_mb=settings.disk_low_watermark_mb)
    db = Database(settings.database_url)
    try:
        pruner = Pruner(db, settings.data_dir, RetentionPolicy.from_settings(settings, cameras))
        report = pruner.run_once(dry_run=args.dry_run)
        usage = pruner.store_usage()
    except SQLAlchemyError as exc:
        raise UserError(f"cannot prune: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    finally:
        db.dispose()
    print(json.dumps({**report.as_dict(), "store": usage}))
    return 0
