"""Cumulative meter totals (energy_import kWh, water_volume m³, …) → consumption per interval.

`CounterDelta` is a small deterministic state machine (no clock, no I/O): feed it readings in timestamp
order and it returns one `CounterStep` per reading. The rules, in the order they are tried:

1. A reading that is not a finite, non-negative number, or is not later than the last accepted reading,
   is rejected with a reason and changes nothing.
2. The first reading is the baseline (no consumption yet).
3. value >= previous: consumption = value - previous ("ok").
4. A drop no larger than `jitter` is noise: consumption 0 and the baseline keeps the higher value, so the
   noise is never counted twice ("ok", reason "jitter").
5. With a known `rollover` (the counter modulus, e.g. 2**32 × 0.01 kWh for a 32-bit register in 0.01 kWh),
   a drop is a wrap when the forward distance rollover - previous + value is less than half the range
   (serial-number arithmetic, as RFC 1982): consumption = that distance ("rollover").
6. Any other drop is a counter reset or meter replacement: the new value is the consumption since the reset
   ("reset"; counted in `resets`). Consumption between the last reading and the reset itself is lost; a
   meter that resets to zero at the reset loses nothing.
7. If `max_rate` (units per hour) is set, a step whose consumption exceeds max_rate × elapsed hours is
   rejected as an absurd jump; the baseline stays on the last good reading, so a single glitch costs nothing.
   If the next `rebase_after` - 1 readings continue plausibly from the rejected one, the jump was real (a
   replacement meter with a higher total, a manual correction): the new level becomes the baseline
   ("rebased"), consumption since the first reading of the new level is reported, and the gap between the
   last good reading and that first reading is unknown (never guessed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CounterDelta", "CounterStep"]

_NS_PER_HOUR = 3_600_000_000_000


@dataclass(frozen=True, slots=True)
class CounterStep:
    """What one reading meant: consumption over (start_ts, ts], or why there is none."""

    ts: int
    value: float
    status: str  # "baseline" | "ok" | "reset" | "rollover" | "rebased" | "rejected"
    consumption: float | None = None
    start_ts: int | None = None  # start (exclusive) of the interval `consumption` covers
    reason: str = ""


class CounterDelta:
    """Turns a cumulative meter series into per-interval consumption, surviving resets, wraps and glitches."""

    def __init__(
        self,
        max_rate: float | None = None,
        rollover: float | None = None,
        jitter: float = 0.0,
        rebase_after: int | None = 2,
    ) -> None:
        if max_rate is not None and not (math.isfinite(max_rate) and max_rate > 0):
            raise ValueError(f"max_rate must be a positive number of units per hour, got {max_rate!r}")
        if rollover is not None and not (math.isfinite(rollover) and rollover > 0):
            raise ValueError(f"rollover must be a positive counter modulus, got {rollover!r}")
        if not (math.isfinite(jitter) and jitter >= 0):
            raise ValueError(f"jitter must be a non-negative number, got {jitter!r}")
        if rebase_after is not None and rebase_after < 2:
            raise ValueError("rebase_after must be >= 2 (the jump plus at least one confirming reading) or None")
        self.max_rate = max_rate
        self.rollover = rollover
        self.jitter = jitter
        self.rebase_after = rebase_after
        self.resets = 0
        self.rollovers = 0
        self.rejected = 0
        self.rebases = 0
        self._last: tuple[int, float] | None = None
        self._pending: list[tuple[int, float]] = []  # consecutive rejected readings that agree with each other

    @property
    def last(self) -> tuple[int, float] | None:
        """The current baseline (timestamp ns, meter total), or None before the first reading."""
        return self._last

    def counts(self) -> dict[str, int]:
        """Event counters: resets, rollovers, rejected readings, rebases."""
        return {
            "resets": self.resets,
            "rollovers": self.rollovers,
            "rejected": self.rejected,
            "rebases": self.rebases,
        }

    def _classify(self, prev: float, value: float) -> tuple[str, float, str]:
        if value >= prev:
            return "ok", value - prev, ""
        drop = prev - value
        if drop <= self.jitter:
            return "ok", 0.0, f"jitter: drop of {drop:g} within tolerance {self.jitter:g}"
        if self.rollover is not None:
            forward = self.rollover - prev + value
            if forward < self.rollover / 2:
                return "rollover", forward, f"counter wrapped at {self.rollover:g}"
        return "reset", value, f"counter dropped from {prev:g} to {value:g}: reset or meter replaced"

    def _too_fast(self, amount: float, start_ts: int, ts: int) -> bool:
        if self.max_rate is None:
            return False
        return amount > self.max_rate * (ts - start_ts) / _NS_PER_HOUR

    def _reject(self, ts: int, value: float, reason: str) -> CounterStep:
        self.rejected += 1
        return CounterStep(ts, value, "rejected", reason=reason)

    def update(self, ts: int, value: float) -> CounterStep:
        """Feed one meter total at `ts` (UTC ns); returns the consumption since the previous accepted one."""
        if isinstance(value, bool) or not math.isfinite(value):
            return self._reject(ts, value, f"meter total is not a finite number: {value!r}")
        value = float(value)
        if value < 0:
            return self._reject(ts, value, f"negative meter total {value:g}")
        if self.rollover is not None and value >= self.rollover:
            return self._reject(ts, value, f"meter total {value:g} is outside the counter range [0, {self.rollover:g})")
        if self._last is None:
            self._last = (ts, value)
            return CounterStep(ts, value, "baseline", reason="first reading")
        last_ts, last_value = self._last
        if ts <= last_ts:
            return self._reject(ts, value, f"timestamp {ts} is not after the previous reading at {last_ts}")

        status, amount, reason = self._classify(last_value, value)
        if not self._too_fast(amount, last_ts, ts):
            self._pending.clear()
            # Jitter keeps the higher total as the baseline so the noise is not counted again later.
            self._last = (ts, last_value if status == "ok" and value < last_value else value)
            if status == "reset":
                self.resets += 1
            elif status == "rollover":
                self.rollovers += 1
            return CounterStep(ts, value, status, amount, last_ts, reason)

        hours = (ts - last_ts) / _NS_PER_HOUR
        why = (
            f"{status} step of {amount:g} in {hours * 3600:g} s exceeds the maximum rate "
            f"{self.max_rate:g}/h (from {last_value:g} to {value:g})"
        )
        return self._maybe_rebase(ts, value, why)

    def _maybe_rebase(self, ts: int, value: float, why: str) -> CounterStep:
        if self.rebase_after is None:
            return self._reject(ts, value, why)
        if self._pending:
            p_ts, p_value = self._pending[-1]
            plausible = ts > p_ts and value >= p_value and not self._too_fast(value - p_value, p_ts, ts)
            if not plausible:
                self._pending.clear()
        self._pending.append((ts, value))
        if len(self._pending) < self.rebase_after:
            return self._reject(ts, value, why)
        first_ts, first_value = self._pending[0]
        self._pending.clear()
        self._last = (ts, value)
        self.rebases += 1
        return CounterStep(
            ts,
            value,
            "rebased",
            value - first_value,
            first_ts,
            f"new level confirmed by {self.rebase_after} readings; consumption before {first_ts} is unknown",
        )

    def process(self, series: Iterable[tuple[int, float]]) -> list[CounterStep]:
        """Feed (ts_ns, total) pairs in order and return one step per reading."""
        return [self.update(ts, value) for ts, value in series]
