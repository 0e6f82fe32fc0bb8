"""Per-camera queues: block vs drop-oldest, drop counting, micro-batching across cameras."""

from __future__ import annotations

import threading
import time

import pytest

from app.ingest.queues import FrameHub, QueueClosed


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
    producer.join(2)
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
    time.sleep(0.05)
    hub.close()
    t.join(2)
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

    def later() -> None:
        time.sleep(0.05)
        hub.put("b", 2)
        hub.put("a", 3)

    threading.Thread(target=later).start()
    batch = hub.get_batch(3, max_wait_s=5.0)  # fills before the wait runs out
    assert sorted(batch) == [1, 2, 3]
    hub.put("a", 4)
    assert hub.get_batch(3, max_wait_s=0.01) == [4]  # a partial batch once the wait is over


def test_idle_get_returns_empty() -> None:
    hub = FrameHub()
    hub.add_camera("a", 1, "block")
    assert hub.get_batch(4, 0.01, idle_timeout=0.01) == []
    with pytest.raises(ValueError, match="unknown buffer policy"):
        hub.add_camera("x", 1, "newest")
