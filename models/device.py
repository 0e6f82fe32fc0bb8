"""Where training runs: the device a name asks for (CUDA only when present) and the memory order the
network's convolutions are fastest in there."""

from __future__ import annotations

import torch


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
