"""Bounded per-camera frame queues behind one lock, so inference workers can micro-batch across cameras.

Each camera has its own capacity and policy: ``block`` makes the capture thread wait for room (files:
every frame inspected), ``drop-oldest`` discards the oldest queued frame (live: the freshest wins)
and counts it. Workers take up to ``max_batch`` frames, round-robin over cameras, waiting at most
``max_wait_s`` after the first frame for the batch to fill.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class _CameraQueue:
    capacity: int
    policy: str
    items: deque
    on_drop: Callable[[Any], None] | None
    on_depth: Callable[[int], None] | None


class QueueClosed(Exception):
    """The hub was closed while a producer waited for room."""


class FrameHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._queues: dict[str, _CameraQueue] = {}
        self._order: list[str] = []
        self._rr = 0
        self._closed = False
        self._count = 0
        self._waiting = 0  # producers blocked for room

    def add_camera(self, camera_id: str, capacity: int, policy: str,
                   on_drop: Callable[[Any], None] | None = None,
                   on_depth: Callable[[int], None] | None = None) -> None:
        if policy not in ("block", "drop-oldest"):
            raise ValueError(f"unknown buffer policy {policy!r}")
        with self._lock:
            self._queues[camera_id] = _CameraQueue(capacity, policy, deque(), on_drop, on_depth)
            self._order.append(camera_id)

    def put(self, camera_id: str, item: Any, timeout: float | None = None) -> bool:
        """Queue one frame. ``block``: wait for room (False on timeout); ``drop-oldest``: never waits.
        Raises QueueClosed when the hub closes while waiting."""
        with self._lock:
            q = self._queues[camera_id]
            if self._closed:
                raise QueueClosed(camera_id)
            dropped = None
            if len(q.items) >= q.capacity:
                if q.policy == "drop-oldest":
                    dropped = q.items.popleft()
                    self._count -= 1
                else:
                    deadline = None if timeout is None else time.monotonic() + timeout
                    while len(q.items) >= q.capacity and not self._closed:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            return False
                        self._waiting += 1
                        try:
                            self._not_full.wait(remaining)
                        finally:
                            self._waiting -= 1
                    if self._closed:
                        raise QueueClosed(camera_id)
            q.items.append(item)
            self._count += 1
            depth = len(q.items)
            self._not_empty.notify()
        if dropped is not None and q.on_drop is not None:
            q.on_drop(dropped)
        if q.on_depth is not None:
            q.on_depth(depth)
        return True

    def _take_round_robin(self, limit: int, out: list) -> None:
        """Take up to ``limit`` items, one per camera per round (fair across cameras). Lock held."""
        n = len(self._order)
        while limit > 0 and self._count > 0:
            took = False
            for k in range(n):
                cid = self._order[(self._rr + k) % n]
                q = self._queues[cid]
                if q.items:
                    out.append(q.items.popleft())
                    self._count -= 1
                    limit -= 1
                    took = True
                    if limit == 0:
                        self._rr = (self._rr + k + 1) % n
                        return
            if not took:
                return
            self._rr = (self._rr + 1) % n

    def get_batch(self, max_batch: int, max_wait_s: float, idle_timeout: float | None = 0.5) -> list:
        """Up to ``max_batch`` frames; [] when nothing arrived within ``idle_timeout`` or the hub is
        closed and empty. After the first frame, waits up to ``max_wait_s`` for the batch to fill."""
        out: list = []
        with self._lock:
            if self._count == 0 and not self._closed:
                self._not_empty.wait(idle_timeout)
            if self._count == 0:
                return out
            self._take_round_robin(max_batch, out)
            if len(out) < max_batch and max_wait_s > 0:
                deadline = time.monotonic() + max_wait_s
                while len(out) < max_batch and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    if self._count == 0:
                        self._not_full.notify_all()
                        self._not_empty.wait(remaining)
                    self._take_round_robin(max_batch - len(out), out)
            self._not_full.notify_all()
            depths = {cid: len(q.items) for cid, q in self._queues.items()}
        for cid, depth in depths.items():
            cb = self._queues[cid].on_depth
            if cb is not None:
                cb(depth)
        return out

    def depth(self, camera_id: str | None = None) -> int:
        with self._lock:
            if camera_id is None:
                return self._count
            return len(self._queues[camera_id].items)

    def close(self) -> None:
        """No more frames: wake every waiter. Queued frames can still be taken (drain)."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting_producers(self) -> int:
        """Producers blocked for room right now (a ``block`` camera whose queue is full)."""
        with self._lock:
            return self._waiting
