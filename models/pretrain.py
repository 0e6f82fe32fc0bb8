"""Self-supervised pretraining of the detector's backbone on unlabeled images (SimCLR).

Each image is seen twice per step, as two random views made with the training augmentations (random
affine with a strong scale range as the crop, flips, HSV and contrast jitter). The backbone (the
config's ``backbone`` layers, the same modules the detector uses) and a small projection head map both
views to vectors, and the NT-Xent loss pulls the two views of an image together and pushes the other
images of the batch away. Only the backbone is kept: ``defect-inspect train --backbone FILE`` starts a
detector from it (neck and head start fresh).

The file written is a dict: ``kind`` (``defect-inspect-backbone``), ``model_cfg``, ``layers`` (how many
leading layers it holds), ``backbone_state`` (tensors named as in the detector, ``model.N....``),
``imgsz``, ``images``, ``epochs`` and the per-epoch ``loss``."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from app.errors import InvalidInput, NotFound
from models.data.augment import FILL, affine_matrix, augment_hsv, letterbox
from models.data.formats import list_images, read_image_list
from models.device import autocast, autocast_dtype, grad_scaler, memory_format, pick_device
from models.yolo import DetectionModel, load_config

log = logging.getLogger("models.pretrain")
KIND = "defect-inspect-backbone"


@dataclass(frozen=True)
class PretrainOptions:
    images: tuple[str, ...]  # folders of unlabeled images or .txt image lists
    out: str = "runs/pretrain/backbone.pt"
    cfg: str = "yolov5s-cbam.yaml"
    imgsz: int = 256
    epochs: int = 100
    batch: int = 32
    lr: float = 1e-3  # AdamW, cosine to 1 % of it
    weight_decay: float = 1e-4
    temperature: float = 0.2
    projection_dim: int = 128
    device: str = "cpu"
    workers: int = 2
    seed: int = 0
    max_images: int | None = None
    precision: str = "auto"  # auto | fp32 | bf16 | fp16: the forward pass (models.device.autocast_dtype)


# the views: the training augmentations, with a crop-like scale range and stronger colour jitter
VIEW_AUGMENT = {"degrees": 30.0, "translate": 0.2, "scale": 0.5, "hsv_h": 0.02, "hsv_s": 0.5, "hsv_v": 0.3,
                "contrast": 0.3, "fliplr": 0.5, "flipud": 0.5}


class TwoViews(Dataset):
    """Two independently augmented, letterboxed views of each image: ([3, s, s], [3, s, s]) uint8 RGB."""

    def __init__(self, paths: Sequence[Path], imgsz: int, seed: int = 0) -> None:
        self.paths = list(paths)
        self.imgsz = imgsz
        self.seed = seed
        self.draws = 0

    def __len__(self) -> int:
        return len(self.paths)

    def _view(self, img: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        a = VIEW_AUGMENT
        h, w = img.shape[:2]
        matrix, _ = affine_matrix((h, w), (h, w), a["degrees"], a["translate"], a["scale"], 0.0, 0.0, rng)
        view = cv2.warpAffine(img, matrix[:2], dsize=(w, h), borderValue=FILL)
        if rng.random() < a["fliplr"]:
            view = view[:, ::-1]
        if rng.random() < a["flipud"]:
            view = view[::-1]
        view = np.ascontiguousarray(view)
        view = augment_hsv(view, a["hsv_h"], a["hsv_s"], a["hsv_v"], a["contrast"], rng=rng)
        return torch.from_numpy(np.ascontiguousarray(view[:, :, ::-1].transpose(2, 0, 1)))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = cv2.imread(str(self.paths[i]))
        if img is None:
            raise InvalidInput(f"{self.paths[i]}: not a readable image")
        img, _, _ = letterbox(img, self.imgsz)
        self.draws += 1
        rng = np.random.default_rng((self.seed, i, self.draws, torch.initial_seed() % 2**32))
        return self._view(img, rng), self._view(img, rng)


def backbone_layers(model_cfg: dict[str, Any]) -> int:
    return len(model_cfg["backbone"])


class ContrastiveEncoder(nn.Module):
    """The detector's backbone, global average pooling and a two-layer projection head."""

    def __init__(self, model_cfg: dict[str, Any], projection_dim: int = 128) -> None:
        super().__init__()
        detector = DetectionModel(model_cfg, nc=1)
        n = backbone_layers(detector.yaml)
        if any(m.f != -1 for m in detector.model[:n]):
            raise InvalidInput("the config's backbone is not a plain chain of layers (every 'from' -1)")
        self.backbone = nn.Sequential(*detector.model[:n])
        self.model_cfg = detector.yaml
        with torch.no_grad():
            channels = self.backbone(torch.zeros(1, 3, 64, 64)).shape[1]
        self.projection = nn.Sequential(nn.Linear(channels, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                        nn.Linear(512, projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x).mean(dim=(2, 3))
        return self.projection(features)

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The backbone's tensors, named as in :class:`DetectionModel` (``model.N....``)."""
        return {f"model.{k}": v.detach().cpu().clone() for k, v in self.backbone.state_dict().items()}


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy over the 2N views of a batch: each view's positive
    is the other view of its image, the 2N - 2 other views are its negatives."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def unlabeled_images(sources: Sequence[str], max_images: int | None = None, seed: int = 0) -> list[Path]:
    """Every image under the folders (recursive) and in the ``.txt`` image lists (one path a line,
    relative to the list's folder, as a data set's ``train.txt``); a fixed random ``max_images`` of
    them when given."""
    paths: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            paths.extend(list_images(path))
        elif path.is_file() and path.suffix.lower() == ".txt":
            paths.extend(read_image_list(path, path.parent))
        else:
            raise NotFound(f"{source}: neither an image folder nor a .txt image list")
    if len(paths) < 2:
        raise InvalidInput(f"{', '.join(sources)}: need at least 2 images for contrastive pretraining, "
                           f"found {len(paths)}")
    if max_images is not None and len(paths) > max_images:
        rng = np.random.default_rng(seed)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), max_images, replace=False))]
    return paths


