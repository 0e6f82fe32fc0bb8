"""Defect records scored against the simulator's truth: is each physical defect one record?

Each sighting of a record (a frame index and a box) is matched to the true box of that frame it
overlaps most (IoU >= ``min_iou``), which names the physical defect (``TruthBox.defect_id``); a
sighting that matches none is a false detection. A record stands for the true defect most of its
sightings match. Then, over the true defects the detector found at least once:

* ``exactly_one``: the share that is the defect of exactly one record (goal >= 0.95);
* ``duplicates``: the share that is the defect of several records (split tracks; goal <= 0.05);
* ``merges``: the share of records whose sightings also cover a found defect that has no record of
  its own (one record for two defects; goal <= 0.05).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from app.ingest.simulator import TruthBox
from app.ingest.tracking import Box, iou

Record = Sequence[tuple[int, Box]]  # a record's sightings: (frame index, box in frame pixels)


def true_defect(box: Box, truth: Iterable[TruthBox], min_iou: float) -> str | None:
    """The physical defect whose true box in the same frame overlaps ``box`` most, if enough."""
    best, best_iou = None, min_iou
    for t in truth:
        overlap = iou(box, (t.x1, t.y1, t.x2, t.y2))
        if overlap >= best_iou:
            best, best_iou = t.defect_id, overlap
    return best


def score_records(records: Sequence[Record], truth: Mapping[int, Sequence[TruthBox]],
                  min_iou: float = 0.3) -> dict:
    """The scores of ``records`` against the truth of their frames (``truth[frame index]``)."""
    covered: list[Counter[str]] = []
    for record in records:
        ids: Counter[str] = Counter()
        for frame_index, box in record:
            found = true_defect(box, truth.get(frame_index, ()), min_iou)
            if found is not None:
                ids[found] += 1
        covered.append(ids)
    found_ids = set().union(*covered) if covered else set()
    owners: Counter[str] = Counter(c.most_common(1)[0][0] for c in covered if c)
    exactly_one = sum(1 for d in found_ids if owners[d] == 1)
    duplicated = sum(1 for d in found_ids if owners[d] > 1)
    merged = sum(1 for c in covered if any(owners[d] == 0 for d in c))
    false_records = sum(1 for c in covered if not c)
    n_found = len(found_ids)
    return {
        "records": len(records), "found_defects": n_found, "false_records": false_records,
        "exactly_one": round(exactly_one / n_found, 4) if n_found else None,
        "duplicates": round(duplicated / n_found, 4) if n_found else None,
        "merges": round(merged / len(records), 4) if records else None,
        "records_per_defect": round((len(records) - false_records) / n_found, 3) if n_found else None,
    }
