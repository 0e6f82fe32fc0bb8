"""Choose ONNX Runtime execution providers: TensorRT (FP16, cached engines), CUDA, DirectML, CPU.

A requested provider that this onnxruntime build lacks is skipped with a warning; CPU always
closes the list, so a session can always be made."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
DIRECTML = "DmlExecutionProvider"
CPU = "CPUExecutionProvider"
PREFERRED_ORDER = (TENSORRT, CUDA, DIRECTML, CPU)

ALIASES = {
    "tensorrt": TENSORRT, "trt": TENSORRT,
    "cuda": CUDA, "gpu": CUDA,
    "directml": DIRECTML, "dml": DIRECTML,
    "cpu": CPU,
}

ProviderSpec = str | tuple[str, dict[str, Any]]


def canonical_name(name: str) -> str:
    """``cuda`` -> ``CUDAExecutionProvider``; full provider names pass through."""
    name = name.strip()
    return ALIASES.get(name.lower(), name)


def provider_options(name: str, trt_cache_dir: Path | None) -> dict[str, Any]:
    if name == TENSORRT:
        opts: dict[str, Any] = {"trt_fp16_enable": True}
        if trt_cache_dir is not None:
            trt_cache_dir.mkdir(parents=True, exist_ok=True)
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache_dir))
        return opts
    return {}


def choose_providers(available: Sequence[str], requested: Sequence[str] | None = None,
                     trt_cache_dir: Path | None = None) -> tuple[list[ProviderSpec], list[str]]:
    """Return (providers for ``InferenceSession``, warnings).

    Without ``requested``: every provider of PREFERRED_ORDER that ``available`` has, in that order.
    With ``requested``: those, in the given order, minus the absent ones (each warned about)."""
    warnings: list[str] = []
    avail = set(available)
    if requested:
        names = []
        for raw in requested:
            name = canonical_name(raw)
            if name in avail:
                if name not in names:
                    names.append(name)
            else:
                msg = (f"execution provider {raw!r} is not available in this onnxruntime "
                       f"(available: {', '.join(available)}); falling back")
                warnings.append(msg)
                log.warning(msg)
        if not names:
            names = [p for p in PREFERRED_ORDER if p in avail]
    else:
        names = [p for p in PREFERRED_ORDER if p in avail]
    if CPU not in names:
        names.append(CPU)
    specs: list[ProviderSpec] = []
    for name in names:
        opts = provider_options(name, trt_cache_dir)
        specs.append((name, opts) if opts else name)
    return specs, warnings
