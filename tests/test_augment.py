"""models.data.augment: boxes stay on their objects through flips, affines, mosaic and cutmix."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from models.data import augment as A

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
BG = 60


def scene(h: int, w: int, boxes: list[tuple[int, int, int, int]], first_colour: int = 0
          ) -> tuple[np.ndarray, np.ndarray]:
    """Grey canvas with filled rectangles; returns (img, boxes (n,5) = x1 y1 x2 y2 colour index)."""
    img = np.full((h, w, 3), BG, np.uint8)
    out = []
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        c = first_colour + k
        img[y1:y2, x1:x2] = COLOURS[c]
        out.append((x1, y1, x2, y2, c))
    return img, np.array(out, np.float32).reshape(-1, 5)


def mask(img: np.ndarray, c: int) -> np.ndarray:
    return np.abs(img.astype(np.int16) - np.array(COLOURS[int(c)], np.int16)).max(2) < 40


def mask_bbox(m: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(m)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def inside(m: np.ndarray, box: np.ndarray, grow: int = 0) -> tuple[int, int]:
    """(mask pixels inside box, box area) with the box grown by ``grow`` px."""
    x1, y1 = max(int(math.floor(box[0])) - grow, 0), max(int(math.floor(box[1])) - grow, 0)
    x2, y2 = int(math.ceil(box[2])) + grow, int(math.ceil(box[3])) + grow
    return int(m[y1:y2, x1:x2].sum()), max((x2 - x1) * (y2 - y1), 1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


BOXES = [(10, 20, 50, 60), (70, 15, 120, 40), (30, 90, 90, 140), (100, 100, 140, 150)]


@pytest.mark.parametrize("flip", [A.flip_lr, A.flip_ud])
def test_flips_move_boxes_with_objects(flip) -> None:
    img, boxes = scene(160, 150, BOXES)
    out, nb = flip(img, boxes)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(nb[:, 4], boxes[:, 4])
    for b in nb:
        np.testing.assert_allclose(mask_bbox(mask(out, b[4])), b[:4], atol=0)
    back, bb = flip(out, nb)
    np.testing.assert_array_equal(back, img)
    np.testing.assert_allclose(bb, boxes)


@pytest.mark.parametrize("seed", range(8))
def test_affine_without_rotation_matches_mask(seed: int) -> None:
    img, boxes = scene(160, 150, BOXES)
    rng = np.random.default_rng(seed)
    out, nb, kept = A.random_affine(img, boxes, degrees=0, translate=0.2, scale=0.4, rng=rng)
    assert out.shape == img.shape
    assert len(kept) >= 1
    np.testing.assert_array_equal(nb[:, 4], boxes[kept, 4])
    for b in nb:
        np.testing.assert_allclose(mask_bbox(mask(out, b[4])), b[:4], atol=2.0)


@pytest.mark.parametrize("seed", range(8))
def test_affine_with_rotation_boxes_enclose_objects(seed: int) -> None:
    img, boxes = scene(160, 150, BOXES)
    out, nb, kept = A.random_affine(img, boxes, degrees=30, scale=0.1, shear=2,
                                    rng=np.random.default_rng(seed))
    assert len(kept) == len(boxes)  # no translation: every object stays in view
    for b in nb:
        m = mask(out, b[4])
        covered, area = inside(m, b[:4], grow=1)
        assert covered >= 0.98 * m.sum()  # the box holds its object
        assert covered >= 0.4 * area  # ... and is mostly that object (enclosing box of a <=30 deg turn)


def test_affine_drops_boxes_pushed_out_and_keeps_indices() -> None:
    img, boxes = scene(100, 100, [(0, 0, 20, 20), (40, 40, 80, 80)])
    # scale 1, translate the centre to x=0.4*100: the left object leaves the image entirely
    M_rng = np.random.default_rng(0)
    out, nb, kept = A.random_affine(img, boxes, translate=0.1, rng=M_rng)
    assert kept.dtype.kind == "i" and set(kept.tolist()) <= {0, 1}
    # a perspective warp still returns boxes around objects
    out, nb, kept = A.random_affine(img, boxes, perspective=0.0005, rng=np.random.default_rng(1))
    for b in nb:
        m = mask(out, b[4])
        assert inside(m, b[:4], grow=1)[0] >= 0.98 * m.sum()


def test_affine_border_crops_and_box_candidates() -> None:
    img, boxes = scene(200, 200, [(90, 90, 110, 110), (0, 0, 12, 12)])
    out, nb, kept = A.random_affine(img, boxes, border=(-50, -50), rng=np.random.default_rng(0))
    assert out.shape == (100, 100, 3)
    assert kept.tolist() == [0]  # the corner object is outside the central crop
    np.testing.assert_allclose(nb[0, :4], [40, 40, 60, 60], atol=1e-4)
    before = np.array([[0, 0, 100, 100]] * 4, np.float32)
    after = np.array([[0, 0, 100, 100], [0, 0, 5, 5], [0, 0, 1, 50], [0, 0, 100, 4]], np.float32)
    assert A.box_candidates(before, after).tolist() == [True, False, False, False]


def test_rotation_and_scale_stay_within_bounds() -> None:
    rng = np.random.default_rng(0)
    angles, scales = [], []
    for _ in range(300):
        M, s = A.affine_matrix((100, 100), (100, 100), degrees=10, translate=0, scale=0.2, shear=0,
                               perspective=0, rng=rng)
        angles.append(math.degrees(math.atan2(-M[0, 1], M[0, 0])))
        scales.append(math.hypot(M[0, 0], M[1, 0]))
        assert math.isclose(scales[-1], s, rel_tol=1e-9)
    assert max(abs(a) for a in angles) <= 10 + 1e-9 and max(abs(a) for a in angles) > 9
    assert 0.8 - 1e-9 <= min(scales) < 0.82 and 1.18 < max(scales) <= 1.2 + 1e-9


@pytest.mark.parametrize("seed", range(10))
def test_mosaic_without_rotation_boxes_match_masks(seed: int) -> None:
    s = 100
    imgs, boxes = [], []
    for k, b in enumerate([(10, 10, 50, 40), (60, 20, 95, 90), (5, 55, 45, 95), (30, 30, 70, 70)]):
        im, bx = scene(s, s, [b], first_colour=k)
        imgs.append(im)
        boxes.append(bx)
    out, nb = A.mosaic4(imgs, boxes, s, rng=np.random.default_rng(seed))
    assert out.shape == (s, s, 3) and out.dtype == np.uint8 and nb.shape[1] == 5
    kept = set(nb[:, 4].astype(int).tolist())
    assert len(kept) == len(nb)
    for b in nb:
        np.testing.assert_allclose(mask_bbox(mask(out, b[4])), b[:4], atol=1.0)
    orig_area = {k: (bx[0, 2] - bx[0, 0]) * (bx[0, 3] - bx[0, 1]) for k, bx in enumerate(boxes)}
    for k in set(range(4)) - kept:  # dropped objects are (almost) out of view
        m = mask(out, k)
        if m.any():
            w, h = mask_bbox(m)[2:] - mask_bbox(m)[:2]
            assert m.sum() < 0.1 * orig_area[k] or min(w, h) < 2 or max(w / h, h / w) > 20


@pytest.mark.parametrize("seed", range(12))
def test_mosaic_with_rotation_boxes_enclose_objects(seed: int) -> None:
    s = 128
    imgs, boxes = [], []
    for k in range(4):
        im, bx = scene(s, s, [(34, 40, 94, 88)], first_colour=k)
        imgs.append(im)
        boxes.append(bx)
    out, nb = A.mosaic4(imgs, boxes, s, degrees=20, translate=0.1, scale=0.3, rng=np.random.default_rng(seed))
    assert out.shape == (s, s, 3)
    assert len(nb) >= 1
    for b in nb:
        m = mask(out, b[4])
        covered, _ = inside(m, b[:4], grow=1)
        assert covered >= 0.98 * m.sum()  # the box holds the visible object
        # ... and is close to the visible object's extent (a thin sliver cut at a tile edge and turned gets
        # a sparse enclosing box, so compare extents rather than fill)
        assert iou(mask_bbox(m), b[:4]) >= 0.5


@pytest.mark.parametrize("seed", range(10))
def test_cutmix_keeps_visible_boxes(seed: int) -> None:
    img_a, ba = scene(120, 120, [(5, 5, 45, 45), (70, 10, 110, 50), (30, 70, 90, 110)], first_colour=0)
    img_b, bb = scene(120, 120, [(10, 60, 50, 100), (60, 60, 100, 100), (40, 20, 80, 40)], first_colour=3)
    out, nb, patch = A.cutmix(img_a, ba, img_b, bb, ratio_range=(0.3, 0.7), rng=np.random.default_rng(seed))
    x1, y1, x2, y2 = patch
    assert 0.25 <= (x2 - x1) * (y2 - y1) / (120 * 120) <= 0.75
    np.testing.assert_array_equal(out[y1:y2, x1:x2], img_b[y1:y2, x1:x2])
    outside = np.ones((120, 120), bool)
    outside[y1:y2, x1:x2] = False
    np.testing.assert_array_equal(out[outside], img_a[outside])
    for b in nb:
        m = mask(out, b[4])
        covered, area = inside(m, b[:4])
        if b[4] >= 3:  # from b: clipped to the patch, fully visible
            assert covered == area
        else:  # from a: at most 40% hidden by the patch
            assert covered >= 0.6 * area
    for src in (ba, bb):  # every object left mostly visible is labelled
        for b in src:
            visible = mask(out, b[4]).sum() / ((b[2] - b[0]) * (b[3] - b[1]))
            if visible >= 0.61:
                assert int(b[4]) in nb[:, 4].astype(int).tolist()


def test_cutmix_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        A.cutmix(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 5)), np.zeros((12, 10, 3), np.uint8),
                 np.zeros((0, 5)))


def test_hsv_keeps_shape_dtype_and_bounds() -> None:
    img, _ = scene(64, 80, [(5, 5, 30, 30), (40, 10, 70, 50)])
    same = A.augment_hsv(img, 0, 0, 0, 0)
    np.testing.assert_array_equal(same, img)
    rng = np.random.default_rng(0)
    grey = np.full((32, 32, 3), 100, np.uint8)
    grey[:, 16:] = 150
    for _ in range(50):
        out = A.augment_hsv(img, 0.05, 0.5, 0.2, 0.2, rng=rng)
        assert out.shape == img.shape and out.dtype == np.uint8
        g = A.augment_hsv(grey, 0.05, 0.5, 0.2, 0.2, rng=rng)
        assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()  # grey stays grey
        lo, hi = int(g[0, 0, 0]), int(g[0, 31, 0])
        assert 0.8 * 50 - 2 <= hi - lo <= 1.2 * 50 + 2  # contrast +-20%
        mid = (lo + hi) / 2
        assert abs(mid - 125) <= 0.2 * 255 + 2 + 0.2 * 2.5  # brightness +-0.2
    # a hue shift moves a pure colour's OpenCV hue by at most h*180
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 2] = 255
    hues = set()
    for _ in range(40):
        hsv = cv2.cvtColor(A.augment_hsv(red, 0.05, 0, 0, 0, rng=rng), cv2.COLOR_BGR2HSV)
        h = int(hsv[0, 0, 0])
        hues.add(h)
        assert min(h, 180 - h) <= 9 + 1
    assert len(hues) > 3


def test_letterbox_reuses_service_letterbox() -> None:
    img = np.full((50, 100, 3), 200, np.uint8)
    out, ratio, pad = A.letterbox(img, 64)
    assert out.shape == (64, 64, 3) and ratio == (0.64, 0.64) and pad == (0, 16)
    assert (out[:16] == 114).all() and (out[16:48] == 200).all() and (out[48:] == 114).all()


@pytest.mark.parametrize("seed", range(10))
def test_transform_boxes_clips_rotated_box_exactly(seed: int) -> None:
    """Bounds of a rotated box cut by the image edge equal the bounds of its visible pixels."""
    rng = np.random.default_rng(seed)
    w, h = 100, 80
    box = np.array([[rng.uniform(-20, 70), rng.uniform(-20, 50), 0, 0]], np.float32)
    box[0, 2:] = box[0, :2] + rng.uniform(15, 50, 2)
    M, _ = A.affine_matrix((h, w), (h, w), degrees=45, translate=0.3, scale=0.2, shear=0, perspective=0,
                           rng=rng)
    got = A.transform_boxes(box, M, (h, w))[0]
    corners = np.array([[box[0, 0], box[0, 1], 1], [box[0, 2], box[0, 1], 1],
                        [box[0, 2], box[0, 3], 1], [box[0, 0], box[0, 3], 1]]) @ M.T
    f = 8  # rasterise at 8x resolution with a margin of 2 image sizes
    canvas = np.zeros(((h * 5) * f, (w * 5) * f), np.uint8)
    poly = np.round((corners[:, :2] + [2 * w, 2 * h]) * f).astype(np.int32)
    cv2.fillConvexPoly(canvas, poly, 1)
    visible = canvas[2 * h * f:3 * h * f, 2 * w * f:3 * w * f]
    if not visible.any():
        assert got[2] - got[0] == 0 or got[3] - got[1] == 0
        return
    ys, xs = np.nonzero(visible)
    want = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / f
    np.testing.assert_allclose(got, want, atol=0.7)  # within a pixel (rasterised corners are coarse)
