"""Tracking along the material: the tracker on synthetic detections (speed changes, stops, jitter,
missed frames), the truth score, the motion estimate and the simulator's truth ids."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from app.bench.pipeline import PipelineBenchOptions, camera_entries, track_figures
from app.db.session import Database
from app.detections import Detections
from app.inference import Engine
from app.ingest.camera_tracking import LOOK, SPARE, CameraTracking
from app.ingest.capture import CameraRunner
from app.ingest.config import CameraConfig, TrackingConfig, parse_cameras
from app.ingest.motion import MotionEstimator
from app.ingest.pipeline import Pipeline
from app.ingest.queues import FrameHub
from app.ingest.simulator import StripSimulator, TruthBox
from app.ingest.sources import Frame, Source
from app.ingest.tracking import MAX_SIGHTINGS, Sighting, Tracker, shift
from app.ingest.truth_score import failure_kinds, score_records
from app.inspection import CameraContext
from app.schemas.ingest import CameraStatePublic

W, H = 640, 480


def line_offsets(frames: int, seed: int = 0) -> list[float]:
    """The material's x offset per frame: spells of speeds between -30 px/frame and a stop."""
    rng = random.Random(seed)
    out, x, speed = [], 0.0, -12.0
    for i in range(frames):
        if i % 20 == 0:
            speed = 0.0 if rng.random() < 0.3 else -rng.uniform(1.0, 30.0)
        x += speed
        out.append(x)
    return out


def run_tracker(defects: list[tuple[str, float, float, float, float]], offsets: list[float], *,
                seen: float = 1.0, seen_stopped: float | None = None, jitter: float = 0.0, seed: int = 0,
                config: TrackingConfig | None = None) -> tuple[list, dict[int, list[TruthBox]]]:
    """Defects fixed on the material (id, x1, y1, x2, y2 in material px) filmed at ``offsets``; each
    visible defect is detected with probability ``seen`` (``seen_stopped`` while the line stands), its
    box shaken by ``jitter`` px."""
    rng = random.Random(seed)
    tracker = Tracker(config or TrackingConfig(enabled=True))
    ended, truth = [], {}
    for i, ox in enumerate(offsets):
        sightings, frame_truth = [], []
        moving = i == 0 or offsets[i] != offsets[i - 1]
        p_seen = seen if moving or seen_stopped is None else seen_stopped
        for did, x1, y1, x2, y2 in defects:
            fx1, fx2 = x1 + ox, x2 + ox
            vx1, vx2 = max(fx1, 0.0), min(fx2, float(W))
            if vx2 - vx1 < 0.3 * (x2 - x1):
                continue
            frame_truth.append(TruthBox(0, "scratches", vx1, y1, vx2, y2, 1.0, "t", did))
            if rng.random() < p_seen:
                j = [rng.uniform(-jitter, jitter) for _ in range(4)]
                cls = "scratches" if rng.random() < 0.8 else "crazing"
                sightings.append(Sighting(i, (vx1 + j[0], y1 + j[1], vx2 + j[2], y2 + j[3]), 0, cls,
                                          rng.uniform(0.3, 0.9), did))
        truth[i] = frame_truth
        ended += tracker.update(i, (ox, 0.0), sightings, (W, H), moving=moving)
    return ended + tracker.finish(), truth


def records(tracks: list) -> list[list]:
    return [[(s.frame_index, s.box) for s in t.sightings] for t in tracks]


def strip_defects(n: int, seed: int = 0) -> list[tuple[str, float, float, float, float]]:
    """``n`` defects along a strip, 40-160 px apart, in three lanes across it."""
    rng = random.Random(seed)
    out, x = [], float(W)
    for k in range(n):
        w, h = rng.uniform(20, 90), rng.uniform(30, 120)
        y = [20.0, 180.0, 340.0][k % 3]
        out.append((f"d{k}", x, y, x + w, y + h))
        x += rng.uniform(40, 160) / 3
    return out


def test_each_defect_becomes_one_track_through_speed_changes_and_stops() -> None:
    defects = strip_defects(40)
    offsets = line_offsets(900)
    assert min(offsets) < -(defects[-1][3] + 10)  # the whole strip passes through the view
    tracks, truth = run_tracker(defects, offsets, seen=0.7, jitter=3.0)
    score = score_records(records(tracks), truth)
    assert score["found_defects"] == 40
    assert score["exactly_one"] >= 0.95
    assert score["duplicates"] <= 0.05
    assert score["merges"] <= 0.05
    assert all(len({s.ref for s in t.sightings}) == 1 for t in tracks)  # no track mixes two defects
    with_recall = score_records(records(tracks), truth, passed={d[0] for d in defects[:20]} | {"never-seen"})
    assert with_recall["passed_defects"] == 21 and with_recall["recall"] == round(20 / 21, 3)
    assert with_recall["own_recall"] == round(20 / 21, 3)
    assert "recall" not in score


def test_a_stopped_line_ages_no_track() -> None:
    """A long stop with the detector missing the defect most of the time: still one track."""
    offsets = [-5.0 * i for i in range(60)] + [-300.0] * 300 + [-300.0 - 8 * i for i in range(1, 80)]
    tracks, truth = run_tracker([("a", 400.0, 100.0, 460.0, 200.0)], offsets, seen=0.9, seen_stopped=0.03,
                                seed=3)
    assert len(tracks) == 1
    assert score_records(records(tracks), truth)["exactly_one"] == 1.0


