"""Detection: inference workers take micro-batches of captured frames across cameras from the
``FrameHub``, run the shared detector (one run per input size; a tiled camera's frame as windows,
merged back into frame coordinates), apply each camera's rules and hand the batch's results to the
database writer, after announcing their provisional verdicts (``verdict_listeners``: the MQTT
publisher's and the OPC UA server's relays, before the batched commit). How the model sees each
camera is judged here too (``check_against_model``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import numpy as np

from app import metrics as m
from app.detections import Detections
from app.inference import Engine, tiling
from app.ingest.camera_tracking import FrameRef
from app.ingest.capture import CameraRunner, Job
from app.ingest.config import CameraConfig, CamerasConfigError, CamerasFile, PipelineConfig
from app.ingest.frame_images import prepare_images
from app.ingest.queues import FrameHub
from app.ingest.sources import derive_frame_uid
from app.ingest.track_records import track_record
from app.ingest.tracking import Track
from app.ingest.writer import DbWriter, Item, TrackItem
from app.inspection import (
    CameraContext,
    Timings,
    apply_camera_rules,
    default_thresholds,
    inspect_frame,
    run_detector,
)
from app.line.verdicts import ProvisionalVerdict

log = logging.getLogger(__name__)


def check_against_model(config: CamerasFile, engine: Engine, config_name: str = "cameras file") -> None:
    """What of the cameras file only the model can judge: threshold class names and ``imgsz``.
    Raises CamerasConfigError naming the file and key."""
    names = list(engine.names)
    for cam in config.enabled_cameras:
        where = f"{config_name}: cameras[{config.cameras.index(cam)}]."
        unknown = sorted(set(cam.thresholds) - set(names) - {"default"})
        if unknown:
            raise CamerasConfigError(
                f"{where}thresholds: unknown class {', '.join(map(repr, unknown))}; "
                f"the model's classes are {', '.join(names)} (or 'default')")
        if cam.imgsz is not None:
            try:
                engine.fit_size(cam.imgsz)
            except ValueError as exc:
                raise CamerasConfigError(f"{where}imgsz: {exc}") from None


def camera_context(cam: CameraConfig, names: Sequence[str], default_threshold: float,
                   model_thresholds: Mapping[str, float] | None = None) -> CameraContext:
    """The camera's rules for the inspection step: where it is, its ROI and a threshold per class (the
    camera's own for the class, else its ``default``, else the model's operating point for the class,
    else ``default_threshold``)."""
    defaults = default_thresholds(names, default_threshold, model_thresholds or {})
    return CameraContext(camera_id=cam.id, line=cam.line, station=cam.station, roi=cam.roi,
                         class_thresholds={n: cam.threshold_for(n, defaults[n]) for n in names})


def model_view(cfg: CameraConfig, engine: Engine) -> dict:
    """How the model sees this camera's frames: at which input size (longer side), whole or tiled."""
    tiles = None if cfg.tile_size is None else {"size": cfg.tile_size, "overlap": cfg.tile_overlap}
    return {"imgsz": cfg.imgsz or max(engine.imgsz), "tiles": tiles}


def detect_frames(engine: Engine, batch: list[Job], threshold: float, iou_threshold: float,
                  max_det: int) -> list[tuple[Detections, np.ndarray]]:
    """Detections per frame of the batch, in frame coordinates, with the frame's own share of the model
    calls' time (inference ms, postprocess ms). One model input per frame, or per window of a tiled
    camera's frame; one run per input size (cameras with their own imgsz), usually one for all."""
    inputs: list[np.ndarray] = []
    windows: list[list[tuple[int, int]] | None] = []
    by_size: dict[int | None, list[int]] = {}  # imgsz -> indexes into inputs
    for job in batch:
        cfg = job.camera.cfg
        if cfg.tile_size is None:
            by_size.setdefault(cfg.imgsz, []).append(len(inputs))
            inputs.append(job.frame.image)
            windows.append(None)
        else:
            parts, offsets = tiling.split(job.frame.image, cfg.tile_size, cfg.tile_overlap)
            by_size.setdefault(None, []).extend(range(len(inputs), len(inputs) + len(parts)))
            inputs.extend(parts)
            windows.append(offsets)
    found: list[Detections] = [Detections.empty(engine.names)] * len(inputs)
    cost = np.zeros((len(inputs), 2))  # inference ms, postprocess ms: each input's part of its run
    for size, index in by_size.items():
        group, group_inf, group_post = run_detector(
            engine, [inputs[i] for i in index], threshold, iou_threshold, max_det, imgsz=size)
        for i, d in zip(index, group, strict=True):
            found[i] = d
        cost[index] = (group_inf / len(index), group_post / len(index))
    per_frame: list[tuple[Detections, np.ndarray]] = []
    at = 0
    for offsets in windows:
        k = 1 if offsets is None else len(offsets)
        merged = found[at] if offsets is None else tiling.merge(found[at:at + k], offsets, engine.names,
                                                                max_det=max_det)
        per_frame.append((merged, cost[at:at + k].sum(axis=0)))
        at += k
    return per_frame


