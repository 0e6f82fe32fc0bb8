"""A camera with tracking stores each physical defect once: one track and one defect row (on the best
frame's inspection, whose image and crop are kept) however many frames saw it; the frames keep their
inspection rows. Through the pipeline (tiny model, a folder of frames of a standing strip), the writer's
journal and replays, the MES API, stats, CSV and webhooks; a camera without tracking and a posted frame
are as before."""

from __future__ import annotations

import csv
import io
import math
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.pool import NullPool
from track_helpers import BEST, LEVELS, run_to_the_end, standing_strip, strip_camera

from app import images
from app.db.migrate import upgrade
from app.db.models import Defect, Inspection, Track, Webhook, WebhookDelivery
from app.db.session import Database
from app.detections import Detections
from app.errors import UserError
from app.ingest.alarms import AlarmMonitor
from app.ingest.camera_tracking import CameraTracking, Cropper, FrameRef
from app.ingest.config import TrackingConfig, parse_cameras
from app.ingest.frame_images import crop_jpeg
from app.ingest.journal import Journal
from app.ingest.sources import Frame, derive_frame_uid, file_identity
from app.ingest.track_records import track_record
from app.ingest.writer import DbWriter, Item, TrackItem
from app.inspection import CameraContext, inspect_frame
from app.retention import Pruner, RetentionPolicy, crop_paths
from app.reviewed_export import export_reviewed
from app.reviews import ReviewRequest, add_missed_defect, review_defect, set_frame_state
from app.settings import Settings


@pytest.fixture
def strip_frames(tmp_path: Path) -> Path:
    return standing_strip(tmp_path / "frames")


def frame_uid(folder: Path, k: int) -> str:
    return derive_frame_uid("strip", "file:" + file_identity(folder / f"{k:03d}.png"))


def counts(db: Database) -> tuple[int, int, int]:
    with db.session() as s:
        return tuple(int(s.scalar(select(func.count()).select_from(m)) or 0)  # type: ignore[return-value]
                     for m in (Inspection, Defect, Track))


def test_a_defect_seen_in_eight_frames_is_one_defect(database_url: str, tiny_model_path: Path,
                                                     strip_frames: Path, tmp_path: Path, client) -> None:
    db = Database(database_url)
    with db.session() as s:
        s.add(Webhook(url="http://127.0.0.1:9/hook", events=["inspection.ng"], secret="s"))
        s.commit()
    run_to_the_end(strip_camera(strip_frames, tracking=True), tiny_model_path, db, tmp_path / "ingest")
    assert counts(db) == (8, 1, 1)
    with db.session() as s:
        [defect] = s.scalars(select(Defect))
        [track] = s.scalars(select(Track))
        best = s.get(Inspection, defect.inspection_id)
        frames = list(s.scalars(select(Inspection)))
        [delivery] = s.scalars(select(WebhookDelivery))
    assert all(f.verdict == "NG" and f.defect_count == 1 for f in frames)  # the frames keep their counts
    assert defect.track_id == track.id and track.frames_seen == len(LEVELS)
    assert best.frame_uid == track.best_frame_uid == frame_uid(strip_frames, BEST)
    assert track.frame_uids == [frame_uid(strip_frames, k) for k in range(len(LEVELS))]
    assert (track.first_frame_uid, track.last_frame_uid) == (track.frame_uids[0], track.frame_uids[-1])
    assert (track.class_name, defect.class_name) == ("patches", "patches")
    data = tmp_path / "ingest"
    assert images.resolve(data, best.image_path).is_file()  # the best frame's image and crop are kept
    crop = images.relative_path(f"{best.frame_uid}-crop0", best.captured_at, ".jpg")
    assert images.resolve(data, crop).is_file()
    # one webhook event for the physical defect, not one per frame
    assert delivery.event == "inspection.ng" and delivery.payload["id"] == best.id
    assert [d["track_id"] for d in delivery.payload["defects"]] == [track.id]

    [item] = client.get("/api/v1/defects").json()["items"]
    assert (item["id"], item["track_id"], item["frames_seen"]) == (defect.id, track.id, len(LEVELS))
    x, y = item["position_mm"]
    assert x == pytest.approx(track.position_x_px * 0.5, abs=1e-3) and y > 0
    rows = list(csv.DictReader(io.StringIO(client.get("/api/v1/defects", params={"format": "csv"}).text)))
    assert [(r["track_id"], r["frames_seen"]) for r in rows] == [(str(track.id), str(len(LEVELS)))]
    detail = client.get(f"/api/v1/tracks/{track.id}").json()
    assert detail["frame_uids"] == track.frame_uids and detail["defect_id"] == defect.id
    assert [f["frame_uid"] for f in detail["frames"]] == track.frame_uids
    assert all(f["image_url"] == f"/api/v1/inspections/{f['inspection_id']}/image" for f in detail["frames"])
    assert detail["inspection_id"] == best.id and detail["review_status"] == "pending"
    assert detail["size_mm"] == [pytest.approx(v * 0.5, abs=1e-3) for v in detail["size_px"]]
    assert [t["id"] for t in client.get("/api/v1/tracks", params={"camera_id": "strip"}).json()["items"]] \
        == [track.id]
    assert client.get("/api/v1/tracks", params={"camera_id": "other"}).json()["items"] == []
    assert client.get("/api/v1/tracks/999999").status_code == 404
    now = datetime.now(UTC)
    stats = client.get("/api/v1/stats", params={"from": (now - timedelta(hours=1)).isoformat(),
                                                "to": (now + timedelta(hours=1)).isoformat()}).json()
    assert [(c["class_name"], c["defects"]) for c in stats["classes"]] == [("patches", 1)]

    # the same frames read again (a restart without checkpoints, a replayed file): nothing new
    run_to_the_end(strip_camera(strip_frames, tracking=True), tiny_model_path, db, tmp_path / "data-again")
    assert counts(db) == (8, 1, 1)
    db.dispose()