def test_track_summary_best_frame_vote_and_position() -> None:
    config = TrackingConfig(enabled=True, mm_per_px=0.5)
    tracker = Tracker(config)
    box = (300.0, 100.0, 340.0, 160.0)
    confs = [0.4, 0.9, 0.5, 0.6]
    names = ["crazing", "scratches", "scratches", "crazing"]
    for i, (conf, name) in enumerate(zip(confs, names, strict=True)):
        ox = -10.0 * i
        tracker.update(i, (ox, 0.0), [Sighting(i, (box[0] + ox, box[1], box[2] + ox, box[3]), 0, name, conf)],
                       (W, H))
    [track] = tracker.finish()
    summary = track.summary(config.mm_per_px)
    assert summary["best_frame"] == 1 and summary["confidence"] == 0.9
    assert summary["best_box"] == [290.0, 100.0, 330.0, 160.0]
    assert summary["class_name"] == "scratches"  # 2 votes each: the larger summed confidence wins
    assert summary["first_frame"] == 0 and summary["last_frame"] == 3 and summary["frames_seen"] == 4
    assert summary["position_px"] == [320.0, 130.0]  # on the material: the frame of the first frame
    assert summary["position_mm"] == [160.0, 65.0]
    assert summary["size_px"] == [40.0, 60.0]


def test_min_hits_leaves_out_one_frame_flickers() -> None:
    tracker = Tracker(TrackingConfig(enabled=True, min_hits=2))
    tracker.update(0, (0.0, 0.0), [Sighting(0, (10.0, 10.0, 50.0, 50.0), 0, "x", 0.5)], (W, H))
    for i in range(1, 14):
        tracker.update(i, (-1.0 * i, 0.0), [], (W, H))
    assert tracker.finish() == [] and tracker.ended == 0


def test_score_counts_duplicates_and_merges() -> None:
    row = [TruthBox(0, "s", x, 0, x + 10, 10, 1.0, "t", d) for x, d in ((0, "A"), (100, "B"), (200, "C"))]
    truth = {i: row for i in range(6)}
    a, b, c = (0.0, 0.0, 10.0, 10.0), (100.0, 0.0, 110.0, 10.0), (200.0, 0.0, 210.0, 10.0)
    recs = [[(0, a), (1, a)], [(2, a), (3, a)],  # A split in two records
            [(0, b), (1, b), (2, c)],  # B's record also covers C, which has no record of its own
            [(0, (500.0, 0.0, 510.0, 10.0))]]  # a false detection
    score = score_records(recs, truth)
    assert score["found_defects"] == 3 and score["false_records"] == 1
    assert score["exactly_one"] == pytest.approx(1 / 3, abs=1e-3)  # B
    assert score["duplicates"] == pytest.approx(1 / 3, abs=1e-3)  # A
    assert score["merges"] == pytest.approx(1 / 4, abs=1e-3)
    recall = score_records(recs, truth, passed={"A", "B", "C"})
    assert recall["recall"] == 1.0  # C is covered by B's record...
    assert recall["own_recall"] == round(2 / 3, 3)  # ...but no record stands for it
    detected = score_records(recs, truth, detected={"A", "B", "C", "D"})  # D: boxed, in no record
    assert detected["found_defects"] == 3 and detected["detected_defects"] == 4
    assert detected["exactly_one_of_detected"] == 0.25  # B; A has two records, C and D none
    assert detected["no_record_of_detected"] == 0.5


def test_failure_kinds_say_why_a_defect_is_not_one_record() -> None:
    """Split (two records at once), lost (one after the other, in the frame or at its border), and
    merges of a partial view at the border, of overlapping labels, of two labels apart in one box and of
    a track that jumped."""
    def tb(d: str, x1: float, y1: float, x2: float, y2: float) -> TruthBox:
        return TruthBox(0, "s", x1, y1, x2, y2, 1.0, "t", d)

    boxes = {"split": (100.0, 0.0, 140.0, 40.0), "lost": (200.0, 0.0, 240.0, 40.0),
             "edge_lost": (0.0, 100.0, 40.0, 140.0), "own": (300.0, 0.0, 340.0, 40.0),
             "overlapping": (320.0, 20.0, 360.0, 60.0), "far": (500.0, 300.0, 540.0, 340.0),
             "beside": (344.0, 0.0, 384.0, 40.0), "partial": (600.0, 200.0, 640.0, 240.0)}
    truth = {f: [tb(d, *b) for d, b in boxes.items()] for f in range(10)}
    b = boxes
    recs = [[(f, b["split"]) for f in range(6)], [(f, b["split"]) for f in range(3, 9)],
            [(f, b["lost"]) for f in (0, 1, 2)], [(f, b["lost"]) for f in (6, 7)],
            [(f, b["edge_lost"]) for f in (0, 1)], [(f, b["edge_lost"]) for f in (7, 8)]]
    assert failure_kinds(recs, truth, 640) == {"duplicate_split": 1, "duplicate_lost": 1,
                                               "duplicate_lost_edge": 1, "found_only_at_edge": 1}
    own = [(f, b["own"]) for f in range(6)]
    merged_labels = [[*own, (6, b["overlapping"])]]
    assert failure_kinds(merged_labels, truth, 640) == {"found_only_at_edge": 0, "merge_neighbour": 1}
    merged_at_edge = [[*own, (6, b["partial"])]]
    assert failure_kinds(merged_at_edge, truth, 640) == {"found_only_at_edge": 1, "merge_edge": 1}
    # one box over both "own" and "beside" (4 px apart) names "beside": the detector boxed the two as one
    both = (302.0, 0.0, 390.0, 40.0)
    boxed_together = [[*own, (6, both)]]
    assert failure_kinds(boxed_together, truth, 640) == {"found_only_at_edge": 0, "merge_boxed_together": 1}
    beside_alone = [[*own, (6, b["beside"])]]  # each box holds one of them: the track went over
    assert failure_kinds(beside_alone, truth, 640) == {"found_only_at_edge": 0, "merge_jump": 1}
    jumped = [[*own, (6, b["far"])]]
    assert failure_kinds(jumped, truth, 640) == {"found_only_at_edge": 0, "merge_jump": 1}
    # a defect boxed by an inspected frame whose boxes no record kept
    assert failure_kinds(jumped, truth, 640, detected={"own", "far", "lost"})["in_no_record"] == 1
    score = score_records(jumped, truth)
    assert score["merges"] == 1.0 and score["duplicates"] == 0.0 and score["found_defects"] == 2


