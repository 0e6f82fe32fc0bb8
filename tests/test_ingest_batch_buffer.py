"""The writer's inbox (``BatchBuffer``): order, back-pressure, and wake-ups per batch instead of per
result (the writer must not preempt the inference workers for every frame)."""

from __future__ import annotations

import threading
import time

import pytest

from app.ingest.writer import BatchBuffer


class CountingCondition:
    """Wraps the buffer's ``_ready`` condition to count how often the writer is notified."""

    def __init__(self, cond: threading.Condition) -> None:
        self.cond = cond
        self.notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        self.cond.notify(n)

    def __getattr__(self, name: str):
        return getattr(self.cond, name)


def never() -> bool:
    return False


def test_takes_in_order_and_at_most_batch_rows() -> None:
    buf = BatchBuffer(capacity=100, batch_rows=4)
    buf.put(list(range(6)))
    buf.put([6, 7, 8])
    assert len(buf) == 9
    assert buf.take_batch(0.0, idle_s=0.0, draining=never) == [0, 1, 2, 3]
    assert buf.take_batch(0.0, idle_s=0.0, draining=never) == [4, 5, 6, 7]
    assert buf.take_batch(0.0, idle_s=0.0, draining=never) == [8]
    assert buf.take_batch(0.0, idle_s=0.01, draining=never) == []


def test_writer_is_notified_when_a_batch_starts_and_when_it_is_full_not_per_result() -> None:
    buf = BatchBuffer(capacity=1000, batch_rows=64)
    counter = CountingCondition(buf._ready)
    buf._ready = counter
    for k in range(16):  # 16 inference batches of 4 results = one writer batch of 64
        buf.put([4 * k + j for j in range(4)])
    assert counter.notified == 2  # the first result (a batch can start) and the 64th (it is full)
    assert buf.take_batch(10.0, idle_s=0.0, draining=never) == list(range(64))


def test_partial_batch_leaves_after_the_window() -> None:
    buf = BatchBuffer(capacity=100, batch_rows=64)
    buf.put([1, 2, 3])
    t0 = time.monotonic()
    assert buf.take_batch(0.05, idle_s=1.0, draining=never) == [1, 2, 3]
    assert 0.04 <= time.monotonic() - t0 < 1.0


def test_full_batch_wakes_a_waiting_writer_before_the_window_ends() -> None:
    buf = BatchBuffer(capacity=100, batch_rows=8)
    got: list[list[int]] = []
    writer = threading.Thread(target=lambda: got.append(buf.take_batch(30.0, idle_s=30.0, draining=never)))
    writer.start()
    for k in range(4):
        time.sleep(0.01)
        buf.put([2 * k, 2 * k + 1])
    writer.join(5.0)
    assert not writer.is_alive() and got == [list(range(8))]


def test_draining_takes_what_is_there_without_waiting() -> None:
    buf = BatchBuffer(capacity=100, batch_rows=64)
    buf.put([1, 2])
    t0 = time.monotonic()
    assert buf.take_batch(30.0, idle_s=30.0, draining=lambda: True) == [1, 2]
    assert buf.take_batch(30.0, idle_s=30.0, draining=lambda: True) == []
    assert time.monotonic() - t0 < 1.0


def test_producer_blocks_while_full_and_nothing_is_lost() -> None:
    buf = BatchBuffer(capacity=4, batch_rows=4)
    buf.put([0, 1, 2, 3])
    with pytest.raises(TimeoutError, match="writer queue full"):
        buf.put([4], timeout=0.05)
    assert len(buf) == 4
    producer = threading.Thread(target=lambda: buf.put(list(range(4, 10))))  # larger than the capacity
    producer.start()
    taken: list[int] = []
    while len(taken) < 10:
        taken += buf.take_batch(0.0, idle_s=0.5, draining=never)
    producer.join(5.0)
    assert taken == list(range(10)) and not producer.is_alive()
