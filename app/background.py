"""One way to run work in the background: a daemon thread that repeats a step until it is stopped.

The service's background jobs (webhook delivery, retention pruning, the alarm watch, the line's verdict
relay) each differ only in their step and their pace, so they share this loop: it runs the step, waits
``interval_s`` (or less, when ``wake()`` asks for the next step now) unless the step said more work is
waiting, logs a step's exception and goes on (a job never dies of one failure), and on ``stop()`` ends
after the step in progress, or, with ``drain=True``, after the steps that find work waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundLoop:
    """``step()`` returns True when more work is waiting (run again at once), False to wait."""

    def __init__(self, name: str, step: Callable[[], bool], interval_s: float, *,
                 drain: bool = False) -> None:
        if interval_s <= 0:
            raise ValueError(f"{name}: the interval between steps must be positive, got {interval_s}")
        self.name, self.step, self.interval_s, self.drain = name, step, interval_s, drain
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called: a long step can check it between its parts."""
        return self._stop.is_set()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next step now instead of at the end of the wait."""
        self._wake.set()

    def wait(self, seconds: float) -> bool:
        """Sleep inside a step (a back-off) until ``seconds`` pass or the loop is stopped; True if stopped."""
        return self._stop.wait(seconds)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _safe_step(self) -> bool:
        try:
            return bool(self.step())
        except Exception:  # noqa: BLE001 - one failed step never ends the job; the next one retries
            log.exception("%s: step failed", self.name)
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._safe_step():
                self._wake.wait(self.interval_s)
                self._wake.clear()
        if self.drain:
            while self._safe_step():
                pass
