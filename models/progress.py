"""What a training run tells the person watching it: each start-up step with its duration, and the
progress of an epoch as a live bar on a terminal or as plain lines (every quarter of an epoch) when
the output goes to a file or a pipe, where a bar would be a stream of carriage returns."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("models.train")  # part of the training log


@contextmanager
def startup_step(description: str) -> Iterator[None]:
    """Log ``start-up: DESCRIPTION ...`` and, when the step is done, how long it took."""
    log.info("start-up: %s ...", description)
    started = time.perf_counter()
    yield
    log.info("start-up: %s: %.1f s", description, time.perf_counter() - started)


def interactive() -> bool:
    """True when progress may be drawn as a live bar (stderr is a terminal)."""
    return sys.stderr.isatty()


def quarter_marks(batches: int) -> set[int]:
    """The 1-based batch counts after which a non-interactive epoch reports progress: each quarter of
    the epoch, the last one excepted (the epoch's own line follows it)."""
    return {max(1, round(batches * q / 4)) for q in (1, 2, 3)} - {batches}
