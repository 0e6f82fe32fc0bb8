"""The detection model, built from a short YAML config (YOLOv5 style)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from models.layers import C3, CBAM, SPPF, Concat, Conv, Detect

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


def resolve_config(cfg: str | Path) -> Path:
    """A config path, or a file name inside models/configs (``yolov5s-cbam.yaml``)."""
    path = Path(cfg)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / path.name
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(f"model config {cfg} not found (looked in {CONFIG_DIR})")


def load_config(cfg: str | Path | dict) -> dict[str, Any]:
    if isinstance(cfg, dict):
        return copy.deepcopy(cfg)
    with open(resolve_config(cfg)) as fh:
        return yaml.safe_load(fh)


class Upsample(nn.Upsample):
    def __init__(self, scale: int = 2):
        super().__init__(scale_factor=scale, mode="nearest")


MODULES: dict[str, type[nn.Module]] = {
    "Conv": Conv, "C3": C3, "SPPF": SPPF, "CBAM": CBAM, "Concat": Concat, "Upsample": Upsample,
    "Detect": Detect,
}


def build_layers(cfg: dict[str, Any], ch_in: int = 3) -> tuple[nn.Sequential, list[int]]:
    """Instantiate the layers of a config; returns them and the indices whose outputs must be kept."""
    gd, gw = cfg["depth_multiple"], cfg["width_multiple"]
    nc, anchors = cfg["nc"], cfg["anchors"]
    layers: list[nn.Module] = []
    save: list[int] = []
    channels = [ch_in]
    for i, (src, n, name, args) in enumerate(cfg["backbone"] + cfg["head"]):
        if name not in MODULES:
            raise ValueError(f"layer {i}: unknown module {name!r} (known: {', '.join(MODULES)})")
        module_cls = MODULES[name]
        n = max(round(n * gd), 1) if n > 1 else n
        args = [nc if a == "nc" else anchors if a == "anchors" else a for a in args]
        if module_cls in (Conv, C3, SPPF):
            c1, c2 = channels[src], make_divisible(args[0] * gw, 8)
            args = [c1, c2, *args[1:]]
            if module_cls is C3:
                args.insert(2, n)
                n = 1
        elif module_cls is CBAM:
            c2 = channels[src]
            args = [c2]
        elif module_cls is Concat:
            c2 = sum(channels[x] for x in src)
        elif module_cls is Detect:
            args.append([channels[x] for x in src])
            c2 = channels[-1]
        else:
            c2 = channels[src]
        module = nn.Sequential(*(module_cls(*args) for _ in range(n))) if n > 1 else module_cls(*args)
        module.i, module.f = i, src  # type: ignore[assignment]
        srcs = src if isinstance(src, list) else [src]
        save.extend(x % i for x in srcs if x != -1)
        layers.append(module)
        if i == 0:
            channels = []
        channels.append(c2)
    return nn.Sequential(*layers), sorted(set(save))


class DetectionModel(nn.Module):
    def __init__(self, cfg: str | Path | dict = "yolov5s-cbam.yaml", nc: int | None = None,
                 anchors: list[list[float]] | None = None, ch: int = 3):
        super().__init__()
        self.yaml = load_config(cfg)
        if nc is not None:
            self.yaml["nc"] = nc
        if anchors is not None:
            self.yaml["anchors"] = [[round(float(v), 2) for v in level] for level in anchors]
        self.model, self.save = build_layers(self.yaml, ch)
        self.names = [str(i) for i in range(self.yaml["nc"])]
        detect = self.detect
        s = 256
        detect.train()
        with torch.no_grad():
            outs = self.forward(torch.zeros(1, ch, s, s))
        detect.stride.copy_(torch.tensor([s / x.shape[-2] for x in outs]))
        detect.anchors /= detect.stride.view(-1, 1, 1)
        detect.initialize_biases()
        self._init_weights()

    @property
    def detect(self) -> Detect:
        return self.model[-1]  # type: ignore[return-value]

    @property
    def stride(self) -> torch.Tensor:
        return self.detect.stride

    def anchors_pixels(self) -> list[list[float]]:
        """The anchors in input pixels, one list of 2*na numbers per level (to 0.01 px, as configured)."""
        d = self.detect
        pixels = (d.anchors * d.stride.view(-1, 1, 1)).view(d.nl, -1).tolist()
        return [[round(v, 2) for v in level] for level in pixels]

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03
            elif isinstance(m, nn.SiLU | nn.ReLU):
                m.inplace = True

    def forward(self, x: torch.Tensor) -> Any:
        outputs: list[torch.Tensor | None] = []
        for m in self.model:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = m(x)
            outputs.append(x if m.i in self.save else None)
        return x

    def fuse(self) -> DetectionModel:
        for m in self.modules():
            if isinstance(m, Conv):
                m.fuse()
        return self

    def info(self, imgsz: int = 640) -> dict[str, float]:
        """Parameter count and GFLOPs (2 x multiply-accumulates) at a square input size."""
        from torch.utils.flop_counter import FlopCounterMode

        params = sum(p.numel() for p in self.parameters())
        was_training = self.training
        self.eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            self.forward(torch.zeros(1, 3, imgsz, imgsz, device=next(self.parameters()).device))
        self.train(was_training)
        return {"layers": len(self.model), "parameters": params,
                "gflops": counter.get_total_flops() / 1e9, "imgsz": imgsz}
