"""The camera-ingest part of the service's assembly (app.service): which cameras file runs (or the
demo line), the start-up checks, and the pipeline built from the settings with an engine of its own."""

from __future__ import annotations

import logging
from pathlib import Path

from app.db.session import Database
from app.engine_factory import build_engine
from app.inference import Engine, ModelLoadError
from app.ingest.config import CamerasConfigError, CamerasFile, key_line, load_cameras
from app.ingest.decoder import device_missing
from app.ingest.detection import check_against_model
from app.ingest.journal import JournalInUse, ensure_journal_free
from app.ingest.pipeline import Pipeline
from app.settings import Settings

log = logging.getLogger(__name__)

DEMO_CAMERAS = Path(__file__).resolve().parents[1] / "demo_cameras.yaml"


def cameras_path(settings: Settings, override: str | Path | None = None) -> Path | None:
    """The cameras file to run: an explicit path, INSPECT_CAMERAS_FILE, or the demo line."""
    if override:
        return Path(override)
    if settings.cameras_file:
        return Path(settings.cameras_file)
    if settings.demo:
        return DEMO_CAMERAS
    return None


def pipeline_engine(settings: Settings, config: CamerasFile) -> Engine:
    """An engine of its own for the workers: ``intra_op_threads`` from the cameras file (default 1,
    so each worker runs one model in its own thread)."""
    return build_engine(settings, intra_op_threads=config.pipeline.intra_op_threads)


def build_pipeline(settings: Settings, path: Path, db: Database, engine: Engine | None = None) -> Pipeline:
    """Validate the cameras file against the model and build (not start) the pipeline.
    Raises CamerasConfigError (file/key named), ModelLoadError or JournalInUse (another process
    journals into this data folder)."""
    config = load_cameras(path)
    if engine is None:
        engine = pipeline_engine(settings, config)
    return Pipeline(config, engine, db, settings.data_dir, base_dir=path.parent, config_name=str(path),
                    max_det=settings.max_det)


def device_warnings(path: Path) -> list[str]:
    """Enabled cameras whose capture device does not exist on this machine (a valid file: they start
    and retry until the device appears), each as ``file:line: cameras[i].source: ...``."""
    config = load_cameras(path)
    text = path.read_text(encoding="utf-8")
    out = []
    for i, cam in enumerate(config.cameras):
        missing = device_missing(cam.source) if cam.enabled and cam.source is not None else None
        if missing is not None:
            line = key_line(text, ("cameras", i, "source"))
            out.append(f"{path}:{line}: cameras[{i}].source: no device {missing} on this machine (camera "
                       f"{cam.id!r} retries until it appears)")
    return out


__all__ = ["CamerasConfigError", "DEMO_CAMERAS", "build_pipeline", "cameras_path", "check_start",
           "device_warnings", "pipeline_engine", "start_ingest"]


def check_start(settings: Settings, path: Path) -> None:
    """What would stop the pipeline from starting, found before anything starts (so ``serve`` and
    ``ingest`` can refuse with one line instead of a traceback from inside the server): the cameras
    file (CamerasConfigError names the file, line and key), against the model too (threshold classes,
    ``imgsz``), and a data folder whose journal another process holds (JournalInUse). A model that
    does not load is left to the service, which starts without cameras and says why."""
    config = load_cameras(path)
    ensure_journal_free(settings.data_dir / "journal")
    try:  # on the CPU provider: names, strides and the free input size are the same on every
        # provider, and a GPU provider (a TensorRT engine build) is not started twice for a check
        engine = build_engine(settings, providers=["cpu"], intra_op_threads=1)
    except ModelLoadError:  # missing or broken: the service starts without it and says why
        return
    check_against_model(config, engine, str(path))


def start_ingest(settings: Settings, db: Database) -> tuple[Pipeline | None, str | None]:
    """The running pipeline for the service lifespan, or (None, reason). A bad cameras file stops
    start-up (CamerasConfigError); a missing model leaves the service up without cameras, like the
    REST door; the demo line never stops start-up."""
    path = cameras_path(settings)
    if path is None:
        return None, "no cameras file (INSPECT_CAMERAS_FILE)"
    demo = settings.cameras_file is None
    try:
        pipeline = build_pipeline(settings, path, db)
    except ModelLoadError as exc:
        log.error("camera ingest not started: %s", exc)
        return None, f"camera ingest not started: {exc}"
    except (CamerasConfigError, JournalInUse) as exc:
        if not demo:
            raise
        log.warning("demo camera not started: %s", exc)
        return None, f"demo camera not started: {exc}"
    return pipeline.start(), None
