"""The most recent capture-to-commit latencies, in memory that is fixed when the pipeline starts.

A ``deque(maxlen=n)`` of floats grows for the first ``n`` frames (about two hours at 30 FPS) and holds a
Python object per value; a long-running service reads that as creeping memory. This ring is one
preallocated float64 array, written in place.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SIZE = 200_000


class LatencyWindow:
    """The last ``size`` latencies in seconds; ``to_list()`` gives them oldest first."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        if size < 1:
            raise ValueError("a latency window holds at least one value")
        self._values = np.full(size, np.nan, dtype=np.float64)  # every page touched now, not later
        self._written = 0

    def append(self, seconds: float) -> None:
        self._values[self._written % self._values.size] = seconds
        self._written += 1

    def __len__(self) -> int:
        return min(self._written, self._values.size)

    def to_list(self) -> list[float]:
        size = self._values.size
        if self._written <= size:
            return self._values[:self._written].tolist()
        start = self._written % size
        return np.concatenate((self._values[start:], self._values[:start])).tolist()

    @property
    def nbytes(self) -> int:
        return int(self._values.nbytes)
