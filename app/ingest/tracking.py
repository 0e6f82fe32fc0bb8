"""Defect tracks along the material: each physical defect a camera sees in many consecutive frames
becomes one track.

Motion model: the camera's measured picture shift (app.ingest.motion, the material's offset in frame
pixels since the stream began) carries every track from frame to frame. A defect does not move on the
material, so a track is kept in material coordinates (frame box minus the offset) and predicted at
``material box + offset`` in the next inspected frame, whatever the line did in between: speed
changes, stops and jitter are all in the measured offset. (A constant-velocity Kalman filter in frame
coordinates mispredicts at every speed change and stop; with the offset as its control input and a
stationary state it reduces to this.)

Association: predicted boxes against the frame's detections, cost ``1 - overlap + centre distance``
(overlap: the larger of IoU and half the share of the smaller box inside the other, which keeps a
box that grows as its defect enters the view; distance in box sizes; plus a little for another
class), gated by ``min_iou`` (on that overlap) or ``max_distance`` and by the place on the material
(``min_place_overlap``: the detection carried onto the material must overlap the track's footprint
there; a long defect right beside a small one has its centre close enough for the distance gate, and
without this check the small one's track goes over to it when the detector misses it), solved
optimally with the Hungarian method (``scipy.optimize.linear_sum_assignment``): neighbouring defects
of a textured strip compete for the same detections, and a greedy pick lets one track steal its
neighbour's box. A track ends when its predicted box leaves the frame or it goes unseen for
``max_missed`` inspected frames while the line moves (a stopped line ages nothing).

Which tracks are defects: those seen in ``min_hits`` frames whose score reaches ``min_score`` (the
camera's default; with ``min_score: null`` every such track): the mean, over the inspected frames that
had its place in view, of its box's confidence relative to its class threshold (``Sighting.strength``;
0 in a frame where it was not seen); the looks at a standing line are one view of its place, counted
with their strongest box (a long stop neither buries a defect missed there nor lifts a spot boxed now
and then). The best box of a track grows with how often the detector looks (one lucky box in 90
frames is as good as a strong one), the score does not: a camera that inspects each region twice and
one that inspects every frame keep more nearly the same defects, and a spot of texture that the
detector boxes once in a long run of frames is not kept. With it, ``weak_share`` lets boxes below
their class threshold (from that share of it) continue and start tracks: a defect the detector sees
faintly in most looks is found, where no single box would have passed.

One defect, two tracks: the detector may box one defect twice in the same frames (two pieces that
barely overlap, or a box and a larger box around it) or lose it and find it again. When a track ends,
it is folded into a track of its class whose footprint on the material (the median of its boxes
there) overlaps its own by ``fold_iou``: the two lie on the same place of the material. Neighbouring
defects of one class lie side by side, so their footprints barely overlap and they stay two.

Partial views at the border (with ``border_px``; off by default): a box within ``border_px`` of a
border the material enters or leaves the view by (across the axis it moves along) shows its defect in
part. The detector often boxes such a part together with the whole defect next to it, or, as a defect
leaves, its box shrinks onto the neighbour behind it; fed to the tracks of whole views, these boxes
turn a neighbour's track into one record of two defects. With the band they are tracked apart, as
partial tracks, and a partial track counts as a defect only where no track of whole views lies on its
place on the material (its footprint overlaps none): a defect the detector boxes only in part is still
recorded, once, and a neighbour's part is in no record (docs/benchmarks.md, "Partial views at the
border", has what that gives and costs).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from app.inference.postprocess import box_intersection, box_iou
from app.ingest.config import TrackingConfig

Box = tuple[float, float, float, float]
FORBIDDEN = 1e6
MAX_SIGHTINGS = 2000
OTHER_CLASS_COST = 0.1
IN_VIEW = 0.5  # a track's place is in view of a frame when this share of its box lies inside it
VIEW_HISTORY = 512  # inspected frames remembered to count the looks a new track's place had before
WHOLE_PLACES = 1024  # footprints of ended tracks of whole views a partial track is checked against


@dataclass(frozen=True)
class Sighting:
    """One detection of one inspected frame, in frame pixels; ``ref`` is the caller's (frame uid and
    the detection's index, say)."""

    frame_index: int
    box: Box
    class_id: int
    class_name: str
    confidence: float
    ref: Any = None
    strength: float = 1.0  # the confidence relative to its class threshold (1: just at it)


