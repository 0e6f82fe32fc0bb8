"""The cameras file (INSPECT_CAMERAS_FILE): cameras, lines and pipeline tuning in one YAML document.

Every model rejects unknown keys; a bad key or value stops start-up with the file, the line and the
key named, e.g. ``cameras.yaml:7: cameras[0].buffer: Input should be 'block' or 'drop-oldest'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.errors import ConfigError
from app.image_policy import ImagePolicy

BufferPolicy = Literal["block", "drop-oldest"]


class CamerasConfigError(ConfigError):
    """The cameras file cannot be used; the message names the file, line and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulatorConfig(_Strict):
    """A production-line simulator: a steel strip tiled from dataset images scrolling past the camera."""

    images: str | None = Field(
        None, description="folder of dataset images (YOLO labels in ../labels); empty: `INSPECT_SIM_IMAGES`, "
                    "else the NEU-DET images of the shared datasets folder")
    fps: Annotated[float, Field(gt=0, le=1000, description="frames per second")] = 30.0
    width: Annotated[int, Field(ge=32, le=8192, description="frame width in pixels")] = 640
    height: Annotated[int, Field(ge=32, le=8192, description="frame height in pixels")] = 480
    speed: Annotated[float, Field(ge=0, description="strip speed, pixels per second")] = 120.0
    seed: int = Field(0, description="seed of the order in which dataset images tile the strip")
    profile: Literal["constant", "varied"] = Field(
        "constant", description="`constant`: always `speed`; `varied`: a new speed every 1-4 s between "
                                "a stop and `speed` (seeded)")
    jitter: Annotated[float, Field(ge=0, le=100, description="the picture shakes along the strip by up to "
                                                             "this many pixels per frame")] = 0.0
    drift: Annotated[float, Field(ge=0, le=200, description="the strip sways sideways by up to this many "
                                                            "pixels (a 7 s sine)")] = 0.0
    defect_rate: Annotated[float, Field(
        ge=0, le=1,
        description="share of the strip's tiles (one dataset image each, seeded) that carry their labelled "
                    "defects; the others are clean strip, steel texture cut from outside the labelled "
                    "boxes. 1: every tile is a dataset image (every frame NG); a plant-like mix: 0.04")] = 1.0
    seconds: Annotated[float | None, Field(gt=0, description="end of stream after this much line time; "
                                                             "empty: endless")] = None
    realtime: bool = Field(True, description="pace frames at `fps` (a live camera) or as fast as they are "
                                             "read (a file)")
    dropout_every: Annotated[int | None, Field(ge=1, description="a simulated cable pull every N "
                                                                "frames")] = None
    dropout_s: Annotated[float, Field(ge=0, description="how long the camera stays away after a pull")] = 1.0


