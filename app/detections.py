"""The one detections type every layer passes around (engine -> inspection -> db -> API)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One box, in original-image pixel coordinates."""

    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float
    class_id: int
    class_name: str


@dataclass
class Detections:
    """Boxes of one image as parallel arrays: ``xyxy`` (N, 4) float32 in original-image pixels,
    ``confidence`` (N,) float32, ``class_id`` (N,) int64, and the model's ``names``."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    names: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        if not (len(self.xyxy) == len(self.confidence) == len(self.class_id)):
            raise ValueError(
                f"detections arrays disagree: {len(self.xyxy)} boxes, "
                f"{len(self.confidence)} scores, {len(self.class_id)} classes"
            )

    @classmethod
    def empty(cls, names: Sequence[str] = ()) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), names)

    def __len__(self) -> int:
        return len(self.confidence)

    def class_name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)

    def __iter__(self) -> Iterator[Detection]:
        for (x1, y1, x2, y2), conf, cid in zip(self.xyxy, self.confidence, self.class_id, strict=True):
            yield Detection(float(x1), float(y1), float(x2), float(y2), float(conf), int(cid),
                            self.class_name(int(cid)))

    def scaled(self, fx: float, fy: float) -> Detections:
        """The same boxes with x multiplied by ``fx`` and y by ``fy``: boxes found on a frame decoded
        smaller than its image, in the image's pixels."""
        return Detections(self.xyxy * np.array([fx, fy, fx, fy], np.float32), self.confidence,
                          self.class_id, self.names)

    def filter(self, mask: np.ndarray) -> Detections:
        """A subset by boolean mask or index array, keeping the names."""
        return Detections(self.xyxy[mask], self.confidence[mask], self.class_id[mask], self.names)