def test_motion_follows_the_simulated_strip_and_sees_it_stop() -> None:
    sim = StripSimulator(width=320, height=240, speed=240.0, profile="varied", jitter=2.0, drift=6.0, seed=2)
    stop = next(i for i in range(40, 3000) if sim.speed_at(i) == 0 and sim.speed_at(i - 35) == 0)
    motion = MotionEstimator()
    first = stop - 200
    for i in range(first, stop + 1):
        sample = motion.update(sim.frame(i)[0], i / sim.fps)
    assert sample.stopped and motion.view()["stopped"]
    travelled = sim.offset(stop) - sim.offset(first)
    assert abs(-sample.offset_x - travelled) <= 0.02 * travelled + 4


def test_simulator_truth_names_each_defect_in_every_frame() -> None:
    sim = StripSimulator(speed=120.0)
    assert sim.offset(30) == 120  # the constant profile is as before
    ids = [{b.defect_id: b for b in sim.frame(i)[1]} for i in (0, 10)]
    shared = set(ids[0]) & set(ids[1])
    assert shared
    for d in shared:  # the same defect, moved with the strip
        assert ids[1][d].x2 == pytest.approx(ids[0][d].x2 - 40, abs=1) or ids[0][d].x2 >= W


def test_pieces_of_one_defect_in_a_frame_are_one_track() -> None:
    tracker = Tracker(TrackingConfig(enabled=True))
    for i in range(5):
        ox = -6.0 * i
        pieces = [Sighting(i, (300 + ox, 100, 340 + ox, 200), 0, "crazing", 0.6),
                  Sighting(i, (310 + ox, 150, 330 + ox, 190), 1, "inclusion", 0.4),  # inside the first
                  Sighting(i, (500 + ox, 100, 540 + ox, 200), 0, "crazing", 0.5)]  # another defect
        tracker.update(i, (ox, 0.0), pieces, (W, H))
    tracks = tracker.finish()
    assert sorted(t.hits for t in tracks) == [5, 5] and {t.class_name for t in tracks} == {"crazing"}


def test_looks_inspect_each_region_at_least_k_times(neu_sample: Path) -> None:
    """With ``looks: 2`` a fraction of the frames is inspected, yet every defect that passes through the
    view is at least half in sight in two inspected frames."""
    sim = StripSimulator(neu_sample / "images", width=320, height=240, speed=300.0, profile="varied", seed=4)
    tracking = CameraTracking(TrackingConfig(enabled=True, looks=2))
    looks: Counter[str] = Counter()
    whole, passed = set(), set()
    inspected = 0
    for i in range(600):
        image, truth = sim.frame(i)
        frame = Frame(image, i, datetime.now(UTC), i / sim.fps, truth=truth)
        tracking.on_captured(frame)
        whole.update(b.defect_id for b in truth if b.visible >= 0.99)
        passed.update(b.defect_id for b in truth if b.x1 <= 0)  # reached the far edge
        if tracking.should_inspect(frame):
            inspected += 1
            looks.update(b.defect_id for b in truth if b.visible >= 0.5)
    assert tracking.skipped == 600 - inspected and inspected < 200
    through = whole & passed
    assert len(through) >= 20 and all(looks[d] >= 2 for d in through)


def test_tracked_camera_reports_motion_and_inspects_where_needed(database_url: str, tiny_model_path: Path,
                                                                 neu_sample: Path, tmp_path: Path) -> None:
    """A simulator camera with tracking and ``looks``: its state shows the measured speed (px/s and, with
    the calibration, mm/s), the frames inspected and those skipped; every frame is accounted for."""
    source = (f"sim://neu-det?images={neu_sample / 'images'}&fps=30&width=160&height=120&realtime=false"
              "&speed=150&seconds=3")
    cfg = parse_cameras(f"""
cameras:
  - id: tracked
    source: "{source}"
    images: never
    tracking: {{enabled: true, mm_per_px: 0.5, looks: 2}}
""")
    db = Database(database_url)
    with Pipeline(cfg, Engine(tiny_model_path, intra_op_threads=1), db, tmp_path / "data") as pipeline:
        assert pipeline.wait_finished(60)
        [cam] = pipeline.snapshot()["cameras"]
    public = CameraStatePublic.model_validate(cam)
    assert public.tracking is not None
    motion = public.tracking.motion
    assert motion.speed_px_s == pytest.approx(150, rel=0.05) and not motion.stopped
    assert motion.speed_mm_s == pytest.approx(motion.speed_px_s * 0.5, rel=1e-3)
    assert cam["captured"] == 90 and cam["inspected"] + cam["skipped"] == 90
    assert 90 / 12 <= cam["inspected"] <= 90 / 4  # 160 px in view, inspected every <= 53 px of 5 px/frame
    assert cam["committed"] == cam["inspected"] == public.tracking.tracks.frames_tracked
    db.dispose()