def track_items(cam: CameraRunner, tracks: list[Track]) -> list[TrackItem]:
    """A tracked camera's ended tracks for the writer, each with the crop of its best box (where the
    camera keeps crops)."""
    assert cam.tracking is not None
    heading = cam.tracking.motion.heading()  # a part's defects are placed from its start along the motion
    return [TrackItem(track_record(t, cam.cfg, heading), crop=cam.tracking.take_crop(t)) for t in tracks]


class DetectionWorkers:
    """``workers`` threads: batch from the hub -> detect -> inspect -> one hand-off to the writer."""

    def __init__(self, engine: Engine, hub: FrameHub, writer: DbWriter, options: PipelineConfig, *,
                 detect_threshold: float, max_det: int) -> None:
        self.engine = engine
        self.hub = hub
        self.writer = writer
        self.options = options
        self.detect_threshold = detect_threshold
        self.max_det = max_det
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.batches = 0
        self.errors = 0
        # called with each batch's verdicts as soon as inference ends, before the commit; must not block
        self.verdict_listeners: list[Callable[[list[ProvisionalVerdict]], None]] = []

    def start(self) -> None:
        for k in range(self.options.workers):
            t = threading.Thread(target=self._work, name=f"ingest-worker-{k}", daemon=True)
            t.start()
            self.threads.append(t)

    def join(self, deadline: float) -> None:
        """Wait (until the ``time.monotonic()`` deadline) for the workers, which end once the hub is
        closed and empty."""
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))

    def _work(self) -> None:
        while True:
            batch: list[Job] = self.hub.get_batch(self.options.max_batch, self.options.max_wait_ms / 1000.0)
            if not batch:
                if self.hub.closed and self.hub.depth() == 0:
                    return
                continue
            try:
                self.inspect(batch)
            except Exception:  # a bad frame must not kill the worker; the frames are counted lost
                self.errors += 1
                log.exception("inspection of a batch of %d frames failed", len(batch))
                for job in batch:
                    job.camera.state.set_error("inspection failed (see log)")
                    if job.camera.tracking is not None:
                        job.camera.tracking.forget(job.frame)

    def _announce(self, verdicts: list[ProvisionalVerdict]) -> None:
        for listener in self.verdict_listeners:
            try:
                listener(verdicts)
            except Exception:  # an announcement never costs the inspection
                log.exception("a listener of provisional verdicts failed on %d frames", len(verdicts))

    def inspect(self, batch: list[Job]) -> None:
        m.BATCH_SIZE.observe(len(batch))
        with self._lock:
            self.batches += 1
        found = detect_frames(self.engine, batch, self.detect_threshold, self.options.iou_threshold,
                              self.max_det)
        items: list[Item] = []
        tracked: dict[str, tuple[CameraRunner, list[str]]] = {}  # camera id -> (camera, its frames here)
        verdicts: list[ProvisionalVerdict] = []
        for job, (dets, (inf_ms, post_ms)) in zip(batch, found, strict=True):
            cam, frame = job.camera, job.frame
            timings = Timings(inference_ms=float(inf_ms), postprocess_ms=float(post_ms))
            uid = derive_frame_uid(cam.cfg.id, frame.origin) if frame.origin else None  # None: random
            result = inspect_frame(frame.image, dets, model_version=self.engine.version, context=cam.context,
                                   captured_at=frame.captured_at, timings=timings, source="stream",
                                   frame_uid=uid, part_id=None if frame.part is None else frame.part.part_id)
            timings.total_ms = (time.perf_counter() - frame.t_capture) * 1000.0
            weak = False  # holds a box below the threshold that a track took (``tracking.weak_share``)
            if cam.tracking is not None:
                result.tracked = True  # its defects are stored per track, when the track ends
                seen = (result.detections if cam.track_context is None
                        else apply_camera_rules(dets, cam.track_context))
                weak = len(seen) > len(result.detections)
                cam.tracking.on_inspected(frame, seen,
                                          ref=FrameRef(result.frame_uid, result.captured_at, frame.part))
                tracked.setdefault(cam.cfg.id, (cam, []))[1].append(result.frame_uid)
            crops = prepare_images(result, cam.cfg, may_hold_defect=weak)
            cam.state.on_inspected()
            if self.verdict_listeners:
                verdicts.append(ProvisionalVerdict.of(result, datetime.now(UTC), frame.index))
            items.append(Item(result, frame.t_capture, crops, position=frame.index))
        self._announce(verdicts)
        self.writer.submit_many(items)  # one hand-off per batch: the writer wakes per batch, not per frame
        for cam, frame_uids in tracked.values():  # tracks whose best frame the writer has now, behind it
            assert cam.tracking is not None
            ended = cam.tracking.handed(frame_uids)
            if ended:
                self.writer.submit_many(track_items(cam, ended))
