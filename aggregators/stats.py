"""Window statistics with numpy: arithmetic and energetic (decibel) statistics, and coverage."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["coverage", "energetic_mean", "level_stats"]

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