def test_frames_inspected_out_of_order_are_tracked_in_capture_order(neu_sample: Path) -> None:
    """Workers finish batches in any order and the buffer may drop a frame: the tracks are those of
    the frames in capture order."""
    sim = StripSimulator(neu_sample / "images", width=320, height=240, speed=240.0, seed=1)
    in_order, shuffled = (CameraTracking(TrackingConfig(enabled=True, looks=None)) for _ in range(2))
    for tracking in (in_order, shuffled):
        frames = []
        for i in range(120):
            image, truth = sim.frame(i)
            frame = Frame(image, i, datetime.now(UTC), i / sim.fps, truth=truth)
            tracking.on_captured(frame)
            assert tracking.should_inspect(frame)
            frames.append(frame)
    detections = {f.index: Detections([[b.x1, b.y1, b.x2, b.y2] for b in f.truth or []],
                                      [0.5] * len(f.truth or []), [0] * len(f.truth or []), ["crazing"])
                  for f in frames}
    dropped = {17, 60}
    for f in frames:
        if f.index in dropped:
            in_order.forget(f)
        else:
            in_order.on_inspected(f, detections[f.index])
    batches = [frames[k:k + 4] for k in range(0, 120, 4)]
    random.Random(5).shuffle(batches)
    for batch in batches:
        for f in batch:
            if f.index in dropped:
                shuffled.forget(f)
            else:
                shuffled.on_inspected(f, detections[f.index])
    assert shuffled.frames_tracked == in_order.frames_tracked == 118
    summaries = [[t.summary() for t in [*tr.ended, *tr.finish()]] for tr in (in_order, shuffled)]
    assert summaries[0] == summaries[1] and len(summaries[0]) > 5


def test_the_truth_score_counts_what_the_inspected_boxes_found(neu_sample: Path) -> None:
    """A camera on simulator frames notes the true defects its inspected boxes at the class threshold
    name (not the weaker boxes it tracks with ``weak_share``), and the bench scores the records over
    them too: a defect boxed only weakly is not a find; one boxed but in no record counts against."""
    sim = StripSimulator(neu_sample / "images", width=320, height=240, speed=240.0, seed=1)
    tracking = CameraTracking(TrackingConfig(enabled=True, looks=None), thresholds={"crazing": 0.5})
    strong: set[str] = set()
    for i in range(60):
        image, truth = sim.frame(i)
        frame = Frame(image, i, datetime.now(UTC), i / sim.fps, truth=truth)
        tracking.on_captured(frame)
        assert tracking.should_inspect(frame)
        # every other true defect boxed at the threshold, the rest only weakly
        confidences = [0.6 if k % 2 == 0 else 0.3 for k in range(len(truth))]
        strong.update(b.defect_id for b, c in zip(truth, confidences, strict=True) if c >= 0.5)
        tracking.on_inspected(frame, Detections([[b.x1, b.y1, b.x2, b.y2] for b in truth], confidences,
                                                [0] * len(truth), ["crazing"]))
    tracking.finish()
    assert strong and set(tracking.detected) == strong
    figures = track_figures([SimpleNamespace(tracking=tracking)])
    truth_score = figures["truth"]
    assert truth_score["detected_defects"] == len(strong)
    assert truth_score["exactly_one_of_detected"] is not None and truth_score["exactly_one_of_detected"] > 0.5


def test_a_defect_under_a_standing_line_keeps_bounded_sightings() -> None:
    tracker = Tracker(TrackingConfig(enabled=True))
    for i in range(MAX_SIGHTINGS + 500):
        conf = 0.95 if i == MAX_SIGHTINGS + 100 else 0.5
        tracker.update(i, (0.0, 0.0), [Sighting(i, (100.0, 100.0, 150.0, 160.0), 2, "patches", conf)], (W, H),
                       moving=False)
    [track] = tracker.finish()
    assert track.hits == MAX_SIGHTINGS + 500 and len(track.sightings) == MAX_SIGHTINGS
    summary = track.summary()
    assert summary["best_frame"] == MAX_SIGHTINGS + 100 and summary["last_frame"] == MAX_SIGHTINGS + 499
    assert summary["frames_seen"] == MAX_SIGHTINGS + 500 and summary["class_id"] == 2


def test_camera_view_shows_the_defects_in_view(neu_sample: Path) -> None:
    sim = StripSimulator(neu_sample / "images", width=320, height=240, speed=150.0, seed=3)
    tracking = CameraTracking(TrackingConfig(enabled=True, mm_per_px=0.2, looks=None))
    for i in range(12):
        image, truth = sim.frame(i)
        frame = Frame(image, i, datetime.now(UTC), i / sim.fps, t_stream=i / sim.fps)
        tracking.on_captured(frame)
        assert tracking.should_inspect(frame)
        whole = [b for b in truth if b.visible == 1.0]
        tracking.on_inspected(frame, Detections([[b.x1, b.y1, b.x2, b.y2] for b in whole], [0.7] * len(whole),
                                                [b.class_id for b in whole], sim.names))
    view = CameraStatePublic.model_fields["tracking"].annotation.__args__[0].model_validate(tracking.view())
    assert view.tracks.active == len(view.active_tracks) >= len(whole) > 0
    # no class thresholds here: a box's strength is its confidence, 0.7 in every frame it was boxed in
    assert all(0 < t.score <= 0.7 + 1e-9 for t in view.active_tracks)
    assert max(t.score for t in view.active_tracks) == pytest.approx(0.7)
    shown = [t.box for t in view.active_tracks]  # also the defects leaving the view, where they are now
    for b in whole:  # each defect of the last frame where the last frame shows it
        assert any(max(abs(u - v) for u, v in zip(box, (b.x1, b.y1, b.x2, b.y2), strict=True)) <= 2.0
                   for box in shown)
    assert view.motion.speed_px_s == pytest.approx(150, rel=0.05)
    assert view.motion.speed_mm_s == pytest.approx(30, rel=0.05)


