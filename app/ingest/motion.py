"""Material motion of one camera, estimated from its frames: OpenCV phase correlation between
consecutive frames, downscaled to grey (a fraction of a millisecond per 640x480 frame), gives how far
the picture moved. Summed up it is the material's position in frame pixels since the stream began
(``offset``), which the tracker (app.ingest.tracking) uses to carry each defect from frame to frame.

No line speed or encoder is needed; a frame whose correlation peak is too weak (a blank or washed-out
picture) keeps the last measured velocity. The speed is the net shift over the last ``window_s``
seconds (a vibrating line that stands still has none); a line slower than ``stop_px_s`` is stopped.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

MIN_RESPONSE = 0.05  # weaker phase-correlation peaks are no measurement


@dataclass(frozen=True)
class MotionSample:
    """The picture's shift at one frame: since the previous frame (``dx``, ``dy``) and since the first
    frame (``offset_x``, ``offset_y``), in full-resolution frame pixels; speed in px/s."""

    dx: float
    dy: float
    offset_x: float
    offset_y: float
    speed_px_s: float
    stopped: bool
    measured: bool  # False: no reliable peak, the last velocity was assumed
    seq: int = 0  # the frame's number among the frames measured (capture order)


class MotionEstimator:
    """Feed every captured frame of one camera in order (``update``); read ``view()`` from any thread."""

    def __init__(self, work_width: int = 160, stop_px_s: float = 5.0, window_s: float = 1.0) -> None:
        self.work_width = work_width
        self.stop_px_s = stop_px_s
        self.window_s = window_s
        self._recent: deque[tuple[float, float, float]] = deque()  # (t, offset x, offset y)
        self._prev: np.ndarray | None = None
        self._window: np.ndarray | None = None
        self._scale = 1.0
        self._prev_t: float | None = None
        self._vx = self._vy = 0.0  # px/s over the window
        self._ox = self._oy = 0.0
        self._speed = 0.0
        self._heading: tuple[int, int] | None = None  # axis and sign of the last movement
        self._lock = threading.Lock()
        self.frames = 0

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        h, w = grey.shape[:2]
        self._scale = w / self.work_width if w > self.work_width else 1.0
        size = (max(int(round(w / self._scale)), 8), max(int(round(h / self._scale)), 8))
        small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        if self._window is None or self._window.shape != small.shape:
            self._window = cv2.createHanningWindow(size, cv2.CV_32F)
        return small

    def update(self, image: np.ndarray, t: float) -> MotionSample:
        """The motion at this frame (``t``: its capture time in seconds, any monotonic clock)."""
        small = self._prepare(image)
        dx = dy = 0.0
        measured = False
        dt = None if self._prev_t is None else max(t - self._prev_t, 1e-6)
        if self._prev is not None and self._prev.shape == small.shape:
            (sx, sy), response = cv2.phaseCorrelate(self._prev, small, self._window)
            if response >= MIN_RESPONSE:
                dx, dy, measured = sx * self._scale, sy * self._scale, True
            elif dt is not None:  # no peak: assume the line kept its speed
                dx, dy = self._vx * dt, self._vy * dt
        with self._lock:
            self._ox += dx
            self._oy += dy
            seq = self.frames
            self.frames += 1
            self._recent.append((t, self._ox, self._oy))
            while len(self._recent) > 2 and t - self._recent[1][0] >= self.window_s:
                self._recent.popleft()
            t0, ox0, oy0 = self._recent[0]
            if t > t0:
                self._vx, self._vy = (self._ox - ox0) / (t - t0), (self._oy - oy0) / (t - t0)
                self._speed = float(np.hypot(self._vx, self._vy))
            stopped = self._speed < self.stop_px_s
            if not stopped:
                axis = 0 if abs(self._vx) >= abs(self._vy) else 1
                self._heading = (axis, 1 if (self._vx, self._vy)[axis] > 0 else -1)
            sample = MotionSample(dx, dy, self._ox, self._oy, self._speed, stopped, measured, seq)
        self._prev, self._prev_t = small, t
        return sample

    def velocity(self) -> tuple[float, float]:
        """px/s along x and y over the last ``window_s``."""
        with self._lock:
            return self._vx, self._vy

    def heading(self) -> tuple[int, int] | None:
        """Which way the material went when it last moved: the axis (0: x, 1: y) and the sign of the
        picture's shift along it; None while it has not moved since the stream began."""
        with self._lock:
            return self._heading

    def view(self, mm_per_px: float | None = None) -> dict:
        """The camera's motion for its state: speed in px/s (and mm/s when calibrated), stopped."""
        with self._lock:
            speed, vx, vy, frames = self._speed, self._vx, self._vy, self.frames
        out: dict = {"speed_px_s": round(speed, 2), "velocity_px_s": [round(vx, 2), round(vy, 2)],
                     "stopped": frames < 2 or speed < self.stop_px_s,
                     "speed_mm_s": None if mm_per_px is None else round(speed * mm_per_px, 3)}
        return out
