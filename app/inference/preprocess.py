"""Letterbox and batch frames for the detector: keep aspect, pad 114 centred, BGR->RGB, 0-1, NCHW."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How one original image maps into the model input: ``input = original * scale + pad``."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    width: int  # original image size
    height: int

    def to_original(self, xyxy: np.ndarray) -> np.ndarray:
        """Map (N, 4) boxes from input pixels back to original pixels, clipped to the image."""
        out = np.empty_like(xyxy, dtype=np.float32)
        out[:, [0, 2]] = (xyxy[:, [0, 2]] - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (xyxy[:, [1, 3]] - self.pad_y) / self.scale_y
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, self.width)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, self.height)
        return out


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Accept grey (H, W), (H, W, 1), BGR and BGRA uint8 frames; return 3-channel BGR."""
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"unsupported image shape {image.shape}")


def resize(image: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """Resize for the model: bilinear when enlarging; when shrinking, antialiased like INTER_AREA.

    INTER_AREA at a non-integer factor (640x480 -> 256x192 is 2.5x) takes OpenCV's generic path, about
    1.0-1.3 ms per frame here: 8-10 % of an INT8 detect. So shrink by the largest whole factor k with
    INTER_AREA first (its fast block-averaging path), then bilinear for the rest, which is then a factor
    between 1/2 and 1 where bilinear does not alias. Same picture within about one grey level on
    average, at a fifth of the cost (docs/benchmarks.md, "Letterbox cost")."""
    h, w = image.shape[:2]
    if new_w >= w and new_h >= h:
        return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    k = int(min(w / new_w, h / new_h))
    if k >= 2:
        image = cv2.resize(image, (w // k, h // k), interpolation=cv2.INTER_AREA)
        if image.shape[1] == new_w and image.shape[0] == new_h:
            return image
        return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)


def fitted_size(h: int, w: int, size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of an h x w image scaled, aspect kept, to fit inside ``size`` = (h, w)."""
    out_h, out_w = size
    ratio = min(out_h / h, out_w / w)
    return max(1, min(out_h, round(h * ratio))), max(1, min(out_w, round(w * ratio)))


def letterbox(image: np.ndarray, size: tuple[int, int], pad_value: int = PAD_VALUE
              ) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` (BGR) into ``size`` = (h, w) keeping its aspect, padding the rest centred."""
    image = as_bgr(image)
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise ValueError("empty image")
    out_h, out_w = size
    new_h, new_w = fitted_size(h, w, size)
    if (new_w, new_h) != (w, h):
        image = resize(image, new_w, new_h)
    pad_x = (out_w - new_w) // 2
    pad_y = (out_h - new_h) // 2
    canvas = np.full((out_h, out_w, 3), pad_value, dtype=np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = image
    return canvas, Letterbox(new_w / w, new_h / h, pad_x, pad_y, w, h)


def make_batch(images: Sequence[np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, list[Letterbox]]:
    """Letterbox every frame and stack them into one float32 [N, 3, H, W] RGB 0-1 tensor."""
    h, w = size
    batch = np.empty((len(images), 3, h, w), dtype=np.float32)
    params = []
    for i, image in enumerate(images):
        boxed, lb = letterbox(image, size)
        # BGR -> RGB planes (cv2.split is contiguous per plane: twice as fast as a strided numpy view)
        blue, green, red = cv2.split(boxed)
        slot = batch[i]
        slot[0], slot[1], slot[2] = red, green, blue
        slot *= 1.0 / 255.0
        params.append(lb)
    return batch, params
