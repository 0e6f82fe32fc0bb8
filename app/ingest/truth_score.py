"""Defect records scored against the simulator's truth: is each physical defect one record?

Each sighting of a record (a frame index and a box) is matched to the true box of that frame it
overlaps most (IoU >= ``min_iou``), which names the physical defect (``TruthBox.defect_id``); a
sighting that matches none is a false detection. A record stands for the true defect most of its
sightings match. Then, over the true defects the detector found at least once:

* ``exactly_one``: the share that is the defect of exactly one record (goal >= 0.95);
* ``duplicates``: the share that is the defect of several records (split tracks; goal <= 0.05);
* ``merges``: the share of records whose sightings also cover a found defect that has no record of
  its own (one record for two defects; goal <= 0.05).

``failure_kinds`` says why a defect is not exactly one record (see there).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from app.ingest.simulator import TruthBox
from app.ingest.tracking import Box, iou, share_inside

Record = Sequence[tuple[int, Box]]  # a record's sightings: (frame index, box in frame pixels)
TRUTH_MIN_IOU = 0.3  # a box names the true defect it overlaps most by at least this IoU
COVERED = 0.5  # a box holds a true box when this share of the true box lies inside it


def true_defect(box: Box, truth: Iterable[TruthBox], min_iou: float) -> str | None:
    """The physical defect whose true box in the same frame overlaps ``box`` most, if enough."""
    best, best_iou = None, min_iou
    for t in truth:
        overlap = iou(box, (t.x1, t.y1, t.x2, t.y2))
        if overlap >= best_iou:
            best, best_iou = t.defect_id, overlap
    return best


def named_sightings(records: Sequence[Record], truth: Mapping[int, Sequence[TruthBox]],
                    min_iou: float) -> list[list[tuple[int, Box, str | None]]]:
    """Each record's sightings with the physical defect each names (None: a false detection)."""
    return [[(f, box, true_defect(box, truth.get(f, ()), min_iou)) for f, box in record]
            for record in records]


def owner(named: Sequence[tuple[int, Box, str | None]]) -> str | None:
    """The defect a record stands for: the one most of its sightings name."""
    ids = Counter(d for _, _, d in named if d is not None)
    return ids.most_common(1)[0][0] if ids else None


def score_records(records: Sequence[Record], truth: Mapping[int, Sequence[TruthBox]],
                  min_iou: float = TRUTH_MIN_IOU, passed: set[str] | None = None,
                  detected: set[str] | None = None) -> dict:
    """The scores of ``records`` against the truth of their frames (``truth[frame index]``); with
    ``passed`` (the true defects that went through the whole view) also the defect-level recall of
    the records: the share of those some record names (``recall``), and the share of those that some
    record stands for (``own_recall``: not only covered by the record of a neighbour).

    ``found_defects`` are the defects the records' sightings name. With ``detected`` (the defects some
    inspected frame's kept box names, whether or not a record kept that box) the exactly-one share is
    also taken over those (``exactly_one_of_detected``; ``no_record_of_detected``: the share no record
    stands for): a box a record does not keep (a partial view left out, a piece merged into a box that
    names its neighbour) then counts against the records instead of leaving the defect out."""
    named = named_sightings(records, truth, min_iou)
    covered = [{d for _, _, d in n if d is not None} for n in named]
    found_ids = set().union(*covered) if covered else set()
    owners: Counter[str] = Counter(o for o in map(owner, named) if o is not None)
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
    } | ({} if passed is None else {
        "passed_defects": len(passed),
        "recall": round(len(found_ids & passed) / len(passed), 3) if passed else None,
        "own_recall": round(len(set(owners) & passed) / len(passed), 3) if passed else None}) | (
        {} if detected is None else {
            "detected_defects": len(detected),
            "exactly_one_of_detected": round(sum(1 for d in detected if owners[d] == 1) / len(detected), 4)
            if detected else None,
            "no_record_of_detected": round(sum(1 for d in detected if owners[d] == 0) / len(detected), 4)
            if detected else None})