def feed(tracker: Tracker, frames: list[list[Sighting]], speed: float = -8.0) -> list:
    """Each frame's sightings (boxes given on the material, moved here into the frame at ``speed``
    px per frame); the tracks that ended, at the end of the stream too."""
    ended = []
    for i, pieces in enumerate(frames):
        ox = speed * i
        moved = [Sighting(i, (s.box[0] + ox, s.box[1], s.box[2] + ox, s.box[3]), s.class_id, s.class_name,
                          s.confidence, s.ref) for s in pieces]
        ended += tracker.update(i, (ox, 0.0), moved, (W, H))
    return ended + tracker.finish()


def piece(box: tuple[float, float, float, float], name: str = "inclusion", conf: float = 0.5,
          ref: object = None) -> Sighting:
    return Sighting(0, box, 0, name, conf, ref)


def test_two_boxes_of_one_class_on_one_defect_are_one_track() -> None:
    """The detector boxes one defect (material 300-380 x 100-260) twice in the same frames, a box and
    a taller one around it that overlap too little to be merged in the frame: one track, with every
    sighting, when the shorter one ends first."""
    whole, part = (300.0, 100.0, 380.0, 260.0), (302.0, 96.0, 378.0, 200.0)
    frames = [[piece(whole, conf=0.6, ref="whole"), *([piece(part, conf=0.8, ref="part")] if i < 12 else [])]
              for i in range(20)]
    tracker = Tracker(TrackingConfig(enabled=True, merge_overlap=1.0, max_missed=3))
    [track] = feed(tracker, frames)
    assert tracker.ended == 1 and tracker.started == 2
    assert track.hits == 32 and track.best.ref == "part" and track.best.confidence == 0.8
    assert [s.frame_index for s in track.sightings] == sorted(s.frame_index for s in track.sightings)
    assert track.first_frame == 0 and track.last_frame == 19 and track.first_ref == "whole"
    unfolded = feed(Tracker(TrackingConfig(enabled=True, merge_overlap=1.0, max_missed=3, fold_iou=1.01)),
                    frames)
    assert sorted(t.hits for t in unfolded) == [12, 20]  # as before folding: two records


def test_a_second_box_for_a_moment_is_folded_into_the_defects_track() -> None:
    """A second box on a defect for one frame starts a track of its own; the stream ends, and it is
    folded into the defect's track."""
    box = (200.0, 50.0, 260.0, 150.0)
    frames = [[piece(box)] for _ in range(10)] + [[piece(box), piece((205.0, 55.0, 262.0, 150.0))]]
    frames += [[piece((203.0, 52.0, 261.0, 149.0))] for _ in range(5)]
    tracks = feed(Tracker(TrackingConfig(enabled=True, merge_overlap=1.0)), frames)
    assert len(tracks) == 1 and tracks[0].hits == 17
    unfolded = feed(Tracker(TrackingConfig(enabled=True, merge_overlap=1.0, fold_iou=1.01, min_score=None)),
                    frames)  # every track a defect: the second box's one-frame track too
    assert sorted(t.hits for t in unfolded) == [1, 16]


def test_near_neighbours_of_one_class_stay_two_tracks() -> None:
    """Two defects of one class side by side (12 px apart across the strip, and two along it that
    overlap by 6 px): their footprints barely overlap, so no track is folded into the other."""
    a, b = (300.0, 100.0, 345.0, 290.0), (357.0, 130.0, 395.0, 280.0)
    c, d = (300.0, 300.0, 360.0, 360.0), (354.0, 298.0, 414.0, 362.0)
    frames = [[piece(a, ref="a"), piece(b, ref="b"), piece(c, ref="c"), piece(d, ref="d")] for _ in range(15)]
    tracks = feed(Tracker(TrackingConfig(enabled=True)), frames)
    assert sorted({s.ref for s in t.sightings}.pop() for t in tracks) == ["a", "b", "c", "d"]
    assert all(len({s.ref for s in t.sightings}) == 1 and t.hits == 15 for t in tracks)


def test_overlapping_tracks_of_two_classes_are_not_folded() -> None:
    box = (300.0, 100.0, 380.0, 260.0)
    frames = [[piece(box, "inclusion", ref="i"), *([piece((300.0, 100.0, 380.0, 200.0), "scratches", ref="s")]
                                                    if i < 10 else [])] for i in range(20)]
    tracks = feed(Tracker(TrackingConfig(enabled=True, merge_overlap=1.0)), frames)
    assert sorted(t.class_name for t in tracks) == ["inclusion", "scratches"]


def entering_defect_and_neighbour(config: TrackingConfig) -> list:
    """A defect enters at the right border: first a sliver of it, the box growing frame by frame
    until the whole defect is in view; a neighbour of its class follows 30 px behind it."""
    tracker = Tracker(config)
    defect, neighbour = (632.0, 200.0, 712.0, 260.0), (742.0, 195.0, 802.0, 265.0)  # on the material
    ended = []
    for i in range(40):
        ox = -6.0 * i
        seen = []
        for ref, (x1, y1, x2, y2) in (("defect", defect), ("neighbour", neighbour)):
            vx1, vx2 = x1 + ox, min(x2 + ox, float(W))
            if vx2 - vx1 >= 6:  # visible: cut at the border
                seen.append(Sighting(i, (vx1, y1, vx2, y2), 0, "patches", 0.5, ref))
        ended += tracker.update(i, (ox, 0.0), seen, (W, H))
    return ended + tracker.finish()


