"""Training augmentations in numpy/OpenCV (no per-pixel Python loops).

Box convention: ``boxes`` are ``(n, 4 + k)`` float arrays whose first four columns are ``x1 y1 x2 y2`` in
pixels of the image they belong to; any further columns (e.g. the class id) are carried along unchanged.
Every random function takes ``rng`` (``np.random.Generator``) so results are reproducible.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from app.inference.preprocess import PAD_VALUE
from app.inference.preprocess import letterbox as _service_letterbox

FILL = (PAD_VALUE, PAD_VALUE, PAD_VALUE)


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def letterbox(
    img: np.ndarray, new_shape: int | tuple[int, int], color: int = PAD_VALUE
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize keeping aspect and pad (centred) to ``new_shape`` (int or (h, w)).

    Returns ``(img, (ratio_w, ratio_h), (pad_w, pad_h))`` with ``out = orig * ratio + pad``. This is the
    service's own letterbox (``app.inference.preprocess``), so training-time validation sees exactly the
    pixels that production inference sees.
    """
    shape = (new_shape, new_shape) if isinstance(new_shape, int) else (int(new_shape[0]), int(new_shape[1]))
    out, lb = _service_letterbox(img, shape, pad_value=color)
    return out, (lb.scale_x, lb.scale_y), (lb.pad_x, lb.pad_y)


