"""The shared Backoff: the schedules the inputs and the sinks had written by hand, reproduced."""

from __future__ import annotations

import threading

import pytest

from ingest.backoff import Backoff


def test_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, max_s=3.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.attempts == 5
    backoff.reset()
    assert backoff.next_delay() == 0.5
    assert backoff.attempts == 1


def test_a_cap_below_the_initial_step_wins() -> None:
    backoff = Backoff(0.5, max_s=0.05)
    assert [backoff.next_delay() for _ in range(3)] == [0.05, 0.05, 0.05]


def test_a_zero_cap_retries_at_once() -> None:
    backoff = Backoff(0.5, max_s=0.0, jitter=(0.5, 1.0))
    assert [backoff.next_delay() for _ in range(2)] == [0.0, 0.0]


def test_jitter_stays_in_its_band_and_under_the_cap() -> None:
    backoff = Backoff(1.0, max_s=4.0, jitter=(0.5, 1.5))
    for step in (1.0, 2.0, 4.0, 4.0, 4.0):
        assert backoff.step == step
        delay = backoff.next_delay()
        assert step * 0.5 <= delay <= min(step * 1.5, 4.0)


def test_wait_returns_at_once_when_stopped() -> None:
    stop = threading.Event()
    stop.set()
    backoff = Backoff(30.0, max_s=30.0)
    assert backoff.wait(stop) is True
    assert backoff.step == 30.0 and backoff.attempts == 1


@pytest.mark.parametrize("args", [(0.0, 2.0, 1.0), (1.0, 0.5, 1.0), (1.0, 2.0, -1.0)])
def test_rejects_a_schedule_that_never_waits_or_shrinks(args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(*args)


def test_rejects_an_inverted_jitter_band() -> None:
    with pytest.raises(ValueError):
        Backoff(1.0, jitter=(1.5, 0.5))
