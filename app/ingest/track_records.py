"""An ended track of a camera as the record that is stored (app.inspection.tracks.TrackRecord): class by
vote, the best sighting's frame, box and confidence, the frames it was seen in, its place and size on
the material, and a ``track_uid`` that is the same whenever the same frames are read again."""

from __future__ import annotations

from app.ingest.camera_tracking import FrameRef
from app.ingest.config import CameraConfig
from app.ingest.parts import Heading
from app.ingest.sources import derive_frame_uid
from app.ingest.tracking import Track
from app.inspection.tracks import TrackRecord


def _ref(ref: object) -> FrameRef:
    if not isinstance(ref, FrameRef):
        raise ValueError(f"a stored track needs the frame of each sighting, got {ref!r}")
    return ref


def track_uid(camera_id: str, first_frame_uid: str, first_box: tuple[float, ...]) -> str:
    """The track's idempotency key: its camera, its first frame and where it was first seen there (two
    defects first seen in one frame are two tracks; a replay or a re-read of the frames is one)."""
    where = ",".join(f"{v:.0f}" for v in first_box)
    return derive_frame_uid(camera_id, f"track:{first_frame_uid}:{where}")


def track_record(track: Track, cfg: CameraConfig, heading: Heading | None = None) -> TrackRecord:
    """The record of an ended track whose sightings carry ``FrameRef``s (the pipeline's). A track
    belongs to the part of its first frame and is placed from that part's start (``heading``: which
    way the material moves, ``MotionEstimator.heading``); without a part, from where the stream
    began."""
    s = track.summary()
    first, best, last = _ref(track.first_ref), _ref(track.best.ref), _ref(track.last_ref)
    position = track.position_px()
    if first.part is not None:
        position = first.part.place(position, heading)
    return TrackRecord(
        track_uid=track_uid(cfg.id, first.frame_uid, track.sightings[0].box), track_number=track.track_id,
        camera_id=cfg.id, line=cfg.line, station=cfg.station,
        part_id=None if first.part is None else first.part.part_id,
        class_id=s["class_id"], class_name=s["class_name"], confidence=float(track.best.confidence),
        frames_seen=s["frames_seen"], first_frame_uid=first.frame_uid, best_frame_uid=best.frame_uid,
        last_frame_uid=last.frame_uid, started_at=first.captured_at, ended_at=last.captured_at,
        box=[float(v) for v in track.best.box], position_px=[round(v, 2) for v in position],
        size_px=s["size_px"], mm_per_px=cfg.tracking.mm_per_px,
        frame_uids=list(dict.fromkeys(_ref(x.ref).frame_uid for x in track.sightings)))
