"""Window statistics: arithmetic and energetic (decibel) statistics, and coverage.

numpy does the work, except for windows of fewer than SMALL_WINDOW values (a one-minute window of a sensor read
every ten seconds): there numpy's cost per call (about 100 µs a window: 10 s a minute for 100,000 series) is
all the cost, and plain Python gives the same numbers, bit for bit (tests/core/test_window_stats.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["SMALL_WINDOW", "coverage", "energetic_mean", "level_stats", "small_coverage", "small_level_stats",
           "small_sum"]

SMALL_WINDOW = 8  # below 8 values numpy's pairwise sum is a plain loop from 0.0, which small_sum repeats

FloatArray = npt.NDArray[np.float64]


def energetic_mean(levels_db: FloatArray) -> float:
    """10·lg(mean(10^(L/10))): the only correct mean of sound levels (never the arithmetic mean)."""
    # Subtract the max before exponentiating so loud levels cannot overflow.
    top = float(levels_db.max())
    return top + 10.0 * float(np.log10(np.mean(np.power(10.0, (levels_db - top) / 10.0))))


def level_stats(values: FloatArray, decibel: bool) -> dict[str, float]:
    """count, mean (energetic for dB), min, max, p50 and p95 of one window's values."""
    mean = energetic_mean(values) if decibel else float(values.mean())
    p50, p95 = np.percentile(values, [50.0, 95.0])
    return {
        "count": int(values.size),
        "mean": mean,
        "min": float(values.min()),
        "max": float(values.max()),
        "p50": float(p50),
        "p95": float(p95),
    }


def coverage(ts_ns: npt.NDArray[np.int64], start_ns: int, end_ns: int, slots: int) -> float:
    """Fraction of the window's `slots` equal sub-intervals that hold at least one reading."""
    slot_ns = (end_ns - start_ns) / slots
    idx = np.floor((ts_ns - start_ns) / slot_ns).astype(np.int64)
    idx = idx[(idx >= 0) & (idx < slots)]
    return float(np.unique(idx).size) / slots


def small_sum(values: Sequence[float]) -> float:
    """numpy's sum of fewer than SMALL_WINDOW floats: left to right from 0.0 (not sum(), which compensates in 3.12)."""
    total = 0.0
    for v in values:
        total += v
    return total


def small_level_stats(values: Sequence[float]) -> dict[str, float]:
    """level_stats of fewer than SMALL_WINDOW arithmetic (not decibel) values, in plain Python."""
    ordered = sorted(values)
    n = len(ordered)
    return {"count": n, "mean": small_sum(values) / n, "min": ordered[0], "max": ordered[-1],
            "p50": _linear_percentile(ordered, 0.5), "p95": _linear_percentile(ordered, 0.95)}


def _linear_percentile(ordered: Sequence[float], q: float) -> float:
    """numpy.percentile's default method ("linear") on sorted values: index (n - 1)·q, and numpy's lerp."""
    index = (len(ordered) - 1) * q
    below = math.floor(index)
    if below >= len(ordered) - 1:
        return ordered[-1]
    t = index - below
    a, b = ordered[below], ordered[below + 1]
    step = b - a
    # numpy interpolates from the nearer end: b - step·(1 - t) from t = 0.5 on, a + step·t below.
    return b - step * (1 - t) if t >= 0.5 else a + step * t


def small_coverage(ts_ns: Sequence[int], start_ns: int, end_ns: int, slots: int) -> float:
    """coverage() of a few timestamps, in plain Python."""
    slot_ns = (end_ns - start_ns) / slots
    used = {math.floor((t - start_ns) / slot_ns) for t in ts_ns}
    return float(sum(1 for i in used if 0 <= i < slots)) / slots
