"""The service's detector, built in one place: the model file, ONNX Runtime providers, thread counts and
TensorRT cache come from the settings; a caller names only what it needs differently (the camera
workers' thread count, the CPU provider of the start-up check, a benchmark's model file)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from app.inference import Engine, ModelLoadError
from app.settings import Settings

log = logging.getLogger(__name__)


def missing_model(settings: Settings) -> str | None:
    """Why the settings' model file cannot be loaded without trying: it does not exist (None: it does)."""
    if settings.model_path.is_file():
        return None
    return f"model file not found: {settings.model_path} (set INSPECT_MODEL_PATH or export a model)"


def build_engine(settings: Settings, *, model_path: str | Path | None = None,
                 providers: Sequence[str] | None = None, intra_op_threads: int | None = None,
                 warmup: bool = True) -> Engine:
    """The detector for ``settings``; ``model_path``, ``providers`` and ``intra_op_threads`` override
    INSPECT_MODEL_PATH, INSPECT_PROVIDERS and INSPECT_INTRA_OP_THREADS. Raises ModelLoadError."""
    if model_path is None:
        reason = missing_model(settings)
        if reason is not None:
            raise ModelLoadError(reason)
        model_path = settings.model_path
    if providers is None:
        providers = settings.providers or None  # None: ONNX Runtime's available providers, best first
    if intra_op_threads is None:
        intra_op_threads = settings.intra_op_threads
    return Engine(model_path, providers=providers, intra_op_threads=intra_op_threads,
                  inter_op_threads=settings.inter_op_threads, trt_cache_dir=settings.trt_cache_dir,
                  warmup=warmup)


def load_engine(settings: Settings) -> tuple[Engine | None, str | None]:
    """The detector, or (None, reason) when the model is missing or cannot be loaded: a broken model
    must not stop the service, /readyz reports it."""
    reason = missing_model(settings)
    if reason is not None:
        log.warning(reason)
        return None, reason
    try:
        return build_engine(settings), None
    except Exception as exc:  # onnxruntime and the metadata check raise several kinds
        reason = f"cannot load model {settings.model_path}: {exc}"
        log.error(reason)
        return None, reason
