"""Window statistics with numpy: arithmetic, energetic (decibel) and counter statistics."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["counter_delta", "coverage", "energetic_mean", "level_stats"]

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


def counter_delta(values: FloatArray, previous: float | None) -> tuple[float, int]:
    """Consumption from a cumulative meter's readings (in time order), and how many resets were seen.

    The step from `previous` (the last value before the window) is included so no interval is lost at
    window edges. A drop is a reset or a replaced meter: the new value counts as consumed since the reset.
    """
    series = values if previous is None else np.concatenate(([previous], values))
    steps = np.diff(series)
    resets = steps < 0
    consumed = float(steps[~resets].sum())
    if resets.any():
        consumed += float(series[1:][resets].sum())
    return consumed, int(resets.sum())


def coverage(ts_ns: npt.NDArray[np.int64], start_ns: int, end_ns: int, slots: int) -> float:
    """Fraction of the window's `slots` equal sub-intervals that hold at least one reading."""
    slot_ns = (end_ns - start_ns) / slots
    idx = np.floor((ts_ns - start_ns) / slot_ns).astype(np.int64)
    idx = idx[(idx >= 0) & (idx < slots)]
    return float(np.unique(idx).size) / slots
