"""Admission control for uploads, after Triton's queue policy: at most ``max_in_flight`` uploads are
decoded and inspected at once, at most ``max_queued`` more wait for a slot (first come, first served),
each for at most ``max_wait_s``; any other upload is refused at once with ``Overloaded`` (503 with
``Retry-After`` at the HTTP edge). The bound on work in flight is also the bound on decode memory: a
frame's pixels are held only while it holds a slot.

The gate lives in one event loop (the service's); it needs no lock."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app import metrics
from app.errors import Unavailable


class Overloaded(Unavailable):
    """Every slot is busy and the wait queue is full, or the wait ran out; trying later can succeed."""

    reason = "overloaded"


@dataclass(frozen=True)
class AdmissionLimits:
    max_in_flight: int
    max_queued: int
    max_wait_s: float

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.max_queued < 0 or not self.max_wait_s > 0:
            raise ValueError(f"bad admission limits {self}")

    @property
    def retry_after_s(self) -> int:
        """What a refused caller is told to wait: about one full queue wait, at least a second."""
        return max(1, math.ceil(self.max_wait_s))


class AdmissionGate:
    """``async with gate.admitted(): ...`` runs the block in a slot, or raises ``Overloaded``."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.max_in_flight)
        self._in_flight = 0
        self._queued = 0
        metrics.UPLOADS_IN_FLIGHT.set(0)
        metrics.UPLOADS_QUEUED.set(0)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queued(self) -> int:
        return self._queued

    def _refuse(self, why: str, detail: str) -> Overloaded:
        metrics.UPLOADS_REFUSED_TOTAL.labels(reason=why).inc()
        return Overloaded(f"{detail}; try again in {self.limits.retry_after_s} s",
                          retry_after_s=self.limits.retry_after_s)

    async def _acquire(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot: taken without waiting
            return
        if self._queued >= self.limits.max_queued:
            raise self._refuse("queue_full", f"{self.limits.max_in_flight} uploads are being inspected and "
                                             f"{self._queued} are waiting (the most allowed)")
        self._queued += 1
        metrics.UPLOADS_QUEUED.set(self._queued)
        try:
            async with asyncio.timeout(self.limits.max_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise self._refuse("queue_timeout", f"no inspection slot came free within "
                                                f"{self.limits.max_wait_s:g} s") from None
        finally:
            self._queued -= 1
            metrics.UPLOADS_QUEUED.set(self._queued)

    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        await self._acquire()
        self._in_flight += 1
        metrics.UPLOADS_IN_FLIGHT.set(self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1
            metrics.UPLOADS_IN_FLIGHT.set(self._in_flight)
            self._slots.release()
