"""Running in the foreground until SIGINT/SIGTERM or a deadline: one helper for `run`, `demo` and `simulators`."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

__all__ = ["stop_on_signals", "wait_for_signal"]


def stop_on_signals() -> threading.Event:
    """An event that SIGINT and SIGTERM set from now on (install before announcing readiness)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def wait_for_signal(
    duration: float | None = None,
    on_tick: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Block until SIGINT/SIGTERM (or `stop` is set) or `duration` s (None/0: none), calling `on_tick` each second."""
    if stop is None:
        stop = stop_on_signals()
    if on_tick is None:  # nothing to drive: sleep through in one wait
        stop.wait(duration if duration else None)
        return
    deadline = time.monotonic() + duration if duration else None
    while not stop.wait(1.0):
        on_tick()
        if deadline is not None and time.monotonic() >= deadline:
            break