def test_a_defect_entering_the_view_is_one_track_as_its_box_grows() -> None:
    """Without the border band (the default) the track grows with the box: two tracks, the first with
    every sighting of the entering defect, from the sliver on."""
    tracks = entering_defect_and_neighbour(TrackingConfig(enabled=True))
    assert sorted(t.sightings[0].ref for t in tracks) == ["defect", "neighbour"]
    assert all(len({s.ref for s in t.sightings}) == 1 for t in tracks)
    first = next(t for t in tracks if t.sightings[0].ref == "defect")
    assert first.hits == 40 and first.sightings[0].box[2] - first.sightings[0].box[0] < 10


def test_boxes_at_the_border_the_material_crosses_are_partial_views() -> None:
    """With the border band the boxes cut by the entering border make a partial track, which lies
    where the whole views' track does and so is no record of its own: still one record per defect,
    from the first box clear of the border."""
    tracks = entering_defect_and_neighbour(TrackingConfig(enabled=True, border_px=4))
    assert sorted(t.sightings[0].ref for t in tracks) == ["defect", "neighbour"]
    assert all(len({s.ref for s in t.sightings}) == 1 for t in tracks)
    first = next(t for t in tracks if t.sightings[0].ref == "defect")
    at_border = sum(1 for i in range(40) if 712.0 - 6.0 * i >= W - 4)  # its box touches the band
    assert at_border == 13
    assert first.hits == 40 - at_border and first.sightings[0].box[2] < W - 4


def test_a_neighbour_boxed_only_at_the_border_is_no_record_of_its_own() -> None:
    """The detector boxes a defect whole while it crosses the view; as it leaves by the left border its
    box shrinks onto a smaller defect right behind it, which the detector never boxes on its own.
    Without the border band the leaving boxes continue the first defect's track: one record for two
    defects (a merge). With it they make a partial track on the first defect's place: no record."""
    big, small = (300.0, 100.0, 420.0, 200.0), (330.0, 120.0, 380.0, 190.0)
    frames = []
    for i in range(60):
        ox = -8.0 * i
        x1, x2 = big[0] + ox, big[2] + ox
        if x1 > 4:
            frames.append([Sighting(i, (x1, big[1], x2, big[3]), 0, "pitted_surface", 0.6, "big")])
        elif small[2] + ox > 10:  # the big one is leaving: its box is the small one behind it
            frames.append([Sighting(i, (0.0, small[1], small[2] + ox, small[3]), 0, "pitted_surface", 0.4,
                                    "small")])
        else:
            frames.append([])

    def run(config: TrackingConfig) -> list:
        tracker = Tracker(config)
        ended = [t for i, seen in enumerate(frames) for t in tracker.update(i, (-8.0 * i, 0.0), seen, (W, H))]
        return ended + tracker.finish()

    merged = run(TrackingConfig(enabled=True))
    assert [sorted({s.ref for s in t.sightings}) for t in merged] == [["big", "small"]]
    kept = run(TrackingConfig(enabled=True, border_px=4))
    assert [sorted({s.ref for s in t.sightings}) for t in kept] == [["big"]]


def test_a_defect_boxed_only_at_the_border_is_still_recorded() -> None:
    """A defect the detector boxes only while it is cut by the border (nothing whole lies there): its
    partial track is its record."""
    tracker = Tracker(TrackingConfig(enabled=True, border_px=4, min_score=None))
    ended = []
    for i in range(30):
        ox = -10.0 * i
        x1, x2 = 600.0 + ox, 680.0 + ox
        seen = [Sighting(i, (x1, 50.0, min(x2, float(W)), 90.0), 0, "crazing", 0.5, "edge")] if x2 > W else []
        ended += tracker.update(i, (ox, 0.0), seen, (W, H))
    [track] = ended + tracker.finish()
    assert {s.ref for s in track.sightings} == {"edge"} and track.hits == 4


def test_a_track_does_not_go_over_to_the_defect_next_to_it() -> None:
    """A small defect and, 2 px beside it, a long scratch of its class: the detector sees the small one
    for ten frames, then misses it and sees only the scratch, whose centre lies close enough to the
    small one's for the distance gate. A defect does not move on the material, so the scratch is a
    track of its own; without the place check the small defect's track goes over to it."""
    small, long = (300.0, 100.0, 320.0, 120.0), (322.0, 40.0, 352.0, 180.0)
    frames = [[piece(small, ref="small")] if i < 10 else [piece(long, ref="long")] for i in range(20)]
    tracks = feed(Tracker(TrackingConfig(enabled=True)), frames)
    assert sorted(tuple(sorted({s.ref for s in t.sightings})) for t in tracks) == [("long",), ("small",)]
    [jumped] = feed(Tracker(TrackingConfig(enabled=True, min_place_overlap=0)), frames)
    assert {s.ref for s in jumped.sightings} == {"small", "long"}


def looks_of(tracking: CameraTracking, frames: list[Frame], room) -> list[str | None]:
    """What ``should_inspect`` says of each frame, ``room(i)`` telling whether the detector has room."""
    out = []
    for i, frame in enumerate(frames):
        tracking.on_captured(frame)
        out.append(tracking.should_inspect(frame, detector_has_room=room(i)))
    return out