def pretrain(opts: PretrainOptions) -> Path:
    """Pretrain the backbone on the images and write it to ``opts.out``; returns that path."""
    torch.manual_seed(opts.seed)
    paths = unlabeled_images(opts.images, opts.max_images, opts.seed)
    device = pick_device(opts.device)
    amp_dtype = autocast_dtype(device, opts.precision)
    order = memory_format(device)
    encoder = ContrastiveEncoder(load_config(opts.cfg), opts.projection_dim).to(device, memory_format=order)
    batch = min(opts.batch, len(paths))
    loader = DataLoader(TwoViews(paths, opts.imgsz, opts.seed), batch_size=batch, shuffle=True,
                        drop_last=True, num_workers=opts.workers, persistent_workers=opts.workers > 0)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    steps = max(len(loader) * opts.epochs, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.01 + 0.99 * (1 + math.cos(math.pi * min(s, steps) / steps)) / 2)
    scaler = grad_scaler(amp_dtype)
    log.info("pretraining %d backbone layers of %s on %d unlabeled images: %d epochs of %d steps "
             "(batch %d, %d px, forward pass in %s)", backbone_layers(encoder.model_cfg), opts.cfg,
             len(paths), opts.epochs, len(loader), batch, opts.imgsz, amp_dtype or torch.float32)
    losses: list[float] = []
    for epoch in range(opts.epochs):
        started, total = time.perf_counter(), 0.0
        encoder.train()
        for view1, view2 in loader:
            x = torch.cat([view1, view2]).to(device, memory_format=order).float() / 255
            with autocast(device, amp_dtype):
                z = encoder(x)
            loss = nt_xent(z[:batch].float(), z[batch:].float(), opts.temperature)  # the loss in float32
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += loss.item()
        losses.append(total / max(len(loader), 1))
        log.info("pretrain epoch %d/%d  NT-Xent %.4f  %.1f s", epoch + 1, opts.epochs, losses[-1],
                 time.perf_counter() - started)
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"kind": KIND, "model_cfg": encoder.model_cfg, "layers": backbone_layers(encoder.model_cfg),
               "backbone_state": encoder.backbone_state(), "imgsz": opts.imgsz, "images": len(paths),
               "epochs": opts.epochs, "loss": losses, "options": asdict(opts)}
    tmp = out.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return out


def load_backbone(model: DetectionModel, path: str | Path) -> int:
    """Copy a pretrained backbone into ``model``; the number of tensors copied. The backbone must come
    from the same architecture (the same backbone layers with the same widths)."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: backbone file not found")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise InvalidInput(f"{path}: not a backbone written by `defect-inspect pretrain`")
    own = model.state_dict()
    state = payload["backbone_state"]
    wrong = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise InvalidInput(f"{path}: backbone does not fit the model ({len(wrong)} tensors differ, e.g. "
                           f"{wrong[0]}): pretrain with the same --cfg")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                          strict=False)
    log.info("backbone from %s: %d tensors of %d layers (pretrained on %d images, %d epochs)", path,
             len(state), payload["layers"], payload["images"], payload["epochs"])
    return len(state)
