"""GET /cameras: the state of the camera ingest, one entry per camera."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from app.schemas.common import LongName, PublicModel, UtcDatetime
from app.schemas.line import MqttStatePublic


class CameraPartPublic(PublicModel):
    """The part (coil, sheet, batch) under a camera, as the line said it: its frames carry its id, its
    tracked defects are placed from its start."""

    part_id: str
    since: UtcDatetime = Field(description="when the line said so (the service's clock)")
    set_by: str = Field(description="who said so: `api:<key name>`, `mqtt` or `opcua:<user>`")


class CameraCounters(PublicModel):
    """What a camera's ingest counts and last saw (``CameraState.snapshot``)."""

    id: str
    line: str | None
    station: str | None
    source: str = Field(description="the frame source, described")
    connected: bool
    finished: bool = Field(description="a finite source (a folder, a file) has run out")
    fps_in: float = Field(description="frames captured per second, over the last seconds")
    fps_out: float = Field(description="frames inspected per second, over the last seconds")
    captured: int
    inspected: int
    committed: int
    journaled: int
    dropped: int
    skipped: int = Field(0, description="frames captured and tracked by motion but not inspected (the "
                                        "camera's `tracking.looks`)")
    reconnects: int = Field(description="recoveries: frames flowing again after a failure")
    attempts: int = Field(0, description="connection attempts, the first one included")
    failures: dict[str, int] = Field(
        default_factory=dict, description="failures so far per class: refused, timeout, auth, not_found, "
                                          "not_video, no_device, decoder_crashed, stalled, ended, error")
    queue_depth: int
    last_error: str | None = Field(description="why the source is down now; null once frames flow again")
    error_kind: str | None = Field(None, description="the class of last_error (see failures)")
    last_error_at: UtcDatetime | None = Field(description="when the source last failed (kept after "
                                                          "recovery)")
    last_frame_at: UtcDatetime | None
    last_ng_inspection_id: int | None
    checkpoint: int | None = Field(None, description="a file or folder: the frame (file) position before "
                                   "which every frame is stored or journaled, kept for a restart; null for "
                                   "a live source")
    resumed_from: int | None = Field(None, description="a file or folder: the position this run started "
                                     "reading at (0: from the start; more: after the frames a previous run "
                                     "stored); null for a live source")
    part: CameraPartPublic | None = Field(None, description="the part under the camera now (PUT "
                                                            "/cameras/{camera_id}/part); null: none")


class TilesPublic(PublicModel):
    size: int
    overlap: int


class MotionPublic(PublicModel):
    """The material's motion, measured from the camera's frames (phase correlation)."""

    speed_px_s: float = Field(description="speed of the material in frame pixels per second (smoothed)")
    velocity_px_s: list[float] = Field(description="the same as [x, y] in frame pixels per second")
    stopped: bool = Field(description="slower than the camera's `tracking.stop_px_s`")
    speed_mm_s: float | None = Field(None, description="speed in mm/s with the `tracking.mm_per_px` "
                                                       "calibration; null without")


class TrackCounts(PublicModel):
    active: int = Field(description="defects in view now (open tracks)")
    ended: int = Field(description="tracks ended so far: physical defects seen and passed")
    frames_tracked: int = Field(description="inspected frames fed to the tracker")
    skipped: int = Field(0, description="frames tracked by motion, not inspected (`tracking.looks`)")
    spare: int = Field(0, description="frames between the looks inspected because the detector had room "
                                      "(`tracking.fill_idle`); part of `frames_tracked`")


class ActiveTrackPublic(PublicModel):
    """A defect in view now."""

    track_id: int = Field(description="the track's number on this camera since the pipeline started")
    class_name: str = Field(description="by vote over the frames it was seen in")
    confidence: float = Field(description="its best detection's confidence")
    score: float = Field(description="so far: the mean, over the inspected frames that had its place in "
                                     "view, of its box's confidence relative to its class threshold (0 "
                                     "where it was not boxed); with `tracking.min_score` the track is "
                                     "stored as a defect only if this reaches it when the track ends")
    frames_seen: int
    box: list[float] = Field(description="x1, y1, x2, y2 in the last tracked frame, pixels")


class CameraTrackingPublic(PublicModel):
    """A camera with `tracking.enabled`: its motion and tracks."""

    motion: MotionPublic
    tracks: TrackCounts
    active_tracks: list[ActiveTrackPublic] = Field(default_factory=list,
                                                   description="the defects in view now (at most 50)")
    mm_per_px: float | None = None
    min_score: float | None = Field(None, description="the camera's `tracking.min_score`: a track whose "
                                                       "score stays below it is not stored (null: every "
                                                       "track is)")


class CameraStorage(PublicModel):
    """A camera's part of the image store (as of the pruner's last pass) and its skipped images."""

    frames: int = Field(0, description="stored frame files")
    frame_bytes: int = Field(0, description="their bytes on disk")
    crops: int = Field(0, description="stored defect crop files")
    crop_bytes: int = Field(0, description="their bytes on disk")
    images_skipped: int = Field(0, description="images not written (low disk, failing writes) while "
                                               "their inspections were stored")


class StorageState(PublicModel):
    """The data folder's file system and the low-disk state (INSPECT_DISK_*)."""

    free_bytes: int
    total_bytes: int
    floor_bytes: int = Field(description="below this much free space new images are skipped")
    watermark_bytes: int = Field(description="below this much free space the oldest images are pruned")
    low_disk: bool = Field(description="free space is below the floor: new images are skipped")
    images_skipped: int = Field(description="images skipped since the start, all cameras")


class CameraPartSet(PublicModel):
    """PUT /cameras/{camera_id}/part: the part now under the camera."""

    model_config = ConfigDict(extra="forbid")

    part_id: LongName = Field(description="the part's id, as posted frames give it (1 to 128 characters, "
                                          "no control characters)")


class CameraPartState(PublicModel):
    """A camera's current part after PUT or DELETE /cameras/{camera_id}/part."""

    camera_id: str
    part: CameraPartPublic | None = Field(description="null: no part under the camera (the last one "
                                                      "ended)")


class CameraStatePublic(CameraCounters):
    buffer: str | None = Field(None, description="what a full queue does: block or drop-oldest")
    imgsz: int | None = Field(None, description="the longer side of the model input this camera is seen at")
    tiles: TilesPublic | None = None
    tracking: CameraTrackingPublic | None = Field(None, description="motion and tracks; only for cameras "
                                                                    "with `tracking.enabled`")
    storage: CameraStorage | None = None


class DatabaseState(PublicModel):
    """The database as the service's circuit breaker sees it (app.db.breaker)."""

    up: bool
    last_error: str | None = Field(description="why it is down, without hosts or ports; null while up")
    down_for_s: float | None = Field(None, description="seconds since the database was found away")


class JournalState(PublicModel):
    pending: int = Field(description="results waiting in the journal for the database")
    bytes: int
    replayed: int


class IngestStatusPublic(PublicModel):
    """The camera ingest; ``database`` and ``journal`` always in ``serve`` (uploads use them too),
    ``workers`` and ``batches`` only while the ingest runs."""

    running: bool
    reason: str | None = Field(description="why the ingest is not running")
    cameras: list[CameraStatePublic]
    database: DatabaseState | None = None
    journal: JournalState | None = None
    workers: int | None = None
    batches: int | None = None
    mqtt: MqttStatePublic | None = Field(None,
                                         description="the MQTT publisher, when INSPECT_MQTT_HOST is set")
    storage: StorageState | None = None