@dataclass
class Track:
    """One physical defect as far as it was seen. Positions are material coordinates: frame pixels of
    the stream's first frame. ``sightings`` keeps the first ``MAX_SIGHTINGS`` (a defect under a stopped
    line is seen for as long as the line stands); counts, votes and the best sighting cover all."""

    track_id: int
    sightings: list[Sighting] = field(default_factory=list)
    material_box: Box = (0.0, 0.0, 0.0, 0.0)  # where the last sighting puts it on the material
    best_material_box: Box = (0.0, 0.0, 0.0, 0.0)
    missed: int = 0
    hits: int = 0
    last_frame: int = 0
    last_class_name: str = ""
    best_sighting: Sighting | None = None
    first_ref: Any = None  # the ``ref`` of the first and the last sighting (kept beyond MAX_SIGHTINGS)
    last_ref: Any = None
    votes: Counter[str] = field(default_factory=Counter)  # class name -> frames
    confidence_sums: Counter[str] = field(default_factory=Counter)  # class name -> summed confidence
    class_ids: dict[str, int] = field(default_factory=dict)
    material_boxes: list[Box] = field(default_factory=list)  # of ``sightings``, on the material
    in_view: int = 0  # inspected views that had its place in view (seen or not; a stop is one view)
    strength_sum: float = 0.0  # summed ``strength`` of its sightings (one per view)
    stop_strength: float | None = None  # while the line stands: the strength counted for the stop's view
    _footprint: tuple[int, Box] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def first_frame(self) -> int:
        return self.sightings[0].frame_index

    @property
    def best(self) -> Sighting:
        """The sighting with the highest confidence (its frame is the track's stored image)."""
        assert self.best_sighting is not None
        return self.best_sighting

    @property
    def class_name(self) -> str:
        """By vote: the class seen in most frames; a tie goes to the larger summed confidence."""
        return max(self.votes, key=lambda n: (self.votes[n], self.confidence_sums[n]))

    @property
    def class_id(self) -> int:
        return self.class_ids[self.class_name]

    def score(self) -> float:
        """The mean, over the inspected views that had its place in view, of its boxes' ``strength``
        (0 where it was not seen). The looks at a standing line see one view: they count once, with
        the strongest box they had (a long stop neither buries a defect missed there nor lifts a spot
        boxed now and then)."""
        return self.strength_sum / max(self.in_view, 1)

    def add(self, s: Sighting, on_material: Box, moving: bool = True) -> None:
        if self.best_sighting is None or s.confidence > self.best_sighting.confidence:
            self.best_sighting = s
            self.best_material_box = on_material
        if len(self.sightings) < MAX_SIGHTINGS:
            self.sightings.append(s)
            self.material_boxes.append(on_material)
        if self.hits == 0:
            self.first_ref = s.ref
        self.last_ref = s.ref
        self.hits += 1
        self.last_frame = s.frame_index
        self.last_class_name = s.class_name
        self.votes[s.class_name] += 1
        self.confidence_sums[s.class_name] += s.confidence
        self._count_strength(s.strength, moving)
        self.class_ids.setdefault(s.class_name, s.class_id)
        self.material_box = on_material
        self.missed = 0

    def _count_strength(self, strength: float, moving: bool) -> None:
        """A moving line's look adds its box's strength; the looks of one stop are one view, counted
        with their strongest box."""
        if moving:
            self.strength_sum += strength
            return
        counted = self._stop_view()
        if strength > counted:
            self.strength_sum += strength - counted
            self.stop_strength = strength

    def count_view(self, in_view: bool, moving: bool) -> None:
        """An inspected frame had (``in_view``) the track's place in view or not: each look of a moving
        line is a view; the looks of one stop are one."""
        if moving:
            self.stop_strength = None
            self.in_view += in_view
        elif in_view:
            self._stop_view()

    def _stop_view(self) -> float:
        """The strength counted so far for the standing line's view of its place; the stop's first look
        at the place counts that view."""
        if self.stop_strength is None:
            self.in_view += 1
            self.stop_strength = 0.0
        return self.stop_strength

    def footprint(self) -> Box:
        """Where the track lies on the material: the median of its boxes there, side by side (one odd
        box, a partial view at the border or a piece, moves it little)."""
        if self._footprint is None or self._footprint[0] != self.hits:
            x1, y1, x2, y2 = np.median(np.array(self.material_boxes), axis=0).tolist()
            self._footprint = (self.hits, (x1, y1, x2, y2))
        return self._footprint[1]

    def absorb(self, other: Track) -> None:
        """Take over ``other``'s sightings (another track of the same defect): counts, votes and the
        best sighting cover both; where the track is now stays this one's."""
        if self.best_sighting is None or other.best.confidence > self.best_sighting.confidence:
            self.best_sighting, self.best_material_box = other.best_sighting, other.best_material_box
        if other.first_frame < self.first_frame:
            self.first_ref = other.first_ref
        pairs = sorted(zip([*self.sightings, *other.sightings], [*self.material_boxes, *other.material_boxes],
                           strict=True), key=lambda p: p[0].frame_index)[:MAX_SIGHTINGS]
        self.sightings, self.material_boxes = [p[0] for p in pairs], [p[1] for p in pairs]
        if other.last_frame > self.last_frame:
            self.last_frame, self.last_ref = other.last_frame, other.last_ref
        self.hits += other.hits
        self.strength_sum += other.strength_sum
        self.in_view = max(self.in_view, other.in_view)  # the same place: mostly the same frames
        self.votes.update(other.votes)
        self.confidence_sums.update(other.confidence_sums)
        for name, class_id in other.class_ids.items():
            self.class_ids.setdefault(name, class_id)
        self._footprint = None

    def position_px(self) -> tuple[float, float]:
        """The best box's centre on the material."""
        x1, y1, x2, y2 = self.best_material_box
        return (x1 + x2) / 2, (y1 + y2) / 2

    def summary(self, mm_per_px: float | None = None) -> dict:
        """The track as plain values (state, bench, storage)."""
        best = self.best
        x, y = self.position_px()
        x1, y1, x2, y2 = self.best_material_box
        out = {"track_id": self.track_id, "class_name": self.class_name, "class_id": self.class_id,
               "confidence": round(best.confidence, 4), "first_frame": self.first_frame,
               "last_frame": self.last_frame, "frames_seen": self.hits, "best_frame": best.frame_index,
               "best_box": [round(v, 2) for v in best.box], "position_px": [round(x, 2), round(y, 2)],
               "size_px": [round(x2 - x1, 2), round(y2 - y1, 2)]}
        if mm_per_px is not None:
            out["position_mm"] = [round(x * mm_per_px, 3), round(y * mm_per_px, 3)]
            out["size_mm"] = [round((x2 - x1) * mm_per_px, 3), round((y2 - y1) * mm_per_px, 3)]
        return out


