"""`defect-inspect dataset export-reviewed`: the options of ``app.reviewed_export.export_reviewed``."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import UserError
from app.reviewed_export import export_reviewed
from app.vocabulary import to_utc

if TYPE_CHECKING:
    from app.settings import Settings


def _parse_time(value: str) -> datetime:
    try:
        return to_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None


def _model_names(settings: Settings, model: Path) -> list[str]:
    from app.engine_factory import build_engine
    from app.inference import ModelLoadError

    if not model.is_file():
        raise UserError(f"{model}: model file not found (pass --model or --names)")
    try:
        return list(build_engine(settings, model_path=model, warmup=False).metadata.names)
    except ModelLoadError as exc:
        raise UserError(f"{model}: {exc}") from None


def _cmd_export_reviewed(args: argparse.Namespace) -> int:
    from app.db.session import Database, require_existing_database
    from app.settings import load_settings

    settings = load_settings()  # SettingsError: a UserError naming the variable
    if args.names:
        names = [n.strip() for n in args.names.split(",") if n.strip()]
    else:
        names = _model_names(settings, args.model or settings.model_path)
    url = args.database_url or settings.database_url
    require_existing_database(url)  # NotFound: names the missing SQLite file, creates no ./data
    db = Database(url)
    try:
        with db.session() as session:
            report = export_reviewed(
                session, args.data_dir or settings.data_dir, args.out, names, start=args.start, end=args.end,
                line=args.line, include_pending=args.include_pending, val_fraction=args.val_fraction)
    finally:
        db.dispose()
    print(report.format())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-reviewed", help="export operator-reviewed defects as a YOLO dataset",
                       description="Export operator-reviewed defects as a YOLO dataset (data.yaml, "
                                   "train.txt, val.txt) that `defect-inspect train` reads.")
    p.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    p.add_argument("--from", dest="start", type=_parse_time,
                   help="captured at or after (ISO 8601; UTC if naive)")
    p.add_argument("--to", dest="end", type=_parse_time, help="captured before (ISO 8601)")
    p.add_argument("--line", help="only this production line")
    p.add_argument("--include-pending", action="store_true",
                   help="also export images with unreviewed defects (boxes keep the detected class)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of images for val.txt (0.2)")
    p.add_argument("--model", type=Path,
                   help="ONNX model whose class names to use (default INSPECT_MODEL_PATH)")
    p.add_argument("--names", help="comma-separated class names instead of reading them from the model")
    p.add_argument("--database-url", help="SQLAlchemy URL (default INSPECT_DATABASE_URL)")
    p.add_argument("--data-dir", type=Path, help="where images are stored (default INSPECT_DATA_DIR)")
    p.set_defaults(func=_cmd_export_reviewed)
