"""The one run-until-signal helper: SIGINT/SIGTERM set its stop event; a set event or a deadline ends the wait."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from gateway.signals import stop_on_signals, wait_for_signal


@pytest.fixture
def restore_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_sets_the_stop_event(sig: signal.Signals, restore_handlers: None) -> None:
    stop = stop_on_signals()
    assert not stop.is_set()
    os.kill(os.getpid(), sig)  # delivered to the main thread, which runs the handler before returning here
    assert stop.wait(5)
    wait_for_signal(None, stop=stop)  # already stopped: returns at once, without a deadline


def test_a_stopped_wait_does_not_tick(restore_handlers: None) -> None:
    stop = stop_on_signals()
    stop.set()
    ticks: list[int] = []
    wait_for_signal(3600, lambda: ticks.append(1), stop=stop)
    assert ticks == []


def test_the_deadline_ends_the_ticking_wait(restore_handlers: None) -> None:
    ticks: list[int] = []
    wait_for_signal(0.01, lambda: ticks.append(1))  # the first tick (after 1 s) is past the deadline
    assert ticks == [1]
