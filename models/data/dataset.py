"""``YoloDataset`` (torch) and ``create_dataloader``: labels read and validated up front, images decoded
with OpenCV, optional RAM cache of resized images, mosaic/cutmix/affine/HSV/flip augmentation.
``EpochSampler`` draws each epoch's order and every sample's augmentation from (seed, epoch, image):
a resumed run trains on exactly the batches of the run it continues, whatever the number of workers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from app.errors import UserError
from models.data import augment as A
from models.data.formats import label_path_for
from models.data.labels import read_all_labels

HYP_DEFAULTS: dict[str, Any] = {
    "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0, "contrast": 0.0,
    "degrees": 0.0, "translate": 0.0, "scale": 0.0, "shear": 0.0, "perspective": 0.0,
    "flipud": 0.0, "fliplr": 0.0, "mosaic": 0.0, "cutmix": 0.0, "cutmix_ratio": (0.3, 0.7),
}

Shapes = tuple[tuple[int, int], tuple[float, float], tuple[int, int]]


class YoloDataset(Dataset):
    """Images + YOLO labels for training/validation.

    ``__getitem__`` -> ``(img, labels, path, (orig_hw, ratio, pad))``: ``img`` uint8 [3, imgsz, imgsz] RGB;
    ``labels`` float32 [n, 6] = (0, cls, cx, cy, w, h) normalised to the returned image; ``orig_hw`` =
    (h0, w0) of the file, ``ratio`` = (rw, rh) and ``pad`` = (pad_w, pad_h) of the plain letterbox
    (``out = orig * ratio + pad``; exact for non-augmented samples).

    ``rect=True`` (validation) disables mosaic/cutmix; images are letterboxed to a centred square.
    """

    def __init__(self, image_paths: Sequence[Path | str], nc: int, imgsz: int, hyp: dict[str, Any] | None,
                 augment: bool, cache: bool = False, rect: bool = False) -> None:
        self.image_paths = [Path(p) for p in image_paths]
        if not self.image_paths:
            raise UserError("dataset holds no images")
        missing = [p for p in self.image_paths if not p.is_file()]
        if missing:
            raise UserError(f"{missing[0]}: image not found" +
                           (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        self.nc = nc
        self.imgsz = int(imgsz)
        self.hyp = {**HYP_DEFAULTS, **(hyp or {})}
        self.augment = augment
        self.rect = rect
        self.mosaic_enabled = augment and not rect and float(self.hyp["mosaic"]) > 0
        self.cutmix_enabled = augment and not rect and float(self.hyp["cutmix"]) > 0
        self.labels: list[np.ndarray] = read_all_labels(self.image_paths, nc)  # (n,5) cls cx cy w h
        self.label_files = [label_path_for(p) for p in self.image_paths]
        self.rng = np.random.default_rng(0)
        self._cache: list[tuple[np.ndarray, tuple[int, int]] | None] = [None] * len(self.image_paths)
        self._hw: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {}  # i -> (orig hw, resized hw)
        if cache:
            for i in range(len(self.image_paths)):
                self._cache[i] = self._read_resized(i)

    def __len__(self) -> int:
        return len(self.image_paths)

    def close_mosaic(self) -> None:
        """Turn mosaic and cutmix off (final epochs train on plain, affine-augmented images)."""
        self.mosaic_enabled = False
        self.cutmix_enabled = False

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    # -- loading -------------------------------------------------------------------------------
    def _read_resized(self, i: int) -> tuple[np.ndarray, tuple[int, int]]:
        path = self.image_paths[i]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise UserError(f"{path}: cannot read image")
        h0, w0 = img.shape[:2]
        r = self.imgsz / max(h0, w0)
        if r != 1:
            interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
            img = cv2.resize(img, (max(1, round(w0 * r)), max(1, round(h0 * r))), interpolation=interp)
        self._hw[i] = ((h0, w0), (img.shape[0], img.shape[1]))
        return img, (h0, w0)

    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int]]:
        """BGR image resized so its long side is imgsz, and its original (h0, w0)."""
        cached = self._cache[i]
        return cached if cached is not None else self._read_resized(i)

    def _pixel_boxes(self, i: int, w: int, h: int, padw: float = 0.0, padh: float = 0.0) -> np.ndarray:
        """Labels of image i as (n,5) [x1 y1 x2 y2 cls] in pixels of a w x h placement."""
        lab = self.labels[i]
        out = np.empty((len(lab), 5), np.float32)
        out[:, 0] = w * (lab[:, 1] - lab[:, 3] / 2) + padw
        out[:, 1] = h * (lab[:, 2] - lab[:, 4] / 2) + padh
        out[:, 2] = w * (lab[:, 1] + lab[:, 3] / 2) + padw
        out[:, 3] = h * (lab[:, 2] + lab[:, 4] / 2) + padh
        out[:, 4] = lab[:, 0]
        return out

    def _letterboxed(self, i: int) -> tuple[np.ndarray, np.ndarray, Shapes]:
        img, (h0, w0) = self.load_image(i)
        h, w = img.shape[:2]
        out, _, (padw, padh) = A.letterbox(img, self.imgsz)
        boxes = self._pixel_boxes(i, w, h, padw, padh)
        shapes: Shapes = ((h0, w0), (w / w0, h / h0), (padw, padh))
        return out, boxes, shapes

    def _mosaic(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        idx = [i, *self.rng.integers(0, len(self), 3).tolist()]
        imgs, boxes = [], []
        for j in idx:
            img, _ = self.load_image(j)
            imgs.append(img)
            boxes.append(self._pixel_boxes(j, img.shape[1], img.shape[0]))
        h = self.hyp
        return A.mosaic4(imgs, boxes, self.imgsz, degrees=h["degrees"], translate=h["translate"],
                         scale=h["scale"], shear=h["shear"], perspective=h["perspective"], rng=self.rng)

    def _sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """One augmented sample before photometric/flip augmentation: (img, boxes [x1 y1 x2 y2 cls])."""
        h = self.hyp
        if self.mosaic_enabled and self.rng.random() < float(h["mosaic"]):
            return self._mosaic(i)
        img, boxes, _ = self._letterboxed(i)
        img, boxes, _ = A.random_affine(img, boxes, degrees=h["degrees"], translate=h["translate"],
                                        scale=h["scale"], shear=h["shear"], perspective=h["perspective"],
                                        rng=self.rng)
        return img, boxes

    def __getitem__(self, item: int | tuple[int, tuple[int, ...]]
                    ) -> tuple[torch.Tensor, torch.Tensor, str, Shapes]:
        """Sample ``item``: an index (augmented from the dataset's running generator), or ``(index, key)``
        from :class:`EpochSampler` (augmented from a generator seeded with ``key`` alone)."""
        if isinstance(item, tuple):
            i, key = item
            self.rng = np.random.default_rng(key)
        else:
            i = item
        h = self.hyp
        if not self.augment:
            img, boxes, shapes = self._letterboxed(i)
        else:
            img, boxes = self._sample(i)
            if i not in self._hw:  # normally recorded while loading image i above
                self.load_image(i)
            (h0, w0), (rh, rw) = self._hw[i]
            shapes = ((h0, w0), (rw / w0, rh / h0), ((self.imgsz - rw) // 2, (self.imgsz - rh) // 2))
            if self.cutmix_enabled and self.rng.random() < float(h["cutmix"]):
                j = int(self.rng.integers(0, len(self)))
                img_b, boxes_b = self._sample(j)
                img, boxes, _ = A.cutmix(img, boxes, img_b, boxes_b,
                                         ratio_range=tuple(h["cutmix_ratio"]), rng=self.rng)
            img = A.augment_hsv(img, h["hsv_h"], h["hsv_s"], h["hsv_v"], h["contrast"], rng=self.rng)
            if self.rng.random() < float(h["flipud"]):
                img, boxes = A.flip_ud(img, boxes)
            if self.rng.random() < float(h["fliplr"]):
                img, boxes = A.flip_lr(img, boxes)
        ih, iw = img.shape[:2]
        labels = np.zeros((len(boxes), 6), np.float32)
        if len(boxes):
            b = boxes[:, :4].copy()
            b[:, [0, 2]] = b[:, [0, 2]].clip(0, iw)
            b[:, [1, 3]] = b[:, [1, 3]].clip(0, ih)
            labels[:, 1] = boxes[:, 4]
            labels[:, 2] = (b[:, 0] + b[:, 2]) / (2 * iw)
            labels[:, 3] = (b[:, 1] + b[:, 3]) / (2 * ih)
            labels[:, 4] = (b[:, 2] - b[:, 0]) / iw
            labels[:, 5] = (b[:, 3] - b[:, 1]) / ih
            labels = labels[(labels[:, 4] > 0) & (labels[:, 5] > 0)]
        chw = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
        return torch.from_numpy(chw), torch.from_numpy(labels), str(self.image_paths[i]), shapes

    @staticmethod
    def collate_fn(batch: Sequence[tuple[torch.Tensor, torch.Tensor, str, Shapes]]
                   ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple[Shapes, ...]]:
        """Stack images ([B,3,H,W] uint8) and concatenate labels ([N,6]) with the batch index in column 0."""
        imgs, labels, paths, shapes = zip(*batch, strict=True)
        for k, lab in enumerate(labels):
            lab[:, 0] = k
        return torch.stack(imgs, 0), torch.cat(labels, 0), paths, shapes


class EpochSampler(Sampler[tuple[int, tuple[int, int, int]]]):
    """Indices of one epoch, each with its augmentation key ``(seed, epoch, index)``: the order is a
    permutation drawn from ``(seed, epoch)`` (or the dataset's order without ``shuffle``). Nothing
    carries over from the epoch before, so epoch ``e`` of a resumed run is epoch ``e`` of the run it
    continues; the trainer calls :meth:`set_epoch` before each epoch."""

    def __init__(self, size: int, seed: int, shuffle: bool) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, int(seed) % 2**32, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self):  # noqa: ANN204 - an iterator of (index, key)
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.size) if self.shuffle
                 else np.arange(self.size))
        for index in order.tolist():
            yield index, (self.seed, self.epoch, index)


def _worker_init(worker_id: int) -> None:
    """Seed each worker's numpy generator from torch's per-worker seed (itself from the loader's
    seeded generator), and keep OpenCV single-threaded inside workers."""
    cv2.setNumThreads(0)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset.seed(int(torch.initial_seed() % 2**32))  # type: ignore[union-attr]


def create_dataloader(image_paths: Sequence[Path | str], nc: int, imgsz: int, batch_size: int,
                      hyp: dict[str, Any] | None, augment: bool, workers: int, shuffle: bool,
                      cache: bool = False, seed: int = 0) -> tuple[DataLoader, YoloDataset]:
    """A reproducible DataLoader over a :class:`YoloDataset` (an :class:`EpochSampler`, seeded worker
    generators, persistent workers when ``workers > 0``, pinned memory when CUDA is available)."""
    dataset = YoloDataset(image_paths, nc, imgsz, hyp, augment=augment, cache=cache)
    dataset.seed(seed)
    workers = max(0, min(int(workers), os.cpu_count() or 1, batch_size if batch_size > 0 else 1))
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed, shuffle),
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
        collate_fn=YoloDataset.collate_fn,
        worker_init_fn=_worker_init,
        generator=generator,
        persistent_workers=workers > 0,
    )
    return loader, dataset
