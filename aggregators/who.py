"""WHO Global Air Quality Guidelines 2021 (Table 0.1): guideline levels, exceedance days, compliance.

Units: µg/m³, except CO in mg/m³. Short-term (24-h) levels are defined as the 99th percentile of the daily
values of a year ("3-4 exceedance days per year"); for O3 the daily value is the maximum 8-h mean.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

__all__ = [
    "LEVELS",
    "WHO_2021",
    "ComplianceResult",
    "attained_level",
    "complies_24h",
    "complies_annual",
    "exceedance_days",
    "guideline",
    "peak_season_o3",
    "percentile_99",
]

LEVELS: Final = ("IT-1", "IT-2", "IT-3", "IT-4", "AQG")

# (pollutant, averaging) -> {level: value}. Averaging "24h" is the daily mean, except O3 where it is the
# daily maximum 8-h mean; "annual" for O3 is the peak-season mean. SO2 24-h AQG is 40 (the airclim.org
# copy's 50 is a misprint, see docs/kpis.md §4). CO is in mg/m³.
WHO_2021: Final[dict[tuple[str, str], dict[str, float]]] = {
    ("pm2_5", "annual"): {"IT-1": 35, "IT-2": 25, "IT-3": 15, "IT-4": 10, "AQG": 5},
    ("pm2_5", "24h"): {"IT-1": 75, "IT-2": 50, "IT-3": 37.5, "IT-4": 25, "AQG": 15},
    ("pm10", "annual"): {"IT-1": 70, "IT-2": 50, "IT-3": 30, "IT-4": 20, "AQG": 15},
    ("pm10", "24h"): {"IT-1": 150, "IT-2": 100, "IT-3": 75, "IT-4": 50, "AQG": 45},
    ("o3", "annual"): {"IT-1": 100, "IT-2": 70, "AQG": 60},
    ("o3", "24h"): {"IT-1": 160, "IT-2": 120, "AQG": 100},
    ("no2", "annual"): {"IT-1": 40, "IT-2": 30, "IT-3": 20, "AQG": 10},
    ("no2", "24h"): {"IT-1": 120, "IT-2": 50, "AQG": 25},
    ("so2", "24h"): {"IT-1": 125, "IT-2": 50, "AQG": 40},
    ("co", "24h"): {"IT-1": 7, "AQG": 4},
}


def guideline(pollutant: str, averaging: str = "24h", level: str = "AQG") -> float:
    """The WHO 2021 value of one pollutant, averaging ("24h" or "annual") and level ("AQG", "IT-1"…)."""
    try:
        row = WHO_2021[(pollutant, averaging)]
    except KeyError:
        raise ValueError(f"WHO 2021 has no {averaging!r} guideline for {pollutant!r}") from None
    try:
        return row[level]
    except KeyError:
        raise ValueError(f"WHO 2021 {pollutant} {averaging} has no level {level!r} (has {', '.join(row)})") from None


def _days(daily_means: Iterable[float | None]) -> list[float]:
    out: list[float] = []
    for v in daily_means:
        # A7: incomplete days are the caller's call (e.g. fewer than 18 valid hours → pass None); a None or
        # NaN day is not a day of the year's distribution, so it counts neither as an exceedance nor in n.
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out.append(float(v))
    return out


def exceedance_days(daily_means: Iterable[float | None], pollutant: str, level: str = "AQG") -> int:
    """Number of valid days whose daily value is strictly above the 24-h guideline level."""
    limit = guideline(pollutant, "24h", level)
    return sum(1 for v in _days(daily_means) if v > limit)


def percentile_99(values: Sequence[float], method: str = "nearest_rank") -> float:
    """99th percentile of daily values: nearest rank (default, an observed day) or linear interpolation."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("no daily values")
    if method == "nearest_rank":
        return xs[math.ceil(Fraction(99 * n, 100)) - 1]
    if method == "linear":
        h = Fraction(99 * (n - 1), 100)
        lo = math.floor(h)
        hi = min(lo + 1, n - 1)
        return xs[lo] + float(h - lo) * (xs[hi] - xs[lo])
    raise ValueError(f"method must be 'nearest_rank' or 'linear', not {method!r}")


@dataclass(frozen=True, slots=True)
class ComplianceResult:
    """Outcome of a 24-h guideline check over one year of daily values."""

    complies: bool
    p99: float
    limit: float
    n_days: int
    exceedance_days: int
    allowed_exceedances: int  # exceedance days the percentile rule tolerates for this n (3 for 365 days)

    def __bool__(self) -> bool:
        """Truthy when the guideline is met, so `if complies_24h(...)` reads naturally."""
        return self.complies


def complies_24h(
    daily_means: Iterable[float | None], pollutant: str, level: str = "AQG", method: str = "nearest_rank"
) -> ComplianceResult:
    """Whether the 99th percentile of the daily values is at or below the 24-h guideline level."""
    limit = guideline(pollutant, "24h", level)
    days = _days(daily_means)
    # A7: the WHO defines the short-term level as the 99th percentile ("3-4 exceedance days per year"). We
    # use the nearest-rank percentile: it is always an observed day, it is health-protective (4 exceedances
    # in 365 days fail, 3 pass) and it equals the EU "not to be exceeded more than N times" counting, with
    # N = n - ceil(0.99·n). Linear interpolation (method="linear") would let 4 exceedances pass.
    p99 = percentile_99(days, method)
    n = len(days)
    allowed = n - math.ceil(Fraction(99 * n, 100))
    exceed = sum(1 for v in days if v > limit)
    return ComplianceResult(p99 <= limit, p99, limit, n, exceed, allowed)


def complies_annual(annual_mean: float, pollutant: str, level: str = "AQG") -> bool:
    """Whether an annual mean (peak-season mean for O3) is at or below the annual guideline level."""
    return annual_mean <= guideline(pollutant, "annual", level)


def attained_level(value: float, pollutant: str, averaging: str = "annual") -> str | None:
    """The strictest WHO level (AQG, then IT-4 … IT-1) that a value meets, or None if it exceeds IT-1."""
    row = WHO_2021.get((pollutant, averaging))
    if row is None:
        raise ValueError(f"WHO 2021 has no {averaging!r} guideline for {pollutant!r}")
    for name in reversed(LEVELS):
        if name in row and value <= row[name]:
            return name
    return None


def peak_season_o3(daily_max_8h: Mapping[dt.date, float]) -> float:
    """WHO peak-season O3: highest mean of the daily max 8-h values over six consecutive calendar months."""
    if not daily_max_8h:
        raise ValueError("no daily values")
    by_month: dict[tuple[int, int], list[float]] = {}
    for day, value in daily_max_8h.items():
        by_month.setdefault((day.year, day.month), []).append(float(value))
    first = min(by_month)
    last = max(by_month)
    best: float | None = None
    y, m = first
    while (y, m) <= last:
        window = []
        yy, mm = y, m
        for _ in range(6):
            window.append((yy, mm))
            yy, mm = (yy + 1, 1) if mm == 12 else (yy, mm + 1)
        if window[-1] > last:
            break
        # A six-month window needs data in every month; the mean is over days (months weigh by their days).
        if all(k in by_month for k in window):
            values = [v for k in window for v in by_month[k]]
            mean = sum(values) / len(values)
            best = mean if best is None else max(best, mean)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    if best is None:
        raise ValueError("no six consecutive months with data")
    return best