def test_fill_idle_inspects_between_the_looks_only_while_the_detector_has_room(neu_sample: Path) -> None:
    """``fill_idle``: a frame between the looks goes to the detector when it has room and the line
    moves, as a spare; the looks themselves come on the same frames as without it (a spare that is
    pushed out of the queue costs no region its looks), and a standing line gets no spare."""
    sim = StripSimulator(neu_sample / "images", width=320, height=240, speed=300.0, profile="varied", seed=4)
    frames = [Frame(sim.frame(i)[0], i, datetime.now(UTC), i / sim.fps) for i in range(400)]
    plain = looks_of(CameraTracking(TrackingConfig(enabled=True, looks=2)), frames, lambda i: True)
    filled = CameraTracking(TrackingConfig(enabled=True, looks=2, fill_idle=True))
    every_third = looks_of(filled, frames, lambda i: i % 3 == 0)
    assert SPARE not in plain and plain.count(LOOK) < 100
    looks = [k for k, v in enumerate(plain) if v == LOOK]
    assert [k for k, v in enumerate(every_third) if v == LOOK] == looks
    stopped = {k for k, f in enumerate(frames) if f.motion is not None and f.motion.stopped}
    assert len(stopped) > 20  # the varied profile stands still now and then
    spares = {k for k, v in enumerate(every_third) if v == SPARE}
    assert spares == {k for k, v in enumerate(plain) if v is None and k % 3 == 0 and k not in stopped}
    assert filled.spare == len(spares) and filled.skipped == 400 - every_third.count(LOOK) - len(spares)


class DrainingSource(Source):
    """A strip simulator whose reads stand in for a detector that takes the queued frames every
    ``every`` reads, so the capture loop runs in the test's thread, frame by frame."""

    live = True

    def __init__(self, neu_sample: Path, hub: FrameHub, frames: int, every: int) -> None:
        self.sim = StripSimulator(neu_sample / "images", width=160, height=120, speed=150.0, seed=2)
        self.hub, self.frames, self.every, self.i = hub, frames, every, 0
        self.taken: list = []

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        if self.i % self.every == 0:
            self.taken += self.hub.get_batch(1000, 0, idle_timeout=0)
        if self.i >= self.frames:
            return None
        index, self.i = self.i, self.i + 1
        return Frame(self.sim.frame(index)[0], index, datetime.now(UTC), index / self.sim.fps)

    def close(self) -> None:
        pass


def drained_run(neu_sample: Path, fill_idle: bool) -> tuple[CameraRunner, list, list[int]]:
    """A camera with ``looks: 2`` and a one-frame drop-oldest queue over 300 frames whose detector takes
    the queued frames every third read: the runner, the jobs taken, the frames sent as spares."""
    hub = FrameHub()
    cam = CameraConfig.model_validate({"id": "c", "source": "x", "queue_size": 1, "buffer": "drop-oldest",
                                       "tracking": {"enabled": True, "looks": 2, "fill_idle": fill_idle}})
    source = DrainingSource(neu_sample, hub, frames=300, every=3)
    runner = CameraRunner(cam, source, hub, CameraContext(camera_id="c"))
    sent_spares: list[int] = []
    put = hub.put

    def recording_put(camera_id: str, job, timeout: float | None = None) -> bool:
        if job.spare:
            sent_spares.append(job.frame.index)
        return put(camera_id, job, timeout)

    hub.put = recording_put  # type: ignore[method-assign]
    runner._capture()
    source.taken += hub.get_batch(1000, 0, idle_timeout=0)
    return runner, source.taken, sent_spares


def test_a_spare_frame_pushed_out_of_the_queue_is_skipped_not_dropped(neu_sample: Path) -> None:
    """Spares go in while the queue is empty; one still waiting gives way to the next look and counts
    as skipped. No look is dropped or moved (the same frames as without ``fill_idle``), and every
    captured frame is inspected or skipped."""
    plain, plain_taken, _ = drained_run(neu_sample, fill_idle=False)
    runner, taken, sent_spares = drained_run(neu_sample, fill_idle=True)
    snap, tracking = runner.state.snapshot(), runner.tracking
    assert tracking is not None
    looks = [j.frame.index for j in taken if not j.spare]
    assert looks == [j.frame.index for j in plain_taken] and plain.state.snapshot()["dropped"] == 0
    pushed_out = set(sent_spares) - {j.frame.index for j in taken if j.spare}
    assert len(pushed_out) > 5 and len(sent_spares) > 50
    assert snap["captured"] == 300 and snap["dropped"] == 0
    assert len(taken) + snap["skipped"] == 300 and snap["skipped"] == tracking.skipped
    assert tracking.spare == len(sent_spares) - len(pushed_out) == sum(j.spare for j in taken)


def scored_run(looks_every: int, config: TrackingConfig) -> list:
    """Two defects crossing the view at 4 px a frame (in view for 140 frames), inspected every
    ``looks_every``-th frame: ``faint`` boxed in 3 of 4 inspected frames at 0.6 of its class threshold,
    ``spot`` (texture the detector boxes for a moment) boxed once, strongly, on the 130th frame of its
    way through the view."""
    tracker = Tracker(config)
    faint, spot = (560.0, 100.0, 620.0, 160.0), (560.0, 300.0, 620.0, 360.0)
    out = []
    for k, i in enumerate(range(0, 200, looks_every)):
        ox = -4.0 * i
        sightings = []
        if k % 4 != 3 and faint[0] + ox >= 0:
            sightings.append(Sighting(i, shift(faint, ox, 0.0), 0, "scratches", 0.3, "faint", strength=0.6))
        if i == 130:  # near the end of its way through the view
            sightings.append(Sighting(i, shift(spot, ox, 0.0), 0, "scratches", 0.9, "spot", strength=1.8))
        out += tracker.update(i, (ox, 0.0), sightings, (W, H))
    return out + tracker.finish()


