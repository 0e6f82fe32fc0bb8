"""Admission control of uploads (app/admission.py, POST /inspections): a bounded number decode and
infer at once, a bounded queue waits first come first served, anything beyond is a 503 problem with
Retry-After; the gauges and the refusal counter say so in /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from mes_helpers import assert_problem, jpeg_bytes
from prometheus_client.parser import text_string_to_metric_families

from app.admission import AdmissionGate, AdmissionLimits, Overloaded
from app.api.deps import service_of
from app.main import create_app


def sample_value(client: TestClient, name: str, labels: dict[str, str] | None = None) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and (labels or {}).items() <= sample.labels.items():
                return sample.value
    return 0.0


def test_limits_are_checked_and_retry_after_is_one_queue_wait_at_least_a_second() -> None:
    assert AdmissionLimits(2, 8, 10.0).retry_after_s == 10
    assert AdmissionLimits(2, 8, 2.5).retry_after_s == 3
    assert AdmissionLimits(1, 0, 0.2).retry_after_s == 1
    for bad in [(0, 1, 1.0), (1, -1, 1.0), (1, 1, 0.0)]:
        with pytest.raises(ValueError):
            AdmissionLimits(*bad)


def test_slots_then_queue_first_come_first_served_then_refusal() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(AdmissionLimits(max_in_flight=2, max_queued=2, max_wait_s=60))
        release = asyncio.Event()
        order: list[str] = []

        async def upload(name: str) -> None:
            async with gate.admitted():
                order.append(name)
                await release.wait()

        holders = [asyncio.create_task(upload(n)) for n in ("a", "b")]
        await asyncio.sleep(0)
        assert (gate.in_flight, gate.queued) == (2, 0)
        waiters = [asyncio.create_task(upload(n)) for n in ("c", "d")]
        await asyncio.sleep(0)
        assert (gate.in_flight, gate.queued) == (2, 2)
        with pytest.raises(Overloaded) as refused:  # slots busy and queue full: refused at once
            async with gate.admitted():
                pytest.fail("admitted beyond the queue")
        assert refused.value.retry_after_s == 60 and refused.value.reason == "overloaded"
        release.set()
        await asyncio.gather(*holders, *waiters)
        assert order == ["a", "b", "c", "d"]
        assert (gate.in_flight, gate.queued) == (0, 0)

    asyncio.run(scenario())


def test_a_queued_upload_is_refused_when_its_wait_runs_out_and_leaves_the_queue() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(AdmissionLimits(max_in_flight=1, max_queued=4, max_wait_s=0.05))
        release = asyncio.Event()

        async def hold() -> None:
            async with gate.admitted():
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="no inspection slot came free within 0.05 s"):
            async with gate.admitted():
                pytest.fail("admitted while the slot is held")
        assert (gate.in_flight, gate.queued) == (1, 0)
        release.set()
        await holder
        async with gate.admitted():  # the slot is free again
            assert gate.in_flight == 1

    asyncio.run(scenario())


def test_a_cancelled_waiter_gives_up_its_place() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(AdmissionLimits(max_in_flight=1, max_queued=1, max_wait_s=60))
        release = asyncio.Event()

        async def hold() -> None:
            async with gate.admitted():
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        waiter = asyncio.create_task(hold())  # a client that disconnects while queued
        await asyncio.sleep(0)
        assert gate.queued == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.queued == 0
        release.set()
        await holder
        assert gate.in_flight == 0

    asyncio.run(scenario())


@pytest.fixture
def one_slot_client(app_settings) -> Iterator[TestClient]:
    settings = app_settings.model_copy(update={"upload_max_in_flight": 1, "upload_max_queued": 0,
                                               "upload_max_wait_s": 7.0})
    with TestClient(create_app(settings)) as client:
        yield client


def test_an_upload_beyond_slots_and_queue_is_a_503_problem_with_retry_after(one_slot_client) -> None:
    client = one_slot_client
    gate = service_of(client.app).uploads
    refused = ("inspect_upload_refused_total", {"reason": "queue_full"})
    refused_before = sample_value(client, *refused)
    slot = gate.admitted()
    client.portal.call(slot.__aenter__)  # another upload holds the only slot, nobody may wait
    try:
        assert sample_value(client, "inspect_upload_in_flight") == 1
        resp = client.post("/api/v1/inspections", files={"file": ("f.jpg", jpeg_bytes(), "image/jpeg")})
        body = assert_problem(resp, 503)
        assert resp.headers["retry-after"] == "7"
        assert body["type"].endswith("/overloaded") and "try again in 7 s" in body["detail"]
    finally:
        client.portal.call(slot.__aexit__, None, None, None)
    assert sample_value(client, *refused) == refused_before + 1
    assert client.get("/api/v1/inspections").json()["items"] == []  # nothing was stored
    resp = client.post("/api/v1/inspections", files={"file": ("f.jpg", jpeg_bytes(), "image/jpeg")})
    assert resp.status_code == 201, resp.text
    assert sample_value(client, "inspect_upload_in_flight") == 0
