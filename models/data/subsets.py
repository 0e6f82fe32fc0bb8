"""Class-stratified label subsets of a training split, for measuring what fewer labels cost (and
what self-supervised pretraining on all the images wins back).

Each image belongs to the class that has most boxes in it (ties: the lowest class id; images without
boxes form their own group). Within each class the images are shuffled once with a fixed seed and the
first ``round(fraction * n)`` (at least one) are taken, so a smaller subset is always part of a larger
one and every class keeps its share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.data.labels import read_all_labels

BACKGROUND = -1  # the group of images without boxes


def dominant_class(labels: np.ndarray) -> int:
    """The class with most boxes in one image's labels ([n, 5], class first); BACKGROUND when empty."""
    if len(labels) == 0:
        return BACKGROUND
    classes, counts = np.unique(labels[:, 0].astype(int), return_counts=True)
    return int(classes[np.argmax(counts)])  # np.unique sorts: ties go to the lowest id


def stratified_subset(groups: Sequence[int], fraction: float, seed: int = 0) -> list[int]:
    """Indices (in input order) of a class-stratified ``fraction`` of the items, ``groups[i]`` being
    item i's class."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction}: must be in (0, 1]")
    chosen: list[int] = []
    for group in sorted(set(groups)):
        members = [i for i, g in enumerate(groups) if g == group]
        order = np.random.default_rng([seed, group + 1]).permutation(len(members))
        take = max(1, round(fraction * len(members)))
        chosen.extend(members[j] for j in order[:take])
    return sorted(chosen)


def label_subset(image_paths: Sequence[Path], nc: int, fraction: float, seed: int = 0) -> list[Path]:
    """The class-stratified ``fraction`` of a split's images (see the module's description)."""
    groups = [dominant_class(labels) for labels in read_all_labels(image_paths, nc)]
    return [image_paths[i] for i in stratified_subset(groups, fraction, seed)]
