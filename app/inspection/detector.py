"""The detector call of an inspection, timed: one batch of frames -> detections + stage times."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from app import metrics
from app.detections import Detections
from app.inference import Engine


def run_detector(engine: Engine, frames: Sequence[np.ndarray], conf_threshold: float,
                 iou_threshold: float, max_det: int, imgsz: int | None = None
                 ) -> tuple[list[Detections], float, float]:
    """Detect on a batch; returns (detections, inference ms, postprocess ms) for the whole batch.
    Inference covers letterbox + the ONNX Runtime run; postprocess covers decoding and NMS.
    ``imgsz``: the longer side the model sees the frames at (None: the model's own)."""
    t0 = time.perf_counter()
    batch, params = engine.preprocess(frames, imgsz)
    raw = engine.run(batch)
    t1 = time.perf_counter()
    dets = engine.postprocess(raw, params, conf_threshold, iou_threshold, max_det)
    t2 = time.perf_counter()
    metrics.INFERENCE_SECONDS.labels(provider=engine.provider).observe(t1 - t0)
    return dets, (t1 - t0) * 1000, (t2 - t1) * 1000
