"""The writer's inbox (``BatchBuffer``): order, back-pressure, and wake-ups per batch instead of per
result (the writer must not preempt the inference workers for every frame)."""

from __future__ import annotations

import threading
import time

import pytest

from app.ingest.writer import BatchBuffer


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
    for k in range(16):  # 16 inference batches of 4 results = one writer batch of 64
        buf.put([4 * k + j for j in range(4)])
    assert buf.wakeups == 2  # the first result (a batch can start) and the 64th (it is full)
    assert buf.take_batch(10.0, idle_s=0.0, draining=never) == list(range(64))


def test_partial_batch_leaves_after_the_window() -> None:
    buf = BatchBuffer(capacity=100, batch_rows=64)
    buf.put([1, 2, 3])
    got: list[list[int]] = []
    t0 = time.monotonic()
    writer = threading.Thread(target=lambda: got.append(buf.take_batch(0.05, idle_s=3600, draining=never)))
    writer.start()
    writer.join(60)  # a guard against a hang, not a speed goal: the window is 0.05 s, the idle wait an hour
    assert not writer.is_alive() and got == [[1, 2, 3]]
    assert time.monotonic() - t0 >= 0.05  # it did wait out the window for more rows


def test_full_batch_wakes_a_waiting_writer_before_the_window_ends() -> None:
    buf = BatchBuffer(capacity=100, batch_rows=8)
    got: list[list[int]] = []
    writer = threading.Thread(target=lambda: got.append(buf.take_batch(30.0, idle_s=30.0, draining=never)))
    writer.start()
    for k in range(4):
        buf.put([2 * k, 2 * k + 1])
    writer.join(60)  # a full batch ends the 30-s window at once
    assert not writer.is_alive() and got == [list(range(8))]


def test_draining_takes_what_is_there_without_waiting() -> None:
    buf = BatchBuffer(capacity=100, batch_rows=64)
    buf.put([1, 2])
    got: list[list[int]] = []

    def drain() -> None:
        got.append(buf.take_batch(3600, idle_s=3600, draining=lambda: True))
        got.append(buf.take_batch(3600, idle_s=3600, draining=lambda: True))

    writer = threading.Thread(target=drain, daemon=True)
    writer.start()
    writer.join(60)  # draining never waits for a window or for rows: an hour-long wait would hang here
    assert not writer.is_alive() and got == [[1, 2], []]


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
