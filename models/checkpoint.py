"""Training checkpoints: everything needed to resume (last.pt) or to export and fine-tune (best.pt)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from app.errors import InvalidInput, NotFound
from models.yolo import DetectionModel


def build_from_checkpoint(ckpt: dict[str, Any]) -> DetectionModel:
    model = DetectionModel(ckpt["model_cfg"], nc=len(ckpt["names"]), anchors=ckpt["anchors"])
    model.names = list(ckpt["names"])
    return model


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, AttributeError, ImportError) as exc:
        raise InvalidInput(f"{path}: not a readable training checkpoint ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from exc
    if not isinstance(ckpt, dict) or "model_cfg" not in ckpt:
        raise InvalidInput(f"{path}: not a defect-inspect training checkpoint")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu", ema: bool = True
               ) -> tuple[DetectionModel, dict[str, Any]]:
    """The model of a checkpoint with its (EMA, if present) weights, in eval mode, float32."""
    ckpt = load_checkpoint(path)
    model = build_from_checkpoint(ckpt)
    state = ckpt.get("ema_state") if ema and ckpt.get("ema_state") is not None else ckpt["model_state"]
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval(), ckpt


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
