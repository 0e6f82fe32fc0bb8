"""The one background loop: steps repeat while work waits, a wake skips the wait, a failed step is
logged and the loop goes on, a stop ends it (after draining, when asked)."""

from __future__ import annotations

import logging
import threading

import pytest

from app.background import BackgroundLoop

LONG = 600.0  # an interval no test waits out: anything that needs it to pass fails on its timeout
WAIT = 20.0


def test_steps_again_at_once_while_work_waits_then_waits() -> None:
    work = [3]
    idle = threading.Event()

    def step() -> bool:
        if work[0] == 0:
            idle.set()
            return False
        work[0] -= 1
        return True

    loop = BackgroundLoop("t-busy", step, LONG)
    loop.start()
    try:
        assert idle.wait(WAIT), "three pending items must run back to back, without the interval"
        assert work[0] == 0
    finally:
        loop.stop()


def test_wake_runs_the_next_step_before_the_interval() -> None:
    calls = threading.Semaphore(0)
    loop = BackgroundLoop("t-wake", lambda: bool(calls.release()), LONG)
    loop.start()
    try:
        assert calls.acquire(timeout=WAIT)  # the first step runs at start
        loop.wake()
        assert calls.acquire(timeout=WAIT), "wake() must end the wait"
    finally:
        loop.stop()


def test_a_failed_step_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []
    second = threading.Event()

    def step() -> bool:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("database away")
        second.set()
        return False

    loop = BackgroundLoop("t-fail", step, LONG)
    with caplog.at_level(logging.ERROR, logger="app.background"):
        loop.start()
        try:
            loop.wake()
            assert second.wait(WAIT)
        finally:
            loop.stop()
    assert any("t-fail: step failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_stop_ends_the_thread_and_start_again_runs_it() -> None:
    ran = threading.Semaphore(0)
    loop = BackgroundLoop("t-restart", lambda: bool(ran.release()), LONG)
    loop.start()
    assert ran.acquire(timeout=WAIT) and loop.running
    loop.stop()
    assert not loop.running and loop.stopping
    loop.start()
    try:
        assert ran.acquire(timeout=WAIT) and loop.running and not loop.stopping
    finally:
        loop.stop()


@pytest.mark.parametrize(("drain", "expected"), [(True, [0, 1, 2, 3, 4]), (False, [0])])
def test_stop_drains_the_waiting_work_only_when_asked(drain: bool, expected: list[int]) -> None:
    queue = list(range(5))
    done: list[int] = []
    inside, release = threading.Event(), threading.Event()

    def step() -> bool:
        if not inside.is_set():  # the first step is held until stop() was called
            inside.set()
            release.wait(WAIT)
        if queue:
            done.append(queue.pop(0))
        return bool(queue)

    loop = BackgroundLoop("t-drain", step, LONG, drain=drain)
    loop.start()
    assert inside.wait(WAIT)
    stopper = threading.Thread(target=loop.stop, kwargs={"timeout": WAIT})
    stopper.start()
    while not loop.stopping:  # stop() has set the flag before the held step goes on
        threading.Event().wait(0.01)
    release.set()
    stopper.join(WAIT + 5)
    assert not stopper.is_alive() and not loop.running
    assert done == expected


def test_refuses_a_zero_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        BackgroundLoop("t-zero", lambda: False, 0)
