"""The provisional verdict relay between the inference workers and the line integrations: it never
makes a worker wait; beyond its bound the newest verdicts are dropped and counted."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from app.line.verdicts import ProvisionalVerdict, VerdictRelay


def verdict(k: int) -> ProvisionalVerdict:
    now = datetime.now(UTC)
    return ProvisionalVerdict(frame_uid=f"f{k}", camera_id="cam1", line="L1", station=None, part_id=None,
                              verdict="NG", defects={"scratches": 2}, captured_at=now, inferred_at=now,
                              model_version="m1", position=k)


def test_a_stalled_sink_costs_drops_not_waiting() -> None:
    release = threading.Event()
    delivered: list[str] = []
    first_taken = threading.Event()
    drops: list[int] = []

    def deliver(verdicts: list[ProvisionalVerdict]) -> None:
        first_taken.set()
        release.wait(10)  # a sink that hangs (a broker that does not read)
        delivered.extend(v.frame_uid for v in verdicts)

    relay = VerdictRelay(deliver, queue_size=3, name="test-verdicts", on_drop=drops.append).start()
    try:
        relay.offer([verdict(0)])
        assert first_taken.wait(10)  # the sink now holds f0 and hangs
        relay.offer([verdict(k) for k in range(1, 6)])  # returns at once: three wait, two are dropped
        assert (relay.waiting, relay.dropped, drops) == (3, 2, [2])
        release.set()
    finally:
        relay.stop()
    assert delivered == ["f0", "f1", "f2", "f3"]
    assert relay.delivered == 4


def test_the_payload_says_it_is_provisional() -> None:
    body = verdict(7).payload()
    assert body["provisional"] is True and body["frame_uid"] == "f7" and body["defect_count"] == 2
    assert set(body) >= {"camera_id", "part_id", "verdict", "defects", "captured_at", "inferred_at"}