def test_min_score_keeps_a_faint_defect_and_leaves_out_a_lucky_spot() -> None:
    """By their best box both are defects; by the score (the mean strength over the looks that had their
    place in view, the looks before the first box included) the faint defect seen in most looks is, the
    spot boxed once in a long way through the view is not, whether every frame or every 10th is
    inspected."""
    plain = scored_run(1, TrackingConfig(enabled=True, looks=None, min_score=None))
    assert sorted(t.sightings[0].ref for t in plain) == ["faint", "spot"]
    for every in (1, 10):
        tracks = scored_run(every, TrackingConfig(enabled=True, looks=None, min_score=0.3))
        assert [t.sightings[0].ref for t in tracks] == ["faint"], every
        [faint] = tracks
        assert faint.score() == pytest.approx(0.45, abs=0.05)  # 0.6 in 3 looks of 4
    spot = next(t for t in plain if t.sightings[0].ref == "spot")
    assert spot.hits == 1 and spot.in_view > 130  # its place was in view from the first frame on
    assert spot.score() == pytest.approx(1.8 / spot.in_view)


def test_the_looks_of_a_stop_are_one_view_for_the_score() -> None:
    """A defect boxed in every look while the line moves and missed in all 300 looks while it stands
    (the detector sees the same picture each time) is still a defect: the stop's looks are one view
    of its place, not 300 misses; had it been boxed in some of them, the strongest box would count."""
    tracker = Tracker(TrackingConfig(enabled=True, looks=None))  # the default min_score
    defect = (500.0, 100.0, 560.0, 160.0)  # on the material
    ended, frame, moving_looks = [], 0, 0

    def look(ox: float, seen: bool, moving: bool) -> None:
        nonlocal frame
        boxes = [Sighting(frame, shift(defect, ox, 0.0), 0, "scratches", 0.5, "defect", strength=1.0)]
        ended.extend(tracker.update(frame, (ox, 0.0), boxes if seen else [], (W, H), moving=moving))
        frame += 1

    for k in range(4):
        look(-40.0 * k, seen=True, moving=True)
        moving_looks += 1
    for _ in range(300):
        look(-120.0, seen=False, moving=False)
    ox = -120.0
    while defect[2] + ox > 0:
        ox -= 40.0
        look(ox, seen=defect[0] + ox >= 0, moving=True)
        moving_looks += defect[0] + ox >= 0
    [track] = ended + tracker.finish()
    assert track.hits == moving_looks and track.in_view >= moving_looks + 1
    assert track.score() == pytest.approx(moving_looks / track.in_view) and track.score() > 0.8


def test_a_sightings_strength_is_its_confidence_against_the_class_threshold() -> None:
    tracking = CameraTracking(TrackingConfig(enabled=True, looks=None, min_score=0.5),
                              thresholds={"scratches": 0.6, "crazing": 0.4})
    assert tracking.strength("scratches", 0.3) == pytest.approx(0.5)
    assert tracking.strength("crazing", 0.6) == pytest.approx(1.5)
    assert tracking.strength("inclusion", 0.7) == pytest.approx(0.7)  # no threshold: the confidence


def test_weak_share_needs_min_score() -> None:
    with pytest.raises(ValueError, match="weak_share needs min_score"):
        TrackingConfig(enabled=True, weak_share=0.5, min_score=None)
    assert TrackingConfig(enabled=True, weak_share=0.5, min_score=0.4).weak_share == 0.5
    # the defaults score tracks and take weak boxes; `min_score: null` alone turns both off
    assert (TrackingConfig().min_score, TrackingConfig().weak_share) == (0.4, 0.5)
    assert TrackingConfig(min_score=None).weak_share is None


def test_bench_cameras_take_the_score_keys() -> None:
    """``bench pipeline --min-score --weak-share`` gives its cameras those tracking keys."""
    options = PipelineBenchOptions(model="m.onnx", source="sim://neu-det", cameras=2, tracking=True, looks=2,
                                   min_score=0.4, weak_share=0.5)
    cameras = parse_cameras(yaml.safe_dump({"cameras": camera_entries(options)})).cameras
    keys = [(c.tracking.min_score, c.tracking.weak_share, c.tracking.looks) for c in cameras]
    assert keys == [(0.4, 0.5, 2)] * 2


@pytest.mark.parametrize(("extra", "expected"), [({}, (0.4, 0.5)), ({"every_track": True}, (None, None)),
                                                 ({"min_score": 0.6}, (0.6, 0.5))],
                         ids=["camera-defaults", "every-track", "min-score-only"])
def test_bench_cameras_keep_the_camera_score_defaults_unless_told(extra: dict, expected: tuple) -> None:
    """Without ``--min-score``/``--weak-share`` a bench camera scores its tracks as a camera does by
    default; ``--every-track`` makes every track a defect (both keys null)."""
    options = PipelineBenchOptions(model="m.onnx", source="sim://neu-det", tracking=True, looks=2, **extra)
    [camera] = parse_cameras(yaml.safe_dump({"cameras": camera_entries(options)})).cameras
    assert (camera.tracking.min_score, camera.tracking.weak_share) == expected
