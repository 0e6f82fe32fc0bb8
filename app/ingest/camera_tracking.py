"""One camera's tracking, wired into the pipeline: the material motion measured on the capture thread
from every captured frame (inspected or not), and the tracker fed from the inference workers with each
inspected frame's kept detections, in capture order (workers finish batches in any order; a frame
waits for the ones captured before it, or for word that they were dropped). Ended tracks are kept
(the latest ``keep`` of them) for the camera's state and the bench; frames that carry the simulator's
truth keep it too, for the truth score. With a ``crop`` function (a camera that stores crops) each
running track keeps the crop of its best sighting, taken from that frame when it becomes the best,
until the ended track goes to the writer (``take_crop``): the one crop of the defect that is stored."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import NamedTuple

import numpy as np

from app.detections import Detections
from app.ingest.config import TrackingConfig
from app.ingest.motion import MotionEstimator, MotionSample
from app.ingest.parts import PartStamp
from app.ingest.simulator import TruthBox
from app.ingest.sources import Frame
from app.ingest.tracking import Box, Sighting, Track, Tracker, shift
from app.ingest.truth_score import TRUTH_MIN_IOU, true_defect

LOOK, SPARE = "look", "spare"  # why a frame goes to the detector: a look is due, or spare detector time
HANDED_KEEP = 1024  # frames handed to the writer remembered beyond the best frames of active tracks
Cropper = Callable[[np.ndarray, Box], bytes | None]  # a frame and a box -> the box's JPEG


class FrameRef(NamedTuple):
    """What a sighting's ``ref`` names in the pipeline: the inspected frame's uid, capture time and
    part (a track belongs to the part of its first sighting)."""

    frame_uid: str
    captured_at: datetime
    part: PartStamp | None = None


def best_frame_uid(track: Track) -> str | None:
    ref = track.best.ref
    return ref.frame_uid if isinstance(ref, FrameRef) else None


class CameraTracking:
    def __init__(self, config: TrackingConfig, keep: int = 10_000, crop: Cropper | None = None,
                 thresholds: Mapping[str, float] | None = None) -> None:
        self.config = config
        # class name -> the camera's threshold: a box's strength is its confidence relative to it
        self.thresholds = dict(thresholds or {})
        self.crop = crop
        self._crops: dict[int, tuple[Sighting, bytes | None]] = {}  # track id -> its best sighting's crop
        self._released: dict[int, bytes | None] = {}  # crops of tracks ready for the writer (``take_crop``)
        self.motion = MotionEstimator(stop_px_s=config.stop_px_s)
        self.tracker = Tracker(config)
        self.ended: deque[Track] = deque(maxlen=keep)
        self.truth: dict[int, list[TruthBox]] = {}  # inspected frame index -> truth (simulator frames)
        self._truth_order: deque[int] = deque()
        # true defects that went through the whole view (simulator frames; the bench's recall), oldest first
        self.passed: dict[str, None] = {}
        # true defects some inspected frame's box at its class threshold names (simulator frames; the truth
        # score over the defects the detector found, whether or not a record kept the box), oldest first
        self.detected: dict[str, None] = {}
        self._keep = keep
        self._lock = threading.Lock()
        self.frames_tracked = 0
        self.skipped = 0  # frames captured but not inspected (``looks``)
        self.spare = 0  # frames between the looks sent to the detector while it had room (``fill_idle``)
        self._last_look: tuple[float, float, float] | None = None  # offset x, y and time of the last one
        self._expected: deque[int] = deque()  # motion seqs of the frames sent to the detector, in order
        self._arrived: dict[int, tuple[Frame, list[Sighting]] | None] = {}  # None: will not come
        # ended tracks go to the writer only behind their best frame: held here until it was handed over
        self._outbox: list[Track] = []
        self._handed: dict[str, None] = {}  # frame uids handed to the writer (an ordered set)

    def on_captured(self, frame: Frame) -> MotionSample:
        """Capture thread, every frame in order: the motion at this frame (also set on the frame)."""
        frame.motion = self.motion.update(frame.image, frame.t_motion)
        if frame.truth:
            self.passed.update((b.defect_id, None) for b in frame.truth if b.x1 <= 0)
            while len(self.passed) > self._keep:
                del self.passed[next(iter(self.passed))]
        return frame.motion

    def should_inspect(self, frame: Frame, detector_has_room: bool = False) -> str | None:
        """Capture thread, after ``on_captured``: whether this frame goes to the detector (``LOOK`` or
        ``SPARE``; None: it is skipped). Without
        ``looks`` every frame does; with it, a frame is inspected once the material would otherwise
        move more than ``extent / (looks + 1)`` past the last inspected one (``extent``: the frame's
        size along the motion), so every region is in ``looks`` inspected frames at least; and every
        ``idle_inspect_s`` while the line stands. With ``fill_idle`` a frame in between goes too when
        the detector has room and the line moves (``spare``); it leaves the looks' own schedule as it
        is, so the looks do not count on an extra frame that may be pushed out of the queue."""
        looks, sample = self.config.looks, frame.motion
        if looks is None or sample is None:
            self.expect(frame)
            return LOOK
        h, w = frame.image.shape[:2]
        vx, vy = self.motion.velocity()
        extent = w if abs(vx) >= abs(vy) else h
        if self._last_look is not None:
            lx, ly, lt = self._last_look
            travel = float(np.hypot(sample.offset_x - lx, sample.offset_y - ly))
            step = float(np.hypot(sample.dx, sample.dy))  # the next frame moves about as far again
            due = travel + step > extent / (looks + 1) or frame.t_motion - lt >= self.config.idle_inspect_s
            if not due:
                if self.config.fill_idle and detector_has_room and not sample.stopped:
                    self.spare += 1
                    self.expect(frame)
                    return SPARE
                self.skipped += 1
                return None
        self._last_look = (sample.offset_x, sample.offset_y, frame.t_motion)
        self.expect(frame)
        return LOOK

    def expect(self, frame: Frame) -> None:
        """Capture thread: this frame goes to the detector; the tracker takes it in this order."""
        if frame.motion is not None:
            with self._lock:
                self._expected.append(frame.motion.seq)

    def forget(self, frame: Frame, spare: bool = False) -> None:
        """A frame that was expected will not be inspected (dropped by the buffer, inspection failed;
        ``spare``: an extra frame pushed out of the queue, counted as skipped)."""
        if frame.motion is None:
            return
        with self._lock:
            if spare:
                self.spare -= 1
                self.skipped += 1
            if frame.motion.seq in self._expected:
                self._arrived[frame.motion.seq] = None
                self._ended(self._drain())

    def on_inspected(self, frame: Frame, detections: Detections, ref: object = None) -> list[Track]:
        """Inference worker: this frame's tracked detections (kept at the class thresholds, or from
        ``weak_share`` of them) continue or start tracks; the tracks that ended with it are returned
        (and kept)."""
        sample = frame.motion
        if sample is None:  # not measured (cannot happen for a camera with tracking on)
            return []
        sightings = [Sighting(frame.index, (float(d.x1), float(d.y1), float(d.x2), float(d.y2)),
                              int(d.class_id), d.class_name, float(d.confidence), ref,
                              self.strength(d.class_name, float(d.confidence)))
                     for d in detections]
        if frame.truth:
            self._note_detected(frame.truth, sightings)
        with self._lock:
            if sample.seq not in self._expected:  # not announced by ``expect``: taken as it comes
                self._expected.append(sample.seq)
            self._arrived[sample.seq] = (frame, sightings)
            ended = self._drain()
            self._ended(ended)
        return ended

    def _note_detected(self, truth: list[TruthBox], sightings: list[Sighting]) -> None:
        """The true defects this frame's boxes at their class threshold name (``weak_share`` boxes below
        it are not the detector's finds)."""
        found = [true_defect(s.box, truth, TRUTH_MIN_IOU) for s in sightings
                 if s.confidence >= self.thresholds.get(s.class_name, 0.0)]
        with self._lock:
            self.detected.update((d, None) for d in found if d is not None)
            while len(self.detected) > self._keep:
                del self.detected[next(iter(self.detected))]

    def strength(self, class_name: str, confidence: float) -> float:
        """A box's confidence relative to its class threshold (the confidence itself where none)."""
        threshold = self.thresholds.get(class_name)
        return confidence / threshold if threshold else confidence

    def _drain(self) -> list[Track]:
        """Feed the tracker the frames that arrived, in capture order, up to the first one missing."""
        ended: list[Track] = []
        while self._expected and self._expected[0] in self._arrived:
            item = self._arrived.pop(self._expected.popleft())
            if item is None:
                continue
            frame, sightings = item
            sample = frame.motion
            assert sample is not None
            h, w = frame.image.shape[:2]
            ended += self.tracker.update(frame.index, (sample.offset_x, sample.offset_y), sightings, (w, h),
                                         moving=not sample.stopped)
            self._crop_new_bests(frame)
            self.frames_tracked += 1
            if frame.truth is not None:
                self.truth[frame.index] = frame.truth
                self._truth_order.append(frame.index)
                while len(self._truth_order) > self._keep:
                    self.truth.pop(self._truth_order.popleft(), None)
        return ended

    def finish(self) -> list[Track]:
        """End every active track (the stream ended or the pipeline stops)."""
        with self._lock:
            for seq in list(self._expected):  # frames that never came (the pipeline stopped)
                self._arrived.setdefault(seq, None)
            ended = self._drain() + self.tracker.finish()
            self._ended(ended)
        return ended

    def _crop_new_bests(self, frame: Frame) -> None:
        """Under the lock, after ``frame`` was tracked: the running tracks whose best sighting is now in
        it keep its crop (only a sighting of this frame can have become a best just now)."""
        if self.crop is None:
            return
        for t in self.tracker.running():
            kept = self._crops.get(t.track_id)
            if kept is None or kept[0] is not t.best:
                self._crops[t.track_id] = (t.best, self.crop(frame.image, t.best.box))

    def _ended(self, tracks: list[Track]) -> None:
        """Under the lock: keep the ended tracks; those with a frame of the pipeline wait in the outbox.
        The crops of tracks that ended without counting as defects go."""
        self.ended.extend(tracks)
        self._outbox.extend(t for t in tracks if best_frame_uid(t) is not None)
        if self._crops:
            waiting = {t.track_id for t in [*self.tracker.running(), *self._outbox]}
            self._crops = {k: v for k, v in self._crops.items() if k in waiting}

    def _release_crops(self, tracks: list[Track]) -> None:
        """Under the lock: the crops of tracks that go to the writer now wait for ``take_crop``."""
        for t in tracks:
            kept = self._crops.pop(t.track_id, None)
            if kept is not None:
                self._released[t.track_id] = kept[1]

    def take_crop(self, track: Track) -> bytes | None:
        """The crop of the best box of a track ``handed`` or ``release`` returned (once: it goes with the
        track to the writer); None without a ``crop`` function or for a box with no pixels in its frame."""
        with self._lock:
            return self._released.pop(track.track_id, None)

    def handed(self, frame_uids: Iterable[str]) -> list[Track]:
        """Inference worker, right after it handed these frames to the writer: the ended tracks whose
        best frame the writer has now (queued before them, so stored before them)."""
        with self._lock:
            self._handed.update(dict.fromkeys(frame_uids))
            ready = [t for t in self._outbox if best_frame_uid(t) in self._handed]
            if ready:
                self._outbox = [t for t in self._outbox if best_frame_uid(t) not in self._handed]
                self._release_crops(ready)
            if len(self._handed) > 4 * HANDED_KEEP:  # forget all but the recent and the best of active tracks
                live = {best_frame_uid(t) for t in [*self.tracker.running(), *self._outbox]}
                recent = list(self._handed)[-HANDED_KEEP:]
                self._handed = dict.fromkeys([u for u in self._handed if u in live] + recent)
        return ready

    def release(self) -> tuple[list[Track], list[Track]]:
        """At stop, after ``finish``: (the tracks whose best frame the writer has, those whose best frame
        never reached it: its inspection failed)."""
        with self._lock:
            ready = [t for t in self._outbox if best_frame_uid(t) in self._handed]
            lost = [t for t in self._outbox if best_frame_uid(t) not in self._handed]
            self._outbox = []
            self._release_crops(ready)
            self._crops.clear()  # the lost tracks' (their best frame never reached the writer)
        return ready, lost

    def view(self, max_active: int = 50) -> dict:
        """The camera's motion and tracks, for its state: counts, and the tracks in view now (at most
        ``max_active``) with their box in the last tracked frame."""
        mm = self.config.mm_per_px
        with self._lock:
            tracks = {"active": len(self.tracker.active), "ended": self.tracker.ended,
                      "frames_tracked": self.frames_tracked, "skipped": self.skipped, "spare": self.spare}
            ox, oy = self.tracker.offset
            in_view = [{"track_id": t.track_id, "class_name": t.class_name,
                        "confidence": round(t.best.confidence, 4), "score": round(t.score(), 3),
                        "frames_seen": t.hits,
                        "box": [round(v, 1) for v in shift(t.material_box, ox, oy)]}
                       for t in self.tracker.active[:max_active]]
        return {"motion": self.motion.view(mm), "tracks": tracks, "active_tracks": in_view, "mm_per_px": mm,
                "min_score": self.config.min_score}