def _area(a: Box) -> float:
    return (a[2] - a[0]) * (a[3] - a[1])


def _intersection(a: Box, b: Box) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def iou(a: Box, b: Box) -> float:
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def overlap_of_smaller(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area: 1 when one box lies inside the other."""
    smaller = min(_area(a), _area(b))
    return _intersection(a, b) / smaller if smaller > 0 else 0.0


def share_inside(inner: Box, outer: Box) -> float:
    """The share of ``inner``'s area that lies inside ``outer``."""
    area = _area(inner)
    return _intersection(inner, outer) / area if area > 0 else 0.0


def pairwise_overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU, intersection over the smaller box) of every box of ``a`` (M, 4) with every box of ``b``
    (N, 4), as ``iou`` and ``overlap_of_smaller`` give them one pair at a time."""
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    smaller = np.minimum(area_a, area_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.where(smaller > 0, box_intersection(a, b) / smaller, 0.0)
    return box_iou(a, b), inside


def merge_fragments(sightings: list[Sighting], min_overlap: float) -> list[Sighting]:
    """One sighting per defect: boxes of one frame that overlap by ``min_overlap`` of the smaller one
    (the detector's pieces of one texture defect, or one defect seen as two classes) become their
    union, with the class and confidence of the most confident piece."""
    if min_overlap >= 1.0 or len(sightings) < 2:
        return sightings
    groups: list[list[Sighting]] = []
    boxes: list[Box] = []
    for s in sorted(sightings, key=lambda s: -s.confidence):
        for k, box in enumerate(boxes):
            if overlap_of_smaller(box, s.box) >= min_overlap:
                groups[k].append(s)
                boxes[k] = (min(box[0], s.box[0]), min(box[1], s.box[1]), max(box[2], s.box[2]),
                            max(box[3], s.box[3]))
                break
        else:
            groups.append([s])
            boxes.append(s.box)
    return [replace(g[0], box=box) if len(g) > 1 else g[0] for g, box in zip(groups, boxes, strict=True)]


def shift(box: Box, dx: float, dy: float) -> Box:
    return box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy


def visible_fractions(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """The share of each box (N, 4) inside a ``width`` x ``height`` frame (0 for a box without area)."""
    inside = box_intersection(boxes, np.array([[0.0, 0.0, width, height]]))[:, 0]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, inside / area, 0.0)


class Tracker:
    """Tracks of one camera. ``update`` once per inspected frame, in frame order; it returns the tracks
    that ended. ``finish`` ends the rest (end of stream)."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self.active: list[Track] = []  # tracks of whole views
        self.partial: list[Track] = []  # tracks of boxes at the border the material crosses
        self._whole_places: deque[Box] = deque(maxlen=WHOLE_PLACES)  # footprints of ended whole tracks
        self._travel = [0.0, 0.0]  # how far the material moved along x and along y (the motion's axis)
        self._next_id = 1
        self.started = 0
        self.ended = 0
        self.offset: tuple[float, float] = (0.0, 0.0)  # the material's offset at the last update
        # the offsets of the last inspected frames (the looks a new track's place had before its first box)
        self._views: deque[tuple[float, float]] = deque(maxlen=VIEW_HISTORY)

    def _costs(self, tracks: list[Track], predicted: list[Box], sightings: list[Sighting], ox: float,
               oy: float) -> np.ndarray:
        """The cost of each (track, sighting) pair, FORBIDDEN where the gates say no: ``1 - overlap +
        centre distance`` (+ a little for another class) between the track's predicted box and the
        sighting, allowed where the overlap reaches ``min_iou`` or the distance is within
        ``max_distance``, and the sighting carried onto the material overlaps the track's footprint by
        ``min_place_overlap`` of the smaller box. All pairs at once (numpy): a textured strip has dozens
        of boxes a frame."""
        boxes = np.array([s.box for s in sightings], dtype=np.float64)
        pred = np.array(predicted, dtype=np.float64)
        iou_, inside = pairwise_overlaps(pred, boxes)
        overlap = np.maximum(iou_, inside / 2)
        pw, ph = pred[:, 2] - pred[:, 0], pred[:, 3] - pred[:, 1]
        sw, sh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        size = np.maximum(np.maximum(pw, ph)[:, None], np.maximum(sw, sh)[None, :])
        size = np.maximum(size, 1.0)
        dx = (pred[:, 0] + pred[:, 2])[:, None] / 2 - (boxes[:, 0] + boxes[:, 2])[None, :] / 2
        dy = (pred[:, 1] + pred[:, 3])[:, None] / 2 - (boxes[:, 1] + boxes[:, 3])[None, :] / 2
        distance = np.hypot(dx, dy) / size
        footprints = np.array([t.footprint() for t in tracks], dtype=np.float64)
        _, place = pairwise_overlaps(footprints, boxes - np.array([ox, oy, ox, oy]))
        names = np.array([s.class_name for s in sightings], dtype=object)
        other = np.array([[n != t.last_class_name for n in names] for t in tracks], dtype=bool)
        cost = 1.0 - overlap + distance + OTHER_CLASS_COST * other
        forbidden = ((overlap < self.config.min_iou) & (distance > self.config.max_distance)) | (
            place < self.config.min_place_overlap)
        cost[forbidden] = FORBIDDEN
        return cost

    def update(self, frame_index: int, offset: tuple[float, float], sightings: list[Sighting],
               frame_size: tuple[int, int], moving: bool = True) -> list[Track]:
        """Associate this frame's sightings (``offset``: the material's shift in frame pixels since the
        first frame, from the motion estimate); returns the tracks that ended with it."""
        ox, oy = offset
        self._travel[0] += abs(ox - self.offset[0])
        self._travel[1] += abs(oy - self.offset[1])
        self.offset = offset
        whole, partial = self._split_partial_views(merge_fragments(sightings, self.config.merge_overlap),
                                                   frame_size)
        self.active, ended = self._step(self.active, whole, ox, oy, frame_size, moving)
        self.partial, ended_partial = self._step(self.partial, partial, ox, oy, frame_size, moving)
        if moving or not self._views:  # the looks of a standing line are one view
            self._views.append((ox, oy))
        if self.config.border_px > 0:  # only partial tracks are checked against them
            self._whole_places.extend(t.footprint() for t in ended)
        return self._counted(self._fold([*ended, *self._alone(ended_partial)], self.active))

    def running(self) -> list[Track]:
        """Every track not ended yet: those of whole views and the partial ones."""
        return [*self.active, *self.partial]

    def _split_partial_views(self, sightings: list[Sighting],
                             frame_size: tuple[int, int]) -> tuple[list[Sighting], list[Sighting]]:
        """(whole views, partial views): a box within ``border_px`` of a border the material enters or
        leaves the view by (the two across the axis it has moved along most) is a partial view."""
        band = self.config.border_px
        if band <= 0 or not sightings:
            return sightings, []
        axis = 0 if self._travel[0] >= self._travel[1] else 1
        extent = frame_size[axis]
        whole: list[Sighting] = []
        partial: list[Sighting] = []
        for s in sightings:
            at_border = s.box[axis] <= band or s.box[axis + 2] >= extent - band
            (partial if at_border else whole).append(s)
        return whole, partial

    def _alone(self, partial: list[Track]) -> list[Track]:
        """The ended partial tracks that lie where no track of whole views does (running or ended): the
        defects the detector boxed only in part."""
        if not partial:
            return []
        places = [*(t.footprint() for t in self.active), *self._whole_places]
        if not places:
            return partial
        footprints = np.array([t.footprint() for t in partial], dtype=np.float64)
        overlap = box_intersection(footprints, np.array(places, dtype=np.float64))
        return [t for t, row in zip(partial, overlap, strict=True) if not np.any(row > 0)]

    def _step(self, tracks: list[Track], sightings: list[Sighting], ox: float, oy: float,
              frame_size: tuple[int, int], moving: bool) -> tuple[list[Track], list[Track]]:
        """One frame for one set of tracks: each sighting continues one of ``tracks`` or starts a new
        track; returns (the tracks running on, those that ended)."""
        predicted = [shift(t.material_box, ox, oy) for t in tracks]
        matched_tracks: set[int] = set()
        matched_sightings: set[int] = set()
        if tracks and sightings:
            cost = self._costs(tracks, predicted, sightings, ox, oy)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] >= FORBIDDEN:
                    continue
                self._extend(tracks[r], sightings[c], ox, oy, moving)
                matched_tracks.add(r)
                matched_sightings.add(c)
        ended: list[Track] = []
        keep: list[Track] = []
        width, height = frame_size
        visible = visible_fractions(np.array(predicted, dtype=np.float64).reshape(-1, 4), width, height)
        for k, track in enumerate(tracks):
            if k not in matched_tracks and moving:
                track.missed += 1
            track.count_view(bool(visible[k] >= IN_VIEW) or k in matched_tracks, moving)
            gone = visible[k] < self.config.min_visible
            if k not in matched_tracks and (gone or track.missed > self.config.max_missed):
                ended.append(track)
            else:
                keep.append(track)
        for c, s in enumerate(sightings):
            if c not in matched_sightings:
                track = Track(self._next_id)
                self._next_id += 1
                self.started += 1
                self._extend(track, s, ox, oy, moving)
                track.in_view = 1 + self._looks_before(track.material_box, frame_size)
                keep.append(track)
        return keep, ended

    def _looks_before(self, material_box: Box, frame_size: tuple[int, int]) -> int:
        """How many of the remembered inspected frames before this one had ``material_box`` in view
        (a defect is often boxed only after a look or two that missed it)."""
        if not self._views:
            return 0
        views = np.array(self._views)[:, [0, 1, 0, 1]]  # each frame's offset, for both corners
        seen = visible_fractions(np.array(material_box) + views, *frame_size)
        return int(np.count_nonzero(seen >= IN_VIEW))

    def finish(self) -> list[Track]:
        """End every running track (the stream ended)."""
        ended, self.active = self.active, []
        self._whole_places.extend(t.footprint() for t in ended)
        partial, self.partial = self.partial, []
        return self._counted(self._fold([*ended, *self._alone(partial)], []))

    def _fold(self, ended: list[Track], active: list[Track]) -> list[Track]:
        """The ended tracks that are defects of their own. A track whose footprint on the material
        overlaps that of a track of its class by ``fold_iou`` is the same defect seen twice (the
        detector's second box for it, or its track lost and begun anew): when it ends it is folded
        into that track, one still active or one ending now with more sightings."""
        if self.config.fold_iou > 1.0 or not ended:
            return ended
        by_hits = sorted(ended, key=lambda t: t.hits)  # the smaller into the larger
        folded: set[int] = set()
        for k, track in enumerate(by_hits):
            into = self._same_defect(track, [*active, *by_hits[k + 1:]])
            if into is not None:
                into.absorb(track)
                folded.add(track.track_id)
        return [t for t in ended if t.track_id not in folded]

    def _same_defect(self, track: Track, others: list[Track]) -> Track | None:
        """The track of ``others`` of the same class whose footprint overlaps ``track``'s most, if by
        ``fold_iou``."""
        footprint, name = track.footprint(), track.class_name
        best, best_iou = None, self.config.fold_iou
        for other in others:
            if other.class_name == name:
                overlap = iou(footprint, other.footprint())
                if overlap >= best_iou:
                    best, best_iou = other, overlap
        return best

    def _counted(self, ended: list[Track]) -> list[Track]:
        """The ended tracks that are defects: seen in ``min_hits`` frames, and with ``min_score`` scored
        at least that."""
        floor = self.config.min_score
        real = [t for t in ended if t.hits >= self.config.min_hits and (floor is None or t.score() >= floor)]
        self.ended += len(real)
        return real

    @staticmethod
    def _extend(track: Track, s: Sighting, ox: float, oy: float, moving: bool) -> None:
        track.add(s, shift(s.box, -ox, -oy), moving)