def failure_kinds(records: Sequence[Record], truth: Mapping[int, Sequence[TruthBox]], frame_width: float,
                  min_iou: float = TRUTH_MIN_IOU, edge_px: float = 3.0,
                  detected: set[str] | None = None) -> dict[str, int]:
    """Why found defects are not exactly one record, counted by kind ("at the edge": a box within
    ``edge_px`` of the frame's left or right border, where the material enters and leaves the view
    and the detector sees a defect only in part).

    A duplicated defect, by its first two records (in the order of their first sighting of it):

    * ``duplicate_split``: the second record names it before the first one's last sighting of it: the
      detector boxes the defect as two pieces in the same frames;
    * ``duplicate_lost``: the second begins after the first's last sighting of it: a track was lost
      and a new one began; ``duplicate_lost_edge`` where one of the two sightings at that break is at
      the edge.

    A merged record, by the first defect (in frame order) it covers that has no record of its own:

    * ``merge_edge``: every sighting that names that defect is at the edge (a partial view, boxed
      together with the defect next to it);
    * ``merge_neighbour``: else, where the two defects' true boxes overlap in that frame (labels the
      detector boxes as one);
    * ``merge_boxed_together``: else, where one of the record's boxes holds most of both true boxes
      (``COVERED``) in its frame (two labels apart that the detector boxes as one);
    * ``merge_jump``: else (the track went over to a defect apart).

    ``found_only_at_edge``: found defects whose every sighting is at the edge. With ``detected`` (the
    defects some inspected frame's kept box names), ``in_no_record``: those that no record's sightings
    name at all (their boxes began no track that became a record, nor went into one)."""
    named = named_sightings(records, truth, min_iou)
    owners = [owner(n) for n in named]
    records_of: dict[str, list[int]] = {}
    for k, o in enumerate(owners):
        if o is not None:
            records_of.setdefault(o, []).append(k)

    def at_edge(box: Box) -> bool:
        return box[0] <= edge_px or box[2] >= frame_width - edge_px

    kinds: Counter[str] = Counter()
    seen_inside: set[str] = set()
    seen: set[str] = set()
    for n in named:
        for _, box, d in n:
            if d is not None:
                seen.add(d)
                if not at_edge(box):
                    seen_inside.add(d)
    for d, ks in records_of.items():
        if len(ks) < 2:
            continue
        first, second = sorted(ks, key=lambda k: min(f for f, _, x in named[k] if x == d))[:2]
        last_a = max((s for s in named[first] if s[2] == d), key=lambda s: s[0])
        first_b = min((s for s in named[second] if s[2] == d), key=lambda s: s[0])
        if first_b[0] <= last_a[0]:
            kinds["duplicate_split"] += 1
        else:
            edge = at_edge(last_a[1]) or at_edge(first_b[1])
            kinds["duplicate_lost_edge" if edge else "duplicate_lost"] += 1
    for n, o in zip(named, owners, strict=True):
        orphans = sorted((f, box, d) for f, box, d in n if d is not None and d not in records_of)
        if not orphans:
            continue
        frame, _, orphan = orphans[0]
        if all(at_edge(box) for _, box, d in n if d == orphan):
            kinds["merge_edge"] += 1
            continue
        boxes = {t.defect_id: (t.x1, t.y1, t.x2, t.y2) for t in truth.get(frame, ())}
        if o in boxes and iou(boxes[o], boxes[orphan]) > 0:
            kinds["merge_neighbour"] += 1
        elif o is not None and _boxed_together(n, truth, o, orphan):
            kinds["merge_boxed_together"] += 1
        else:
            kinds["merge_jump"] += 1
    kinds["found_only_at_edge"] = len(seen - seen_inside)
    if detected is not None:
        kinds["in_no_record"] = len(detected - seen)
    return dict(sorted(kinds.items()))


def _boxed_together(named: Sequence[tuple[int, Box, str | None]], truth: Mapping[int, Sequence[TruthBox]],
                    a: str, b: str) -> bool:
    """Whether one of a record's boxes holds most of the true boxes of both ``a`` and ``b``."""
    for frame, box, _ in named:
        held = {t.defect_id for t in truth.get(frame, ()) if t.defect_id in (a, b)
                and share_inside((t.x1, t.y1, t.x2, t.y2), box) >= COVERED}
        if len(held) == 2:
            return True
    return False
