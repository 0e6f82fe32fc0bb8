"""The pipeline's latency window: the last n values, oldest first, in memory fixed at start."""

from __future__ import annotations

import pytest

from app.ingest.latency_window import LatencyWindow


def test_holds_every_value_until_full() -> None:
    window = LatencyWindow(size=4)
    assert window.to_list() == [] and len(window) == 0
    for value in (0.1, 0.2, 0.3):
        window.append(value)
    assert window.to_list() == [0.1, 0.2, 0.3] and len(window) == 3


def test_keeps_the_last_values_oldest_first_once_full() -> None:
    window = LatencyWindow(size=3)
    for value in range(1, 5):  # one past full: 1 is overwritten
        window.append(float(value))
    assert window.to_list() == [2.0, 3.0, 4.0]
    window.append(5.0)
    window.append(6.0)  # exactly two rounds: the ring's start is index 0 again
    assert window.to_list() == [4.0, 5.0, 6.0] and len(window) == 3


def test_memory_is_fixed_when_created() -> None:
    window = LatencyWindow(size=1000)
    before = window.nbytes
    for value in range(5000):
        window.append(value / 1000)
    assert before == window.nbytes == 1000 * 8


def test_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError):
        LatencyWindow(size=0)
