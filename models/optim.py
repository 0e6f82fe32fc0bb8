"""The optimisation pieces of training: weight-decay parameter groups, the optimizer (SGD with Nesterov
momentum or AdamW), the warm-up of LR and momentum, and an exponential moving average of the weights."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from app.errors import ConfigError


class ModelEMA:
    """Exponential moving average of the weights, decay ramping up as ``d * (1 - exp(-updates / 2000))``."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, updates: int = 0) -> None:
        self.ema = copy.deepcopy(model).eval()
        self.updates = updates
        self.decay = decay
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 2000))
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """YOLOv5's three groups: BatchNorm weights (no decay), other weights (decay), biases (no decay)."""
    bn, weights, biases = [], [], []
    for module in model.modules():
        if isinstance(getattr(module, "bias", None), nn.Parameter):
            biases.append(module.bias)
        if isinstance(module, nn.BatchNorm2d):
            bn.append(module.weight)
        elif isinstance(getattr(module, "weight", None), nn.Parameter):
            weights.append(module.weight)
    return [
        {"params": bn, "weight_decay": 0.0},
        {"params": weights, "weight_decay": weight_decay},
        {"params": biases, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, hyp: dict[str, Any], weight_decay: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (default, as YOLOv5) or AdamW (``optimizer: AdamW`` in the hyp file)."""
    groups = param_groups(model, weight_decay)
    name = str(hyp.get("optimizer", "SGD"))
    if name == "SGD":
        return torch.optim.SGD(groups, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    if name == "AdamW":
        return torch.optim.AdamW(groups, lr=hyp["lr0"], betas=(hyp["momentum"], 0.999))
    raise ConfigError(f"hyperparameter optimizer: {name!r} is not SGD or AdamW")


def warm_up(optimizer: torch.optim.Optimizer, hyp: dict[str, Any], step: int, warmup_iters: int,
            lr_factor: float) -> None:
    """Ramp each group's LR (biases from ``warmup_bias_lr`` down, the others from 0 up) towards
    ``initial_lr * lr_factor``, and the momentum from ``warmup_momentum`` to ``momentum``."""
    xi = [0, warmup_iters]
    momentum = np.interp(step, xi, [hyp["warmup_momentum"], hyp["momentum"]])
    for j, group in enumerate(optimizer.param_groups):
        start_lr = hyp["warmup_bias_lr"] if j == 2 else 0.0
        group["lr"] = np.interp(step, xi, [start_lr, group["initial_lr"] * lr_factor])
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        else:
            group["momentum"] = momentum


def set_lr_factor(optimizer: torch.optim.Optimizer, lr_factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr_factor