class TrackingConfig(_Strict):
    """Tracking along the material: the camera's motion measured from its frames, and each physical defect
    followed across frames as one track (app.ingest.tracking)."""

    enabled: bool = Field(False, description="follow defects across frames and store each physical defect "
                                             "once (a track, and one defect row on its best frame); "
                                             "`false`: every frame's boxes are stored as its defects")
    mm_per_px: Annotated[float | None, Field(gt=0, description="calibration: millimetres of material per "
                                                               "frame pixel (speeds and positions in mm); "
                                                               "empty: pixels only")] = None
    stop_px_s: Annotated[float, Field(ge=0, description="slower than this (the net shift over the last "
                                                        "second) the line counts as stopped, px/s")] = 5.0
    min_iou: Annotated[float, Field(ge=0, le=1, description="a detection continues a track when its box "
                                                            "overlaps the track's predicted box by at least "
                                                            "this (IoU, or half the share of the smaller "
                                                            "box inside the other) ...")] = 0.2
    max_distance: Annotated[float, Field(ge=0, description="... or its centre lies within this many box "
                                                           "sizes (the larger side) of the predicted "
                                                           "centre")] = 0.5
    merge_overlap: Annotated[float, Field(gt=0, le=1, description="boxes of one frame overlapping by this "
                                                                  "share of the smaller box are one defect "
                                                                  "(pieces of a texture defect); 1: never "
                                                                  "merged")] = 0.5
    min_place_overlap: Annotated[float, Field(ge=0, le=1, description="a defect does not move on the "
                                                                      "material: a detection continues a "
                                                                      "track only where its box, carried "
                                                                      "onto the material, overlaps the "
                                                                      "track's footprint there by this "
                                                                      "share of the smaller box (else it "
                                                                      "is another defect next to it); 0: "
                                                                      "no such check")] = 0.2
    fold_iou: Annotated[float, Field(gt=0, le=1.01, description="two tracks of one class whose footprints "
                                                                "on the material (the median of their "
                                                                "boxes) overlap by this IoU are one defect "
                                                                "(the detector's second box for it, or its "
                                                                "track lost and begun anew): the one that "
                                                                "ends first is folded into the other; "
                                                                "above 1: never")] = 0.4
    max_missed: Annotated[int, Field(ge=0, le=1000, description="inspected frames, while the line moves, a "
                                                                "track may go unseen before it ends; it "
                                                                "ends anyway once it leaves the frame (the "
                                                                "detector misses a defect for a while; a "
                                                                "track is where its defect is on the "
                                                                "material, so a long memory is "
                                                                "safe)")] = 100
    min_visible: Annotated[float, Field(ge=0, le=1, description="a track ends once less than this fraction "
                                                                "of its predicted box is inside the "
                                                                "frame")] = 0.3
    border_px: Annotated[float, Field(ge=0, le=100, description="a box within this many pixels of a border "
                                                            "the material enters or leaves the view by "
                                                            "shows its defect in part (often boxed with the "
                                                            "defect next to it): such boxes are tracked "
                                                            "apart, and their track counts as a defect only "
                                                            "where no track of whole views lies on its "
                                                            "place on the material; 0: every box is tracked "
                                                            "alike (docs/benchmarks.md, \"Partial views at "
                                                            "the border\")")] = 0.0
    min_hits: Annotated[int, Field(ge=1, le=1000, description="frames a track must be seen in to count as a "
                                                              "defect")] = 1
    min_score: Annotated[float | None, Field(
        gt=0, le=10, description="a track counts as a defect when its score reaches this: the mean, over "
                                 "the inspected frames that had its place in view (the looks at a "
                                 "standing line count once, with their strongest box), of its box's "
                                 "confidence relative to its class threshold (1: just at it; 0 in a "
                                 "frame where it was not seen). Unlike its best box, the score does not "
                                 "grow with how often the detector looks, so `looks` and every frame "
                                 "keep more nearly the same defects, and a spot boxed once in a long run "
                                 "of frames is not kept; `null`: every track seen in `min_hits` frames "
                                 "counts (docs/benchmarks.md, \"Tracks kept by their score\")")] = 0.4
    weak_share: Annotated[float | None, Field(
        gt=0, lt=1, description="with `min_score`: boxes from this share of their class threshold up to it "
                                "also continue and start tracks and count toward their score (a defect "
                                "the detector sees faintly in most looks is found); they are not a "
                                "frame's defects, and a frame holding one keeps its image as an NG frame "
                                "would (it may be a track's best frame); `null`: only boxes at the "
                                "threshold are tracked (and so when `min_score` is `null`)")] = 0.5
    looks: Annotated[int | None, Field(
        ge=1, le=100, description="detector time where it is needed: each region of the material is "
                                  "inspected at least this many times on its way through the view, the "
                                  "frames in between are captured, measured for motion and counted "
                                  "(`skipped`), not inspected; `null`: every frame is inspected")] = 2
    fill_idle: bool = Field(False, description="with `looks`: between the looks, a frame also goes to the "
                                               "detector while the camera's queue is empty (the detector "
                                               "has room), so spare detector time inspects more of the "
                                               "material: defect-level recall near that of every frame "
                                               "where the machine has the time, and no frame a look needs "
                                               "waits behind more than one extra frame (an extra frame "
                                               "pushed out of a full queue counts as skipped, not "
                                               "dropped); nothing extra while the line stands. More "
                                               "inspections also give each track more of the detector's "
                                               "unstable boxes (docs/benchmarks.md, \"Tracking along the "
                                               "material\")")
    idle_inspect_s: Annotated[float, Field(gt=0, description="with `looks`: a line that stands still is "
                                                             "inspected once every this many seconds")] = 1.0

    @model_validator(mode="before")
    @classmethod
    def _no_score_no_weak_boxes(cls, data: Any) -> Any:
        # `min_score: null` alone: every track counts, and only boxes at the threshold are tracked
        if isinstance(data, dict) and "min_score" in data and data["min_score"] is None:
            return {"weak_share": None, **data}
        return data

    @model_validator(mode="after")
    def _weak_needs_score(self) -> TrackingConfig:
        if self.weak_share is not None and self.min_score is None:
            raise ValueError("weak_share needs min_score: boxes below the threshold count only toward a "
                             "track's score")
        return self


