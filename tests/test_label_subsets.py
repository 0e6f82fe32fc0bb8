"""Class-stratified label subsets: each class keeps its share, smaller subsets lie inside larger ones,
and the committed NEU-DET lists are the ones the function draws (seed 0)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import NEU_DET, REPO_ROOT, needs_neu_det

from models.data.subsets import BACKGROUND, dominant_class, label_subset, stratified_subset

LISTS = REPO_ROOT / "docs" / "ablation" / "label-subsets"


def test_dominant_class_is_the_most_frequent_lowest_id_on_ties() -> None:
    boxes = np.array([[2, .5, .5, .1, .1], [1, .5, .5, .1, .1], [2, .5, .5, .1, .1], [1, .2, .2, .1, .1]])
    assert dominant_class(boxes[:3]) == 2 and dominant_class(boxes) == 1
    assert dominant_class(np.zeros((0, 5))) == BACKGROUND


def test_each_class_keeps_its_share_and_subsets_nest() -> None:
    groups = [0] * 100 + [1] * 40 + [2] * 7 + [BACKGROUND] * 10
    quarter = stratified_subset(groups, 0.25, seed=3)
    tenth = stratified_subset(groups, 0.1, seed=3)
    assert Counter(groups[i] for i in quarter) == {0: 25, 1: 10, 2: 2, BACKGROUND: 2}
    assert Counter(groups[i] for i in tenth) == {0: 10, 1: 4, 2: 1, BACKGROUND: 1}  # at least one each
    assert set(tenth) <= set(quarter) and quarter == sorted(quarter)
    assert stratified_subset(groups, 0.25, seed=3) == quarter  # fixed by the seed ...
    assert stratified_subset(groups, 0.25, seed=4) != quarter  # ... and only by it
    assert stratified_subset(groups, 1.0) == list(range(len(groups)))
    with pytest.raises(ValueError):
        stratified_subset(groups, 0.0)


@needs_neu_det
@pytest.mark.parametrize("percent", [100, 25, 10])
def test_the_committed_neu_det_lists_are_the_drawn_subsets(percent: int) -> None:
    from models.data.formats import load_data_yaml

    spec = load_data_yaml(NEU_DET / "data.yaml")
    drawn = label_subset(spec.train, spec.nc, percent / 100, seed=0)
    committed = [spec.root / line for line in (LISTS / f"neu-det-train-{percent}.txt").read_text().split()]
    assert [Path(p).resolve() for p in committed] == [Path(p).resolve() for p in drawn]
