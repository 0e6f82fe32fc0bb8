"""Per-camera queues: block vs drop-oldest, drop counting, micro-batching across cameras."""

from __future__ import annotations

import threading
import time

import pytest

from app.ingest.queues import FrameHub, QueueClosed


def wait_until(condition, limit_s: float = 60.0) -> None:
    """Poll until ``condition()`` holds; the limit only guards against a hang."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_drop_oldest_keeps_the_freshest_and_counts() -> None:
    hub = FrameHub()
    dropped: list[int] = []
    hub.add_camera("live", 3, "drop-oldest", on_drop=dropped.append)
    for i in range(10):
        assert hub.put("live", i) is True  # never waits
    assert dropped == [0, 1, 2, 3, 4, 5, 6]
    assert hub.get_batch(8, 0) == [7, 8, 9]


def test_block_waits_for_room_and_loses_nothing() -> None:
    hub = FrameHub()
    hub.add_camera("file", 2, "block", on_drop=lambda _: pytest.fail("block must not drop"))
    assert hub.put("file", 0) and hub.put("file", 1)
    assert hub.put("file", 2, timeout=0.05) is False  # full: the producer waits
    got: list[int] = []
    producer = threading.Thread(target=lambda: [hub.put("file", i) for i in range(2, 50)])
    producer.start()
    while len(got) < 50:
        got.extend(hub.get_batch(3, 0, idle_timeout=1.0))
    producer.join(60)
    assert got == list(range(50))  # every frame, in order


def test_close_wakes_a_blocked_producer_and_queued_frames_drain() -> None:
    hub = FrameHub()
    hub.add_camera("file", 1, "block")
    hub.put("file", "a")
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            hub.put("file", "b")
        except QueueClosed as exc:
            errors.append(exc)

    t = threading.Thread(target=produce)
    t.start()
    wait_until(lambda: hub.waiting_producers == 1)  # the producer is inside the wait close() must end
    hub.close()
    t.join(60)
    assert not t.is_alive() and len(errors) == 1
    assert hub.get_batch(4, 0) == ["a"]  # what was queued is still inspected
    assert hub.get_batch(4, 0) == []


def test_micro_batch_takes_round_robin_across_cameras() -> None:
    hub = FrameHub()
    for cam in ("a", "b", "c"):
        hub.add_camera(cam, 10, "block")
    for i in range(4):
        hub.put("a", f"a{i}")
    hub.put("b", "b0")
    hub.put("c", "c0")
    batch = hub.get_batch(4, 0)
    assert sorted(batch) == ["a0", "a1", "b0", "c0"]  # one per camera per round: b and c not starved
    assert hub.get_batch(4, 0) == ["a2", "a3"]


def test_micro_batch_waits_up_to_max_wait_for_more_frames() -> None:
    hub = FrameHub()
    hub.add_camera("a", 10, "block")
    hub.add_camera("b", 10, "block")
    hub.put("a", 1)
    got: list[list[int]] = []
    consumer = threading.Thread(target=lambda: got.append(hub.get_batch(3, max_wait_s=600.0)))
    consumer.start()
    # depth() takes the hub's lock, which the consumer holds until it waits: 0 means it took frame 1
    # and now waits for the batch to fill
    wait_until(lambda: hub.depth() == 0)
    hub.put("b", 2)
    hub.put("a", 3)
    consumer.join(60)
    assert not consumer.is_alive() and sorted(got[0]) == [1, 2, 3]  # filled before the wait ran out
    hub.put("a", 4)
    assert hub.get_batch(3, max_wait_s=0.01) == [4]  # a partial batch once the wait is over


def test_idle_get_returns_empty() -> None:
    hub = FrameHub()
    hub.add_camera("a", 1, "block")
    assert hub.get_batch(4, 0.01, idle_timeout=0.01) == []
    with pytest.raises(ValueError, match="unknown buffer policy"):
        hub.add_camera("x", 1, "newest")
