"""A circuit breaker around the database: the first failure that says "the database is away" opens it,
and while it is open callers are told so at once (no connect attempt, no connect timeout per request).
One background probe (``SELECT 1``) at a time, at most every ``probe_s`` seconds, closes it again.

Closed: requests use the database. Open: ``available()`` is False and starts a probe when one is due;
the HTTP door journals frames, the key check serves verified keys from its cache, and everything else
that needs the database answers 503 with Retry-After. ``state()`` is what /readyz, /api/v1/cameras and
the ``inspect_db_up`` gauge show; its ``reason`` is public-safe (no host, port or driver text)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from app import metrics

log = logging.getLogger(__name__)

DOWN_REASON = "database unreachable"
# SQLite raises OperationalError for these too: a lock wait or a statement the schema cannot run, answered
# by the database itself, so no outage
_NOT_OUTAGES = ("database is locked", "no such table", "no such column", "near ")


def is_outage(exc: BaseException) -> bool:
    """A driver error that means the database cannot be reached (not a bad statement or a lock wait)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, InterfaceError):
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig)
        return not any(text.startswith(m) for m in _NOT_OUTAGES)
    return False


@dataclass(frozen=True)
class BreakerState:
    up: bool
    reason: str | None  # public-safe: never the driver's text
    opened_for_s: float | None  # how long the database has been away


class CircuitBreaker:
    """``probe()`` returns None when the database answers, else the (private) reason it does not."""

    def __init__(self, probe: Callable[[], str | None], probe_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._probe = probe
        self.probe_s = probe_s
        self._clock = clock
        self._lock = threading.Lock()
        self._open_since: float | None = None
        self._next_probe = 0.0
        self._probing = False
        self.trips = 0

    @property
    def is_open(self) -> bool:
        return self._open_since is not None

    def available(self) -> bool:
        """True while closed. While open: False, and a background probe starts when one is due."""
        if self._open_since is None:
            return True
        with self._lock:
            due = not self._probing and self._clock() >= self._next_probe
            if due:
                self._probing = True
        if due:
            threading.Thread(target=self._run_probe, name="db-breaker-probe", daemon=True).start()
        return False

    def trip(self, detail: str) -> None:
        """The database was found away (``detail`` goes to the log only); opens the breaker."""
        with self._lock:
            now = self._clock()
            self._next_probe = now + self.probe_s
            if self._open_since is not None:
                return
            self._open_since = now
            self.trips += 1
        log.warning("database unreachable, circuit open (probe every %.1f s): %s", self.probe_s, detail)
        metrics.DB_UP.set(0)

    def close(self) -> None:
        """The database answered again."""
        with self._lock:
            was_open, self._open_since = self._open_since is not None, None
        if was_open:
            log.info("database is back, circuit closed")
        metrics.DB_UP.set(1)

    def check_now(self) -> bool:
        """Probe in the caller's thread (readiness): closes or opens the breaker; True when up."""
        problem = self._probe()
        if problem is None:
            self.close()
            return True
        self.trip(problem)
        return False

    def _run_probe(self) -> None:
        try:
            self.check_now()
        finally:
            with self._lock:
                self._probing = False

    def state(self) -> BreakerState:
        since = self._open_since
        if since is None:
            return BreakerState(True, None, None)
        return BreakerState(False, DOWN_REASON, round(self._clock() - since, 3))

    def view(self) -> dict[str, object]:
        """The public view (``app.schemas.DatabaseState``): up, why not, for how long."""
        state = self.state()
        return {"up": state.up, "last_error": state.reason, "down_for_s": state.opened_for_s}
