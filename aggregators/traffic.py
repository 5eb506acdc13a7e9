"""Traffic indicators: hourly volume, peak-hour factor (HCM), percentile speed (TxDOT), class shares."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["PeakHour", "class_shares", "hourly_volume", "peak_hour_factor", "speed_percentile"]


def _counts(counts: Sequence[float]) -> list[float]:
    out = [float(c) for c in counts]
    if any(not math.isfinite(c) or c < 0 for c in out):
        raise ValueError("counts must be finite and non-negative")
    return out


def hourly_volume(counts: Sequence[float], bin_minutes: int = 15, rolling: bool = False) -> list[float]:
    """Vehicles per hour from consecutive count bins: per whole hour, or every 60-min window if rolling."""
    if bin_minutes <= 0 or 60 % bin_minutes:
        raise ValueError(f"bin_minutes must divide 60, got {bin_minutes}")
    k = 60 // bin_minutes
    c = _counts(counts)
    if rolling:
        return [sum(c[i : i + k]) for i in range(len(c) - k + 1)]
    # Bins are taken in blocks of one hour from the first bin; a trailing partial hour is not a volume.
    return [sum(c[i : i + k]) for i in range(0, len(c) - k + 1, k)]


@dataclass(frozen=True, slots=True)
class PeakHour:
    """Peak hour of a 15-min count series and its HCM peak-hour factor (None when nothing passed)."""

    phf: float | None
    volume: float  # vehicles in the peak hour (V)
    start_index: int  # index of the first 15-min bin of the peak hour
    peak_15min: float  # highest 15-min count within the peak hour (V15)


def peak_hour_factor(counts_15min: Sequence[float]) -> PeakHour:
    """HCM peak-hour factor PHF = V / (4·V15,max) over the busiest 4 consecutive 15-min bins."""
    c = _counts(counts_15min)
    if len(c) < 4:
        raise ValueError(f"need at least four 15-min counts (one hour), got {len(c)}")
    sums = hourly_volume(c, 15, rolling=True)
    volume = max(sums)
    start = sums.index(volume)  # ties: the earliest hour
    v15 = max(c[start : start + 4])
    # Exact value (0.8229… for 900/1000/1200/850); HCM practice reports it rounded to two decimals (0.82).
    phf = volume / (4 * v15) if v15 > 0 else None
    return PeakHour(phf, volume, start, v15)


def speed_percentile(speeds: Sequence[float], percentile: float = 85, method: str = "txdot") -> float:
    """Percentile speed of free-flowing vehicles; default TxDOT nearest rank (no interpolation)."""
    values = sorted(float(s) for s in speeds)
    if not values:
        raise ValueError("no speeds")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError("speeds must be finite and non-negative")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    n = len(values)
    # Exact arithmetic for N·p/100 so 125 × 85 % is exactly 106.25 and 20 × 85 % exactly 17.
    position = Fraction(n) * Fraction(str(percentile)) / 100
    if method == "txdot":
        # A12: TxDOT multiplies N by 0.85 and counts that car up from the slowest; "in no case shall the
        # 85th percentile speed be interpolated". We round the car number to the nearest integer, halves up
        # (106.25 → 106th car, 21.6 → 22nd): the observed vehicle nearest to the percentile position.
        rank = math.floor(position + Fraction(1, 2))
    elif method == "ceil":
        rank = math.ceil(position)  # classic nearest-rank definition
    elif method == "linear":
        # Linear interpolation between order statistics (numpy's default), for comparison only.
        h = (n - 1) * Fraction(str(percentile)) / 100
        lo = math.floor(h)
        hi = min(lo + 1, n - 1)
        return values[lo] + float(h - lo) * (values[hi] - values[lo])
    else:
        raise ValueError(f"method must be 'txdot', 'ceil' or 'linear', not {method!r}")
    return values[min(max(rank, 1), n) - 1]


def class_shares(counts_by_class: Mapping[str, float]) -> dict[str, float | None]:
    """Share (fraction 0..1) of each vehicle class in the total count; None for every class if none passed."""
    values = dict(zip(counts_by_class, _counts(list(counts_by_class.values())), strict=True))
    total = sum(values.values())
    if total == 0:
        return dict.fromkeys(values)
    return {k: v / total for k, v in values.items()}