class ReconnectConfig(_Strict):
    """Back-off between reconnect attempts of a lost or stalled source."""

    initial_s: Annotated[float, Field(gt=0, description="first wait before reconnecting, seconds")] = 0.5
    max_s: Annotated[float, Field(gt=0, description="longest wait, seconds (>= initial_s); the wait starts "
                                                    "again at initial_s once frames flow")] = 2.0
    multiplier: Annotated[float, Field(ge=1, description="each further wait is the last one times "
                                                          "this")] = 2.0

    @model_validator(mode="after")
    def _order(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be >= initial_s")
        return self


HwAccel = Literal["none", "vaapi", "qsv", "nvdec", "jetson"]


class DecoderConfig(_Strict):
    """The FFmpeg decoder process of a network stream or capture device (files are read in-process)."""

    transport: Literal["tcp", "udp"] = Field(
        "tcp", description="RTSP transport: `tcp` (interleaved, survives packet loss and NAT) or `udp` "
                           "(lower latency on a clean LAN; lost packets are lost picture)")
    open_timeout_s: Annotated[float | None, Field(
        gt=0, description="connecting until the first frame may take this long, seconds, before the "
                          "decoder is restarted; empty: `stall_timeout_s` + `analyze_s`")] = None
    analyze_s: Annotated[float, Field(
        ge=0, le=10, description="how long FFmpeg studies a new stream before decoding, seconds: shorter "
                                 "is a faster (re)connect; 0 suits cameras that announce their stream "
                                 "(RTSP SDP with parameter sets)")] = 0.5
    hwaccel: HwAccel = Field(
        "none", description="hardware decoding: `none` (CPU, works everywhere), `vaapi` (Intel/AMD), `qsv` "
                            "(Intel Quick Sync), `nvdec` (NVIDIA CUDA), `jetson` (NVIDIA Jetson `nvmpi` "
                            "decoders, needs an FFmpeg built with them)")
    hwaccel_device: str | None = Field(
        None, description="the device for `vaapi`/`qsv` (e.g. `/dev/dri/renderD128`) or the GPU index for "
                          "`nvdec`; empty: FFmpeg's default")
    codec: Literal["h264", "hevc"] = Field(
        "h264", description="the stream's codec, for `qsv` and `jetson`, whose decoders are chosen by "
                            "codec")
    input_args: list[str] = Field(
        default_factory=list, description="further FFmpeg input options, placed before `-i` (e.g. "
                                          "`[\"-fflags\", \"nobuffer\"]`)")


class CameraRetention(_Strict):
    """How long this camera's images and rows are kept; an empty key: the INSPECT_RETENTION_* setting."""

    frame_days: Annotated[float | None, Field(ge=0, description="stored frames, days (0: no age "
                                                                "limit)")] = None
    crop_days: Annotated[float | None, Field(ge=0, description="defect crops, days (0: no age "
                                                               "limit)")] = None
    row_days: Annotated[float | None, Field(ge=0, description="inspection rows, days (0: for "
                                                              "ever)")] = None


class CameraConfig(_Strict):
    """One camera: where its frames come from and the rules for them."""

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
                             description="unique camera id, stored with every inspection")]
    name: str | None = Field(None, description="display name")
    line: Annotated[str | None, Field(max_length=64, description="production line, stored with every "
                                                                 "inspection")] = None
    station: Annotated[str | None, Field(max_length=64, description="station on the line, stored with "
                                                                    "every inspection")] = None
    source: str | int | None = Field(
        None, description="`rtsp://...`, `http(s)://...` (MJPEG), a USB index (`0`), a video file, an image "
                          "folder (`folder:path` or a directory) or `sim://neu-det?fps=30&width=640`; "
                          "relative paths are read from the cameras file's folder; give this or `simulator`")
    simulator: SimulatorConfig | None = Field(
        None, description="a production-line simulator instead of `source`")
    fps_cap: Annotated[float | None, Field(gt=0, description="frames per second taken from the source; "
                                                             "empty: all")] = None
    roi: tuple[int, int, int, int] | None = Field(
        None, description="x1, y1, x2, y2 in frame pixels: boxes count when their centre lies inside")
    thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict,
        description="minimum confidence per class name, `default` for the others (else the model's "
                    "operating point for the class, else `pipeline.conf_threshold`); class names the model "
                    "does not know are refused")
    buffer: BufferPolicy | None = Field(
        None, description="full queue: `block` keeps every frame, `drop-oldest` keeps the freshest and "
                          "counts the drops; empty: block for files and folders, drop-oldest for live "
                          "sources")
    queue_size: Annotated[int, Field(ge=1, le=10_000, description="frames waiting for inference")] = 8
    images: ImagePolicy = Field("ng", description="which frames are stored on disk: `always`, `ng` or "
                                                   "`never`")
    crops: bool = Field(True, description="also store one crop per defect of stored NG frames (with "
                                          "`tracking`: one per tracked defect, of its best box)")
    frames: bool | None = Field(
        None, description="store whole frames; `false`: only the defect crops; empty: INSPECT_STORE_FRAMES")
    retention: CameraRetention = Field(
        default_factory=CameraRetention,
        description="days its frames, crops and rows are kept (`frame_days`, `crop_days`, `row_days`); "
                    "empty keys: the INSPECT_RETENTION_* settings")
    loop: bool = Field(False, description="files and folders: start again at the end instead of finishing")
    stall_timeout_s: Annotated[float, Field(gt=0, description="watchdog: no frame for this long, seconds: "
                                                              "the decoder is restarted")] = 10.0
    decoder: DecoderConfig = Field(default_factory=DecoderConfig,
                                   description="decoder process of network streams and capture devices")
    decode_threads: Annotated[int, Field(
        ge=0, le=64,
        description="FFmpeg decoder threads for video files, streams and devices: 1 spends the least CPU "
                    "(what the inference workers need on a small edge PC); 0 lets FFmpeg use one per core "
                    "(large frames, many cores)")] = 1
    tile_size: Annotated[int | None, Field(
        ge=32, le=8192,
        description="tiled detection for frames much larger than the model input: overlapping "
                    "`tile_size`-px windows, each seen by the model at its own scale (one inference per "
                    "window); empty: the whole frame")] = None
    tile_overlap: Annotated[int, Field(ge=0, le=4096, description="overlap of neighbouring tiles in pixels "
                                                                  "(< tile_size)")] = 32
    imgsz: Annotated[int | None, Field(
        ge=32, le=4096,
        description="or the whole frame at a larger model input: its longer side in pixels (a multiple of "
                    "32; models exported with `--dynamic`); empty: the model's own size (256 for the "
                    "shipped files); not together with `tile_size`")] = None
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig,
                                       description="back-off between reconnect attempts")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig,
                                     description="motion of the material and defect tracks")
    enabled: bool = Field(True, description="`false` keeps the camera in the file but does not start it")

    @model_validator(mode="after")
    def _one_source(self) -> CameraConfig:
        if (self.source is None) == (self.simulator is None):
            raise ValueError("give exactly one of 'source' or 'simulator'")
        return self

    @model_validator(mode="after")
    def _tile_overlap_fits(self) -> CameraConfig:
        if self.tile_size is not None and self.tile_overlap >= self.tile_size:
            raise ValueError(f"tile_overlap ({self.tile_overlap}) must be smaller than tile_size "
                             f"({self.tile_size})")
        if self.tile_size is not None and self.imgsz is not None:
            raise ValueError("give either tile_size (windows at the model's size) or imgsz (the whole "
                             "frame at a larger model input), not both")
        return self

    @field_validator("roi")
    @classmethod
    def _roi_order(cls, v: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if v is not None:
            x1, y1, x2, y2 = v
            if x1 < 0 or y1 < 0 or x2 <= x1 or y2 <= y1:
                raise ValueError("roi must be [x1, y1, x2, y2] with 0 <= x1 < x2 and 0 <= y1 < y2")
        return v

    @field_validator("source")
    @classmethod
    def _source_nonempty(cls, v: str | int | None) -> str | int | None:
        if isinstance(v, str) and not v.strip():
            raise ValueError("source must not be empty")
        if isinstance(v, int) and v < 0:
            raise ValueError("a USB device index must be >= 0")
        return v

    def open_timeout(self) -> float:
        """Seconds from connecting to the first frame before the watchdog restarts the source."""
        return self.decoder.open_timeout_s or self.stall_timeout_s + self.decoder.analyze_s

    def threshold_for(self, class_name: str, default: float) -> float:
        return self.thresholds.get(class_name, self.thresholds.get("default", default))


class WriterConfig(_Strict):
    """The database writer and its on-disk journal (under `INSPECT_DATA_DIR/journal`)."""

    batch_rows: Annotated[int, Field(ge=1, le=10_000, description="commit after this many results ...")] = 64
    batch_ms: Annotated[float, Field(ge=0, description="... or this many ms after the first one")] = 200.0
    queue_size: Annotated[int, Field(ge=1, description="results waiting for the writer")] = 1024
    journal_max_mb: Annotated[float, Field(gt=0, description="bound of the on-disk journal that holds "
                                                             "results while the database is away, MiB; "
                                                             "full: the writer holds results")] = 512.0
    journal_segment_mb: Annotated[float, Field(gt=0, description="size of one journal segment file, "
                                                                 "MiB")] = 8.0
    retry_s: Annotated[float, Field(gt=0, description="how often a lost database is tried again, "
                                                      "seconds")] = 1.0


class PipelineConfig(_Strict):
    """Inference workers shared by all cameras, and the writer."""

    workers: Annotated[int, Field(ge=1, le=64, description="inference workers (micro-batches across "
                                                           "cameras)")] = 2
    intra_op_threads: Annotated[int, Field(ge=0, le=256, description="ONNX Runtime threads per worker "
                                                                     "(0: ONNX Runtime decides)")] = 1
    max_batch: Annotated[int, Field(ge=1, le=256, description="most frames in one micro-batch")] = 4
    max_wait_ms: Annotated[float, Field(ge=0, description="how long a worker waits to fill a batch, "
                                                          "ms")] = 10.0
    conf_threshold: Annotated[float, Field(ge=0, le=1, description="confidence threshold of a class that "
                                                                   "neither the camera's `thresholds` nor "
                                                                   "the model's operating points set")] = 0.25
    iou_threshold: Annotated[float, Field(gt=0, le=1, description="NMS IoU threshold (class-aware)")] = 0.45
    writer: WriterConfig = Field(default_factory=WriterConfig, description="the database writer")


ALARM_CONDITIONS = ("consecutive_ng", "defects_per_minute", "defects_per_metre", "camera_down_s")


class AlarmRule(_Strict):
    """One alarm: a scope (a line or a camera) and one condition. It fires once, raises an
    `alarm.raised` webhook event, a metric and a banner in the dashboard's Live view, and stays raised
    until an operator acknowledges it."""

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
                             description="unique rule id, named in the alarm and its metric")]
    line: Annotated[str | None, Field(max_length=64, description="the production line it watches (every "
                                                                 "camera of the line); or `camera`")] = None
    camera: Annotated[str | None, Field(max_length=64, description="the camera it watches; or `line`")] = None
    consecutive_ng: Annotated[int | None, Field(ge=1, le=100_000, description="condition: this many NG "
                                                                              "frames in a row")] = None
    defects_per_minute: Annotated[float | None, Field(
        gt=0, description="condition: more defects than this within the last 60 s (continuous material, "
                          "where every frame may be NG)")] = None
    defects_per_metre: Annotated[float | None, Field(
        gt=0, description="condition: more defects per metre of material than this over the last 60 s "
                          "(needs `line_speed_m_per_min`)")] = None
    line_speed_m_per_min: Annotated[float | None, Field(
        gt=0, description="the material's speed past the scope's cameras, metres per minute (for "
                          "`defects_per_metre`)")] = None
    camera_down_s: Annotated[float | None, Field(gt=0, description="condition: a camera of the scope "
                                                                   "delivers no frames for longer than "
                                                                   "this, seconds")] = None
    message: Annotated[str | None, Field(max_length=200, description="what the operator reads in the "
                                                                     "banner; empty: a sentence built "
                                                                     "from the rule")] = None

    @model_validator(mode="after")
    def _one_scope_one_condition(self) -> AlarmRule:
        if (self.line is None) == (self.camera is None):
            raise ValueError("give exactly one of line or camera")
        given = [c for c in ALARM_CONDITIONS if getattr(self, c) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one condition of {', '.join(ALARM_CONDITIONS)}"
                             + (f", not {', '.join(given)}" if given else ""))
        if (self.defects_per_metre is None) != (self.line_speed_m_per_min is None):
            raise ValueError("line_speed_m_per_min goes with defects_per_metre, and only with it")
        return self

    @property
    def condition(self) -> str:
        return next(c for c in ALARM_CONDITIONS if getattr(self, c) is not None)

    @property
    def scope(self) -> str:
        return f"line {self.line}" if self.line is not None else f"camera {self.camera}"

    def watches(self, camera_id: str | None, line: str | None) -> bool:
        return (self.camera is not None and self.camera == camera_id) or \
            (self.line is not None and self.line == line)


