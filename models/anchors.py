"""Anchor fitting: best possible recall (BPR) metrics, K-means on box sizes, genetic refinement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AnchorReport:
    anchors: np.ndarray  # (n, 2) pixels, sorted small to large by area
    bpr: float           # fraction of boxes with at least one anchor within anchor_t
    anchors_above: float  # mean number of anchors within anchor_t per box
    fitness: float

    def as_dict(self) -> dict:
        return {"anchors": np.round(self.anchors, 1).tolist(), "bpr": round(self.bpr, 4),
                "anchors_above_threshold": round(self.anchors_above, 3), "fitness": round(self.fitness, 4)}


def _ratio_metric(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """For each box and anchor, the worse of the width and height ratios, in (0, 1]."""
    r = wh[:, None, :] / anchors[None, :, :]
    return np.minimum(r, 1.0 / r).min(2)


def evaluate_anchors(wh: np.ndarray, anchors: np.ndarray, anchor_t: float = 4.0) -> AnchorReport:
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    x = _ratio_metric(wh, anchors)
    best = x.max(1)
    thr = 1.0 / anchor_t
    return AnchorReport(
        anchors=sort_anchors(anchors),
        bpr=float((best > thr).mean()),
        anchors_above=float((x > thr).sum(1).mean()),
        fitness=float((best * (best > thr)).mean()),
    )


def sort_anchors(anchors: np.ndarray) -> np.ndarray:
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    return anchors[np.argsort(anchors.prod(1))]


def kmeans_anchors(wh: np.ndarray, n: int = 9, anchor_t: float = 4.0, generations: int = 1000,
                   seed: int = 0, mutation_prob: float = 0.9, sigma: float = 0.1) -> AnchorReport:
    """K-means on whitened (w, h) with scipy, then a genetic search that mutates the anchors and
    keeps a mutation when it improves the fitness (mean best ratio above threshold)."""
    from scipy.cluster.vq import kmeans

    wh = np.asarray(wh, dtype=np.float64)
    wh = wh[(wh >= 2.0).all(1)]
    if len(wh) < n:
        raise ValueError(f"need at least {n} boxes of 2 px or more to fit {n} anchors, got {len(wh)}")
    rng = np.random.default_rng(seed)
    std = wh.std(0)
    std[std == 0] = 1.0
    np.random.seed(seed)  # scipy's kmeans draws its initial centroids from numpy's global state
    centroids, _ = kmeans(wh / std, n, iter=30)
    k = centroids * std
    if len(k) < n:  # kmeans may return fewer centroids on degenerate data: pad with random boxes
        extra = wh[rng.choice(len(wh), n - len(k), replace=False)]
        k = np.concatenate([k, extra])
    best = evaluate_anchors(wh, k, anchor_t)
    for _ in range(generations):
        scale = np.ones_like(k)
        while (scale == 1).all():
            mask = rng.random(k.shape) < mutation_prob
            scale = (mask * rng.standard_normal(k.shape) * sigma * rng.random() + 1).clip(0.3, 3.0)
        candidate = (k * scale).clip(min=2.0)
        report = evaluate_anchors(wh, candidate, anchor_t)
        if report.fitness > best.fitness:
            best, k = report, candidate
    return best


def fit_anchors(wh: np.ndarray, current: np.ndarray, anchor_t: float = 4.0, force: bool = False,
                generations: int = 1000, seed: int = 0) -> tuple[AnchorReport, AnchorReport, bool]:
    """Report the current anchors; fit new ones when BPR < 0.98 or when forced. The fitted anchors
    are kept only if they improve BPR, or keep it equal and improve the fitness.
    Returns (current report, fitted report or current, whether fitted anchors were adopted)."""
    current = np.asarray(current, dtype=np.float64).reshape(-1, 2)
    before = evaluate_anchors(wh, current, anchor_t)
    if not force and before.bpr >= 0.98:
        return before, before, False
    fitted = kmeans_anchors(wh, n=len(current), anchor_t=anchor_t, generations=generations, seed=seed)
    better = fitted.bpr > before.bpr or (fitted.bpr == before.bpr and fitted.fitness > before.fitness)
    return before, (fitted if better else before), better


def anchors_per_level(anchors: np.ndarray, levels: int = 3) -> list[list[float]]:
    """(n, 2) sorted anchors -> one flat list per level, small to large (P3 first)."""
    anchors = sort_anchors(anchors)
    per = len(anchors) // levels
    return [anchors[i * per:(i + 1) * per].reshape(-1).round(2).tolist() for i in range(levels)]