def stored_files(data_dir: Path) -> set[str]:
    """The files in the image store, as the rows name them (``images/Y/M/D/<name>``)."""
    return {p.relative_to(data_dir).as_posix() for p in (data_dir / "images").rglob("*") if p.is_file()}


def named_files(db: Database) -> tuple[set[str], dict[str, int]]:
    """The files the inspection rows name (frames and crops), and the crop count per frame uid."""
    with db.session() as s:
        rows = s.execute(select(Inspection.id, Inspection.frame_uid, Inspection.captured_at,
                                Inspection.image_path, Inspection.image_size, Inspection.crop_count,
                                Inspection.crop_size)).all()
    names = {r.image_path for r in rows if r.image_path}
    for r in rows:
        names.update(crop_paths(r))
    return names, {r.frame_uid: r.crop_count for r in rows if r.crop_count}


def crop_shape(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image.shape[:2]


@pytest.mark.parametrize("frames", [True, False], ids=["frames-and-crops", "crops-only"])
def test_a_tracked_camera_stores_the_crop_of_each_defect_once(database_url: str, tiny_model_path: Path,
                                                              strip_frames: Path, tmp_path: Path,
                                                              frames: bool) -> None:
    """One crop per physical defect, of its best box, on its best frame; no crop for the other boxes of
    the frames that saw it; the files on disk are exactly the files the rows name."""
    db = Database(database_url)
    cams = strip_camera(strip_frames, tracking=True, frames=frames)
    data = tmp_path / "ingest"
    run_to_the_end(cams, tiny_model_path, db, data)
    names, crops = named_files(db)
    with db.session() as s:
        [track] = s.scalars(select(Track))
    assert crops == {track.best_frame_uid: 1}
    assert stored_files(data) == names and len(names) == (len(LEVELS) + 1 if frames else 1)
    crop = next(n for n in names if n.endswith("-crop0.jpg"))
    assert track.best_frame_uid in crop
    height, width = crop_shape(data / crop)
    assert (width, height) == (math.ceil(track.x2) - int(track.x1), math.ceil(track.y2) - int(track.y1))
    db.dispose()


def test_a_simulated_line_keeps_a_crop_per_tracked_defect_and_no_file_without_a_row(
        database_url: str, tiny_model_path: Path, neu_sample: Path, tmp_path: Path) -> None:
    """A tracked camera on the moving simulated strip: as many crops as tracks, each on its track's best
    frame, and the image store holds exactly the files the rows name."""
    cams = parse_cameras(f"""
cameras:
  - id: sim
    source: "sim://neu-det?images={neu_sample / 'images'}&fps=30&width=160&height=120&realtime=0&seconds=4"
    images: ng
    tracking: {{enabled: true, looks: null}}
""")
    db = Database(database_url)
    data = tmp_path / "ingest"
    run_to_the_end(cams, tiny_model_path, db, data)
    names, crops = named_files(db)
    with db.session() as s:
        best = [uid for (uid,) in s.execute(select(Track.best_frame_uid))]
        inspected = int(s.scalar(select(func.count()).select_from(Inspection)) or 0)
    assert best and inspected > len(best)
    assert sum(crops.values()) == len(best) and set(crops) == set(best)
    assert stored_files(data) == names
    db.dispose()


def test_a_camera_without_tracking_stores_every_frames_defects(database_url: str, tiny_model_path: Path,
                                                               strip_frames: Path, tmp_path: Path,
                                                               client) -> None:
    db = Database(database_url)
    run_to_the_end(strip_camera(strip_frames, tracking=False), tiny_model_path, db, tmp_path / "ingest")
    assert counts(db) == (8, 8, 0)
    items = client.get("/api/v1/defects").json()["items"]
    assert len(items) == 8
    assert all(i["track_id"] is None and i["frames_seen"] is None and i["position_mm"] is None for i in items)
    db.dispose()


@pytest.mark.parametrize("weak_share", [None, 0.5], ids=["threshold-only", "weak-boxes"])
def test_a_defect_seen_only_below_the_threshold_is_kept_by_its_score(database_url: str, tiny_model_path: Path,
                                                                    strip_frames: Path, tmp_path: Path,
                                                                    weak_share: float | None) -> None:
    """Every box of the standing strip's defect lies below the camera's threshold (0.95). With
    ``weak_share`` its track takes them and, scored well in every frame, is one defect on its best
    frame, whose image is kept (``images: ng``) though the frames stay OK; without, nothing is stored
    but the frames."""
    weak = f", weak_share: {'null' if weak_share is None else weak_share}"
    cfg = parse_cameras(f"""
pipeline: {{conf_threshold: 0.9}}  # the model is called low enough for the weak boxes all the same
cameras:
  - id: strip
    source: "folder:{strip_frames}"
    images: ng
    thresholds: {{default: 0.95}}
    tracking: {{enabled: true, looks: null, min_score: 0.5{weak}}}
""")
    db = Database(database_url)
    data = tmp_path / "ingest"
    run_to_the_end(cfg, tiny_model_path, db, data)
    with db.session() as s:
        frames = list(s.scalars(select(Inspection).order_by(Inspection.captured_at)))
        defects = list(s.scalars(select(Defect)))
        tracks = list(s.scalars(select(Track)))
    assert len(frames) == len(LEVELS)
    assert all(f.verdict == "OK" and f.defect_count == 0 for f in frames)  # no box at the threshold
    if weak_share is None:
        assert (defects, tracks) == ([], [])
        assert all(f.image_path is None for f in frames)
        db.dispose()
        return
    [defect], [track] = defects, tracks
    best = next(f for f in frames if f.id == defect.inspection_id)
    assert best.frame_uid == track.best_frame_uid == frame_uid(strip_frames, BEST)
    assert track.frames_seen == len(LEVELS) and 0.5 < defect.confidence < 0.95
    assert best.image_path is not None and images.resolve(data, best.image_path).is_file()
    db.dispose()


def test_a_posted_frame_stays_its_own_part(client) -> None:
    ok, buf = cv2.imencode(".png", np.full((64, 64, 3), 230, np.uint8))
    r = client.post("/api/v1/inspections", files={"file": ("f.png", buf.tobytes(), "image/png")},
                    data={"camera_id": "strip", "part_id": "P-1"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["verdict"] == "NG" and len(body["defects"]) == body["defect_count"] == 1
    assert body["defects"][0]["track_id"] is None and body["defects"][0]["frames_seen"] is None
    assert client.get("/api/v1/tracks").json() == {"items": [], "truncated": False}


# -- the writer: a track travels like a frame, behind its best frame, exactly once ---------------------
CTX = CameraContext(camera_id="strip", line="L1")
T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def tracked_run(n: int = 6, defects: tuple[tuple[list[float], int], ...] = (([10, 10, 30, 40], 2),),
                crop: Cropper | None = None) -> tuple[list[Item], list[TrackItem]]:
    """``n`` frames of a standing strip with ``defects`` (box, the frame where it is seen most
    confidently; default one, best in frame 2), through the camera's tracking (keeping the crops of the
    best boxes with ``crop``); the frames' items and the ended tracks'."""
    cam = strip_camera(Path("/unused"), tracking=True).cameras[0]
    tracking = CameraTracking(TrackingConfig(enabled=True, mm_per_px=0.5, looks=None), crop=crop)
    texture = np.random.default_rng(1).integers(0, 255, (48, 64, 3)).astype(np.uint8)
    items = []
    for k in range(n):
        frame = Frame(texture, k, T0 + timedelta(seconds=k), float(k), t_stream=k / 10)
        tracking.on_captured(frame)
        assert tracking.should_inspect(frame)
        dets = Detections([box for box, _ in defects], [0.9 if k == best else 0.5 for _, best in defects],
                          [2] * len(defects), ("a", "b", "patches"))
        result = inspect_frame(texture, dets, model_version="t", context=CTX, source="stream",
                               captured_at=frame.captured_at, frame_uid=f"frame-{k}")
        result.image, result.tracked = None, True
        tracking.on_inspected(frame, result.detections, ref=FrameRef(result.frame_uid, result.captured_at))
        assert tracking.handed([result.frame_uid]) == []  # nothing ended yet
        items.append(Item(result))
    tracking.finish()
    ready, lost = tracking.release()
    assert lost == []
    return items, [TrackItem(track_record(t, cam), crop=tracking.take_crop(t)) for t in ready]


def wait_until(cond, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def test_a_track_is_journaled_behind_its_frame_and_replayed_once(tmp_path: Path) -> None:
    """The database away: frames and track go to the journal; back: replayed, the track once, also
    when the same journal is replayed again (a crash before its segment was deleted)."""
    folder = tmp_path / "db"
    url = f"sqlite:///{folder / 'inspect.db'}"
    upgrade(url)
    db = Database(url, poolclass=NullPool)
    frames, [track] = tracked_run()
    track.crop = b"\xff\xd8\xff" + bytes(3000)  # the crop of its best box travels in its journal record
    assert track.track.frames_seen == 6 and track.track.best_frame_uid == "frame-2"
    assert track.track.started_at == T0 and track.track.ended_at == T0 + timedelta(seconds=5)
    folder.rename(tmp_path / "away")
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=4, batch_ms=10,
                      retry_s=0.1)
    writer.start()
    writer.submit_many([*frames, track])
    wait_until(lambda: writer.journal.pending == 7)
    [segment] = writer.journal.sealed_segments()
    kept = tmp_path / "segment-copy.jsonl"
    shutil.copy(segment, kept)
    (tmp_path / "away").rename(folder)
    wait_until(lambda: writer.journal.pending == 0)
    writer.stop()
    assert counts(db) == (6, 1, 1) and writer.tracks_committed == 1
    names, crops = named_files(db)
    assert crops == {"frame-2": 1} and stored_files(tmp_path / "data") == names
    [crop] = names
    assert (tmp_path / "data" / crop).read_bytes() == track.crop

    shutil.copy(kept, tmp_path / "journal" / segment.name)  # the same records once more
    again = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=4, batch_ms=10)
    again.start()
    wait_until(lambda: again.journal.pending == 0)
    again.stop()
    assert counts(db) == (6, 1, 1) and again.tracks_committed == 0
    assert named_files(db) == (names, crops) and stored_files(tmp_path / "data") == names  # no second crop
    with db.session() as s:
        [defect] = s.scalars(select(Defect))
        assert s.get(Inspection, defect.inspection_id).frame_uid == "frame-2"
        assert defect.confidence == pytest.approx(0.9) and defect.track.frames_seen == 6
    db.dispose()


def test_each_track_keeps_the_crop_of_its_best_box_on_its_best_frame(database_url: str,
                                                                    tmp_path: Path) -> None:
    """Two defects in view, best in frames 1 and 4: each best frame gets one crop, of its own track's
    box (not of the other defect it shows too), and the store holds exactly the files the rows name."""
    db = Database(database_url)
    boxes = ([10, 10, 30, 40], [40, 5, 60, 30])
    frames, tracks = tracked_run(defects=((boxes[0], 1), (boxes[1], 4)), crop=crop_jpeg)
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=10, batch_ms=10)
    writer.start()
    writer.submit_many([*frames, *tracks])
    wait_until(lambda: writer.pending() == 0 and writer.tracks_committed == 2)
    writer.stop()
    names, crops = named_files(db)
    assert crops == {"frame-1": 1, "frame-4": 1} and stored_files(tmp_path / "data") == names
    for uid, (x1, y1, x2, y2) in (("frame-1", boxes[0]), ("frame-4", boxes[1])):
        [crop] = [n for n in names if uid in n and n.endswith("-crop0.jpg")]
        assert crop_shape(tmp_path / "data" / crop) == (y2 - y1, x2 - x1)
    db.dispose()


def test_a_track_whose_best_frame_never_came_is_set_aside(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    frames, [track] = tracked_run()
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=4, batch_ms=10)
    writer.start()
    writer.submit_many([f for f in frames if f.result.frame_uid != "frame-2"] + [track])
    wait_until(lambda: writer.pending() == 0 and writer.rejected == 1)
    writer.stop()
    assert counts(db) == (5, 0, 0)
    assert "frame-2" in (tmp_path / "journal" / "rejected.jsonl").read_text()
    db.dispose()


def test_retention_keeps_the_best_frame_as_long_as_its_track(database_url: str, tmp_path: Path) -> None:
    """Frames past their age limit go, but the best frame of a track (its defect's image) stays until
    its row goes, and then the track and its defect go with it."""
    db = Database(database_url)
    frames, [track] = tracked_run()
    for item in frames:
        item.result.image_bytes = b"\xff\xd8\xff" + bytes(2000)
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=10, batch_ms=10)
    writer.start()
    writer.submit_many([*frames, track])
    wait_until(lambda: writer.pending() == 0 and writer.tracks_committed == 1)
    writer.stop()
    policy = RetentionPolicy.from_settings(Settings(retention_frame_days=30, retention_crop_days=30,
                                                    retention_row_days=100, retention_reviewed_days=200))
    Pruner(db, tmp_path / "data", policy).run_once(now=T0 + timedelta(days=40))
    with db.session() as s:
        kept = {uid for uid, path in s.execute(select(Inspection.frame_uid, Inspection.image_path)) if path}
    assert kept == {"frame-2"} and images.resolve(tmp_path / "data", next(
        f.result.image_path for f in frames if f.result.frame_uid == "frame-2")).is_file()
    Pruner(db, tmp_path / "data", policy).run_once(now=T0 + timedelta(days=150))
    assert counts(db) == (0, 0, 0)
    db.dispose()