class CamerasFile(_Strict):
    """The cameras file: pipeline tuning, the cameras and the alarms."""

    pipeline: PipelineConfig = Field(default_factory=PipelineConfig,
                                     description="inference workers and the writer, shared by all cameras")
    cameras: Annotated[list[CameraConfig], Field(min_length=1, description="the cameras, at least one; "
                                                                           "ids unique")]
    alarms: list[AlarmRule] = Field(default_factory=list, description="alarm rules per line or camera; "
                                                                      "ids unique")

    @model_validator(mode="after")
    def _unique_ids(self) -> CamerasFile:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"camera id {cam.id!r} appears twice")
            seen.add(cam.id)
        rules: set[str] = set()
        for rule in self.alarms:
            if rule.id in rules:
                raise ValueError(f"alarm id {rule.id!r} appears twice")
            rules.add(rule.id)
            if rule.camera is not None and rule.camera not in seen:
                raise ValueError(f"alarm {rule.id!r} watches camera {rule.camera!r}, which is not in cameras")
        return self

    @property
    def enabled_cameras(self) -> list[CameraConfig]:
        return [c for c in self.cameras if c.enabled]


def _node_at(node: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """The deepest YAML node along a pydantic error location (for its line number)."""
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key_node, value_node in node.value:
                if key_node.value == str(part):
                    # the last step points at the key's own line (its value may start below)
                    nxt = key_node if i == len(loc) - 1 else value_node
                    break
            if nxt is None:
                return node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic adds union branch names ('str', 'int', 'function-after[...]') to locations
    return tuple(p for p in loc if isinstance(p, int) or not (p in {"str", "int", "float", "bool", "none"}
                                                              or "[" in str(p)))


def parse_cameras(text: str, path: str | Path = "<cameras>") -> CamerasFile:
    """Validate a cameras document; raise CamerasConfigError naming file, line and key."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise CamerasConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise CamerasConfigError(f"{path}: expected a mapping with a 'cameras' list at the top level")
    try:
        return CamerasFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = _clean_loc(tuple(err["loc"]))
            node = _node_at(root, loc)
            line = f":{node.start_mark.line + 1}" if node is not None else ""
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"{path}{line}: {_format_loc(loc)}: {msg}")
        raise CamerasConfigError("; ".join(lines)) from exc


def key_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line (1-based) of a key of a valid cameras document, e.g. ``("cameras", 2, "source")``."""
    node = _node_at(yaml.compose(text), loc)
    return node.start_mark.line + 1 if node is not None else None


def load_cameras(path: str | Path) -> CamerasFile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CamerasConfigError(f"{p}: cannot read the cameras file: {exc.strerror or exc}") from exc
    return parse_cameras(text, p)
