"""Where training runs: the device a name asks for (CUDA only when present), the memory order the
network's convolutions are fastest in there, and the precision its forward pass runs in."""

from __future__ import annotations

import torch

from app.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """``name`` (cpu | cuda | cuda:N), the CPU when CUDA is asked for but absent."""
    device = torch.device(name if name != "cuda" or torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    return device


def memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last on a CPU: oneDNN's blocked convolution kernels then take each layer's input as it
    is, about 1.9x faster training on two cores (docs/benchmarks.md, "Training on a CPU"); unchanged
    elsewhere (not measured there)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Xeon Sapphire Rapids and later): oneDNN then runs bf16
    convolutions on them."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe())


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The dtype the forward pass runs in (mixed precision: weights, gradients and the loss stay float32),
    or None for float32 throughout. ``auto``: float16 on CUDA (with a gradient scaler); bfloat16 on a
    CPU with AMX, where an epoch takes about 0.6 of its float32 time (docs/benchmarks.md, "Training on a
    CPU"); float32 on other CPUs (bfloat16 without AMX is not measured here)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "bf16" if cpu_has_amx() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; on a CPU use bf16 (fast where it has AMX) "
                          "or fp32")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """The context a forward pass and its loss run in: ``dtype`` from :func:`autocast_dtype`, or float32
    throughout when it is None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def grad_scaler(dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling for float16 (its gradients underflow otherwise); a pass-through for bfloat16 and
    float32, whose exponent range is float32's."""
    return torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
