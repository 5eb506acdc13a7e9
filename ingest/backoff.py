"""Capped exponential backoff: the one retry schedule shared by the inputs and the sinks' `Delivery`.

The step starts at `initial` and is multiplied by `factor` after each delay, never above `max_s`. With
`jitter=(low, high)` each delay is the step times a random factor in [low, high], still capped at `max_s`: many
gateways that lost the same broker or server at once then come back spread out, not in lock-step.
"""

from __future__ import annotations

import random
import threading

__all__ = ["Backoff"]


class Backoff:
    """The delay before the next retry; `reset()` after a success starts again from `initial`."""

    def __init__(self, initial: float, factor: float = 2.0, max_s: float = 30.0,
                 jitter: tuple[float, float] | None = None) -> None:
        # max_s = 0 is allowed: a configured reconnect_max of 0 means retry at once, as it always did.
        if initial <= 0 or factor < 1 or max_s < 0:
            raise ValueError(f"backoff needs initial > 0, max_s >= 0 and factor >= 1 "
                             f"(initial={initial}, factor={factor}, max_s={max_s})")
        if jitter is not None and not 0 <= jitter[0] <= jitter[1]:
            raise ValueError(f"backoff jitter needs 0 <= low <= high, got {jitter}")
        self.initial = initial
        self.factor = factor
        self.max_s = max_s
        self.jitter = jitter
        self._step = min(initial, max_s)  # a cap below the initial step wins (a test's 0.05 s reconnect)
        self.attempts = 0  # delays handed out since the last reset

    @property
    def step(self) -> float:
        """The un-jittered delay the next `next_delay()` is based on."""
        return self._step

    def reset(self) -> None:
        """Start again from `initial` (after a success)."""
        self._step = min(self.initial, self.max_s)
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next retry; grows the step for the one after."""
        delay = self._step
        if self.jitter is not None:
            delay = min(delay * random.uniform(*self.jitter), self.max_s)
        self._step = min(self._step * self.factor, self.max_s)
        self.attempts += 1
        return delay

    def wait(self, stop: threading.Event) -> bool:
        """Sleep the next delay, waking early when `stop` is set; True when stopped."""
        return stop.wait(self.next_delay())