def test_a_defect_count_alarm_counts_physical_defects(db) -> None:
    """A tracked camera's frames add no defects to a defects-per-minute rule; its stored tracks do."""
    rules = parse_cameras("""
cameras:
  - {id: strip, source: "folder:/unused", tracking: {enabled: true, looks: null}}
alarms:
  - {id: density, camera: strip, defects_per_minute: 3}
""").alarms
    monitor = AlarmMonitor(rules, db)
    frames, [track] = tracked_run()
    assert monitor.observe([f.result for f in frames]) == []  # six frames, one box each: one defect
    assert monitor.observe_tracks([track.track] * 3) == []
    [alarm] = monitor.observe_tracks([track.track])
    assert (alarm.condition, alarm.value, alarm.camera_id) == ("defects_per_minute", 4, "strip")


def test_the_reviewed_export_leaves_out_frames_showing_defects_stored_elsewhere(database_url: str,
                                                                              tmp_path: Path) -> None:
    """Two defects in view, best in frames 1 and 4: each best frame shows the other defect without its
    row, so it would teach that defect as background; it goes in once an operator completed it."""
    db = Database(database_url)
    frames, tracks = tracked_run(defects=(([10, 10, 30, 40], 1), ([40, 5, 60, 30], 4)))
    for item in frames:
        item.result.image_bytes = b"\xff\xd8\xff" + bytes(2000)
    writer = DbWriter(db, Journal(tmp_path / "journal"), tmp_path / "data", batch_rows=10, batch_ms=10)
    writer.start()
    writer.submit_many([*frames, *tracks])
    wait_until(lambda: writer.pending() == 0 and writer.tracks_committed == 2)
    writer.stop()
    names = ("a", "b", "patches")
    with db.session() as s:
        for defect in s.scalars(select(Defect)):
            review_defect(s, defect, ReviewRequest("confirm"), "op", names)
        s.commit()
        with pytest.raises(UserError, match="nothing to export"):
            export_reviewed(s, tmp_path / "data", tmp_path / "out0", names)
        frame_1 = s.scalars(select(Inspection).where(Inspection.frame_uid == "frame-1")).one()
        add_missed_defect(s, frame_1, "patches", [40, 5, 60, 30], "op", names)  # the other defect, drawn
        set_frame_state(s, frame_1, "complete", "op")
        s.commit()
        report = export_reviewed(s, tmp_path / "data", tmp_path / "out1", names)
    assert (report.images["train"] + report.images["val"], report.skipped_partial) == (1, 1)
    assert report.boxes == 2
    db.dispose()