def augment_hsv(
    img: np.ndarray,
    h: float,
    s: float,
    v: float,
    contrast: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Random hue shift (+-h*180 OpenCV hue units), saturation gain (1+-s), brightness (+-v of full
    scale) and contrast (gain 1+-contrast around mid-grey) on a BGR uint8 image, via lookup tables.
    Returns a new array of the same shape and dtype."""
    rng = _rng(rng)
    dh = rng.uniform(-h, h) * 180.0 if h else 0.0
    gs = 1.0 + rng.uniform(-s, s) if s else 1.0
    bv = rng.uniform(-v, v) * 255.0 if v else 0.0
    gc = 1.0 + rng.uniform(-contrast, contrast) if contrast else 1.0
    x = np.arange(256, dtype=np.float32)
    lut_v = np.clip((x - 127.5) * gc + 127.5 + bv, 0, 255).astype(np.uint8)
    if round(dh) == 0 and gs == 1.0:
        # brightness/contrast only: a per-channel LUT on BGR, no colour-space round trip
        return cv2.LUT(img, lut_v)
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    lut_h = np.mod(x + round(dh), 180).astype(np.uint8)
    lut_s = np.clip(x * gs, 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def flip_lr(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right."""
    w = img.shape[1]
    out = boxes.copy()
    out[:, 0] = w - boxes[:, 2]
    out[:, 2] = w - boxes[:, 0]
    return cv2.flip(img, 1), out


def flip_ud(img: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror top-bottom."""
    h = img.shape[0]
    out = boxes.copy()
    out[:, 1] = h - boxes[:, 3]
    out[:, 3] = h - boxes[:, 1]
    return cv2.flip(img, 0), out


def box_candidates(
    box1: np.ndarray,
    box2: np.ndarray,
    wh_thr: float = 2.0,
    ar_thr: float = 20.0,
    area_thr: float = 0.1,
    eps: float = 1e-16,
) -> np.ndarray:
    """Keep mask for boxes after a transform (``box1`` before, ``box2`` after, both (n,4) xyxy): at least
    ``wh_thr`` px wide and high, area above ``area_thr`` of the (scaled) original, aspect below ``ar_thr``."""
    w1, h1 = box1[:, 2] - box1[:, 0], box1[:, 3] - box1[:, 1]
    w2, h2 = box2[:, 2] - box2[:, 0], box2[:, 3] - box2[:, 1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 >= wh_thr) & (h2 >= wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def affine_matrix(
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    degrees: float,
    translate: float,
    scale: float,
    shear: float,
    perspective: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """3x3 matrix: centre the input, perspective, rotate+scale, shear, translate into the output.
    Returns (M, scale factor)."""
    h_in, w_in = in_hw
    h_out, w_out = out_hw
    C = np.eye(3)
    C[0, 2], C[1, 2] = -w_in / 2, -h_in / 2
    P = np.eye(3)
    if perspective:
        P[2, 0], P[2, 1] = rng.uniform(-perspective, perspective, 2)
    a = rng.uniform(-degrees, degrees) if degrees else 0.0
    s = rng.uniform(1 - scale, 1 + scale) if scale else 1.0
    R = np.eye(3)
    R[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=a, scale=s)
    S = np.eye(3)
    if shear:
        S[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
        S[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    T = np.eye(3)
    tx = rng.uniform(0.5 - translate, 0.5 + translate) if translate else 0.5
    ty = rng.uniform(0.5 - translate, 0.5 + translate) if translate else 0.5
    T[0, 2], T[1, 2] = tx * w_out, ty * h_out
    return T @ S @ R @ P @ C, s


def _clipped_quad_bounds(quads: np.ndarray, w: float, h: float) -> np.ndarray:
    """Axis-aligned bounds of convex quads (n,4,2; corners in cyclic order) clipped to [0,w]x[0,h].

    Exact for rotated boxes cut by the image edge: the bounds of (quad corners inside the image) +
    (quad edge / image border crossings) + (image corners inside the quad). Empty intersections give
    zero-size boxes."""
    n = len(quads)
    p0 = quads
    p1 = np.roll(quads, -1, axis=1)
    d = p1 - p0
    pts = [quads]
    ok = [(quads[..., 0] >= 0) & (quads[..., 0] <= w) & (quads[..., 1] >= 0) & (quads[..., 1] <= h)]
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis, limit in ((0, 0.0), (0, w), (1, 0.0), (1, h)):
            t = (limit - p0[..., axis]) / d[..., axis]
            q = p0 + t[..., None] * d
            other, other_max = (1, h) if axis == 0 else (0, w)
            valid = (t >= 0) & (t <= 1) & (q[..., other] >= 0) & (q[..., other] <= other_max)
            q[..., axis] = limit
            pts.append(np.where(valid[..., None], q, 0.0))
            ok.append(valid)
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    rel = corners[None, None, :, :] - p0[:, :, None, :]  # (n, 4 edges, 4 corners, 2)
    cross = d[:, :, None, 0] * rel[..., 1] - d[:, :, None, 1] * rel[..., 0]
    inside = (cross >= -1e-9).all(1) | (cross <= 1e-9).all(1)  # (n, 4 corners)
    pts.append(np.broadcast_to(corners, (n, 4, 2)))
    ok.append(inside)
    allp = np.concatenate(pts, 1)
    allok = np.concatenate(ok, 1)
    big = np.float64(np.inf)
    x = allp[..., 0]
    y = allp[..., 1]
    out = np.stack(
        [
            np.where(allok, x, big).min(1),
            np.where(allok, y, big).min(1),
            np.where(allok, x, -big).max(1),
            np.where(allok, y, -big).max(1),
        ],
        1,
    )
    empty = ~allok.any(1)
    out[empty] = 0.0
    return out


def transform_boxes(boxes_xyxy: np.ndarray, M: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Map boxes through M (3x3) by their 4 corners and return the bounds of the transformed box clipped
    to the output (exact for boxes partly pushed out of view by a rotation)."""
    n = len(boxes_xyxy)
    if n == 0:
        return np.zeros((0, 4), np.float32)
    xy = np.ones((n * 4, 3))
    xy[:, :2] = boxes_xyxy[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(n * 4, 2)  # corners in cyclic order
    xy = xy @ M.T
    xy = xy[:, :2] / xy[:, 2:3] if M[2, 0] or M[2, 1] else xy[:, :2]
    quads = xy.reshape(n, 4, 2)
    out = np.concatenate([quads.min(1), quads.max(1)], 1)
    h, w = out_hw
    cut = (out[:, 0] < 0) | (out[:, 1] < 0) | (out[:, 2] > w) | (out[:, 3] > h)
    if cut.any():  # only boxes crossing the border need the exact clipped bounds
        out[cut] = _clipped_quad_bounds(quads[cut], float(w), float(h))
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, out_hw[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, out_hw[0])
    return out.astype(np.float32)


def random_affine(
    img: np.ndarray,
    boxes_xyxy: np.ndarray,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random rotation/scale/shear/translation/perspective (YOLOv5 style), fill 114.

    ``border`` = (rows, cols) added on each side of the output (negative crops: a 2s mosaic canvas with
    ``border=(-s//2, -s//2)`` comes back s x s). Returns ``(img, boxes, kept_idx)``: boxes (extra columns
    carried) that survive :func:`box_candidates`, and their indices into the input.
    """
    rng = _rng(rng)
    out_h = img.shape[0] + 2 * border[0]
    out_w = img.shape[1] + 2 * border[1]
    M, s = affine_matrix(img.shape[:2], (out_h, out_w), degrees, translate, scale, shear, perspective, rng)
    if border != (0, 0) or not np.allclose(M, np.eye(3)):
        if perspective:
            img = cv2.warpPerspective(img, M, dsize=(out_w, out_h), borderValue=FILL)
        else:
            img = cv2.warpAffine(img, M[:2], dsize=(out_w, out_h), borderValue=FILL)
    boxes_xyxy = np.asarray(boxes_xyxy, np.float32).reshape(len(boxes_xyxy), -1)
    new = transform_boxes(boxes_xyxy[:, :4], M, (out_h, out_w))
    keep = box_candidates(boxes_xyxy[:, :4] * s, new) if len(new) else np.zeros(0, bool)
    kept_idx = np.flatnonzero(keep)
    out = np.concatenate([new[kept_idx], boxes_xyxy[kept_idx, 4:]], 1).astype(np.float32)
    return img, out, kept_idx


def mosaic4(
    images: list[np.ndarray],
    boxes: list[np.ndarray],
    imgsz: int,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    perspective: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Tile 4 images around a random centre of a 2*imgsz canvas, then :func:`random_affine` back to
    imgsz x imgsz. ``boxes[k]`` are in pixels of ``images[k]`` (usually resized so the long side is imgsz).
    Returns ``(img, boxes)``."""
    if len(images) != 4 or len(boxes) != 4:
        raise ValueError("mosaic4 needs exactly 4 images and 4 box arrays")
    rng = _rng(rng)
    s = imgsz
    canvas = np.full((2 * s, 2 * s, 3), PAD_VALUE, np.uint8)
    xc, yc = (int(v) for v in rng.uniform(s / 2, 3 * s / 2, 2))
    placed: list[np.ndarray] = []
    for k, (img, bx) in enumerate(zip(images, boxes, strict=True)):
        h, w = img.shape[:2]
        if k == 0:  # top-left: its bottom-right corner at the centre
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif k == 1:  # top-right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif k == 2:  # bottom-left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
            x1b, y1b = w - (x2a - x1a), 0
        else:  # bottom-right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
            x1b, y1b = 0, 0
        tw, th = x2a - x1a, y2a - y1a
        if tw <= 0 or th <= 0:
            continue
        canvas[y1a:y2a, x1a:x2a] = img[y1b : y1b + th, x1b : x1b + tw]
        bx = np.asarray(bx, np.float32).reshape(len(bx), -1)
        if len(bx):
            b = bx.copy()
            b[:, [0, 2]] = (b[:, [0, 2]] + (x1a - x1b)).clip(x1a, x2a)
            b[:, [1, 3]] = (b[:, [1, 3]] + (y1a - y1b)).clip(y1a, y2a)
            b = b[(b[:, 2] - b[:, 0] > 0) & (b[:, 3] - b[:, 1] > 0)]
            placed.append(b)
    ncol = max((np.asarray(b).reshape(len(b), -1).shape[1] for b in boxes), default=4)
    all_boxes = np.concatenate(placed, 0) if placed else np.zeros((0, max(ncol, 4)), np.float32)
    img, out, _ = random_affine(
        canvas, all_boxes, degrees, translate, scale, shear, perspective, border=(-s // 2, -s // 2), rng=rng
    )
    return img, out


def _inside_fraction(boxes: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = rect
    iw = (np.minimum(boxes[:, 2], x2) - np.maximum(boxes[:, 0], x1)).clip(0)
    ih = (np.minimum(boxes[:, 3], y2) - np.maximum(boxes[:, 1], y1)).clip(0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return iw * ih / np.maximum(area, 1e-9)


def _box_array(boxes: np.ndarray) -> np.ndarray:
    """(n, 4+k) float32; an empty input becomes (0, 5) (xyxy + class)."""
    arr = np.asarray(boxes, np.float32)
    return (
        arr.reshape(0, max(arr.shape[-1] if arr.ndim == 2 else 5, 5))
        if arr.size == 0
        else arr.reshape(len(arr), -1)
    )


def cutmix(
    img_a: np.ndarray,
    boxes_a: np.ndarray,
    img_b: np.ndarray,
    boxes_b: np.ndarray,
    ratio_range: tuple[float, float] = (0.3, 0.7),
    keep_thr: float = 0.6,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Paste a random rectangle of ``img_b`` (area fraction drawn from ``ratio_range``, same position)
    into ``img_a``. Keeps boxes of b with at least ``keep_thr`` of their area inside the patch (clipped to
    it) and boxes of a with at least ``keep_thr`` of their area outside it.
    Returns ``(img, boxes [kept a; kept b], patch xyxy)``. Both images must have the same shape."""
    if img_a.shape != img_b.shape:
        raise ValueError(f"cutmix needs images of the same shape, got {img_a.shape} and {img_b.shape}")
    rng = _rng(rng)
    h, w = img_a.shape[:2]
    r = rng.uniform(*ratio_range)
    cw, ch = max(1, round(w * math.sqrt(r))), max(1, round(h * math.sqrt(r)))
    x1 = int(rng.integers(0, w - cw + 1))
    y1 = int(rng.integers(0, h - ch + 1))
    patch = (x1, y1, x1 + cw, y1 + ch)
    out = img_a.copy()
    out[y1 : y1 + ch, x1 : x1 + cw] = img_b[y1 : y1 + ch, x1 : x1 + cw]
    ba, bb = _box_array(boxes_a), _box_array(boxes_b)
    keep_a = ba[_inside_fraction(ba, patch) <= 1.0 - keep_thr] if len(ba) else ba
    keep_b = bb[_inside_fraction(bb, patch) >= keep_thr].copy() if len(bb) else bb
    if len(keep_b):
        keep_b[:, [0, 2]] = keep_b[:, [0, 2]].clip(patch[0], patch[2])
        keep_b[:, [1, 3]] = keep_b[:, [1, 3]].clip(patch[1], patch[3])
    if ba.shape[1] != bb.shape[1]:
        if len(ba) and len(bb):
            raise ValueError("cutmix: box arrays of a and b must have the same number of columns")
        ncol = max(ba.shape[1], bb.shape[1])
        keep_a = keep_a.reshape(-1, ncol) if len(keep_a) == 0 else keep_a
        keep_b = keep_b.reshape(-1, ncol) if len(keep_b) == 0 else keep_b
    return out, np.concatenate([keep_a, keep_b], 0).astype(np.float32), patch
