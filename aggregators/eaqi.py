"""European Air Quality Index (EEA, versioned band tables) and the CITEAIR Common Air Quality Index (CAQI).

Both are hourly indices on concentrations in µg/m³: PM10 and PM2.5 as 24-h running means for the EAQI
(hourly for the CAQI grid used here), NO2, O3 and SO2 as hourly means. The caller supplies the right
averages; these functions only classify.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "CAQI_BANDS",
    "CAQI_GRID",
    "EAQI_BANDS",
    "EAQI_TABLES",
    "CaqiOverall",
    "CaqiResult",
    "EaqiOverall",
    "caqi",
    "caqi_overall",
    "eaqi",
    "eaqi_level",
    "eaqi_overall",
]

EAQI_BANDS: Final[dict[str, tuple[str, ...]]] = {
    "2017": ("Good", "Fair", "Moderate", "Poor", "Very poor"),
    "2021": ("Good", "Fair", "Moderate", "Poor", "Very poor", "Extremely poor"),
}

# Upper bound of each band in µg/m³, in band order. The last bound is the printed top of the scale only;
# values above it stay in the worst band.
# 2017: EEA discomap "About the Index" (5 bands). 2021: the 2021-2023 6-band table (EEA/CAMS, secondary copy).
# The 2024/2025 revision aligned with WHO 2021 could not be verified; add it here as a new key when it is.
EAQI_TABLES: Final[dict[str, dict[str, tuple[float, ...]]]] = {
    "2017": {
        "pm2_5": (10, 20, 25, 50, 800),
        "pm10": (20, 35, 50, 100, 1200),
        "no2": (40, 100, 200, 400, 1000),
        "o3": (80, 120, 180, 240, 600),
        "so2": (100, 200, 350, 500, 1250),
    },
    "2021": {
        "pm2_5": (10, 20, 25, 50, 75, 800),
        "pm10": (20, 40, 50, 100, 150, 1200),
        "no2": (40, 90, 120, 230, 340, 1000),
        "o3": (50, 100, 130, 240, 380, 800),
        "so2": (100, 200, 350, 500, 750, 1250),
    },
}

_ORDER: Final = ("pm2_5", "pm10", "no2", "o3", "so2")


def _check(value: float) -> float:
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"concentration is not a finite number: {value!r}")
    if value < 0:
        raise ValueError(f"negative concentration {value!r}")
    return float(value)


def eaqi_level(pollutant: str, concentration_ugm3: float, table: str = "2021") -> int:
    """EAQI level of one pollutant, 1 (Good) upwards, for the given band table version."""
    try:
        bounds = EAQI_TABLES[table][pollutant]
    except KeyError:
        raise ValueError(
            f"no EAQI band for pollutant {pollutant!r} in table {table!r} "
            f"(tables: {', '.join(EAQI_TABLES)}; pollutants: {', '.join(_ORDER)})"
        ) from None
    c = _check(concentration_ugm3)
    # A6: the bands are printed overlapping ("0-10, 10-20"). We read them upper-inclusive, (lo, hi], as
    # the EEA's own class convention does ("<= 20, > 20 <= 40") and as "exceeding a threshold" means
    # "> threshold": exactly 10 µg/m³ of PM2.5 is still Good; 10.000001 is Fair.
    for level, hi in enumerate(bounds[:-1], start=1):
        if c <= hi:
            return level
    return len(bounds)  # the worst band is open-ended


def eaqi(pollutant: str, concentration_ugm3: float, table: str = "2021") -> str:
    """EAQI band name ("Good" … "Extremely poor") of one pollutant concentration in µg/m³."""
    level = eaqi_level(pollutant, concentration_ugm3, table)  # validates the table name first
    return EAQI_BANDS[table][level - 1]


@dataclass(frozen=True, slots=True)
class EaqiOverall:
    """Station index: the poorest band over the pollutants given, and which pollutant(s) set it."""

    band: str
    level: int
    pollutant: str
    pollutants: tuple[str, ...]
    bands: dict[str, str]
    # None when no station type was given; otherwise whether the EEA minimum pollutant set is present.
    complete: bool | None


def eaqi_overall(
    concentrations: Mapping[str, float], table: str = "2021", station_type: str | None = None
) -> EaqiOverall:
    """Overall EAQI: the worst band among {pollutant: µg/m³} and the pollutant responsible."""
    if not concentrations:
        raise ValueError("no concentrations given")
    levels = {p: eaqi_level(p, c, table) for p, c in concentrations.items()}
    worst = max(levels.values())
    tied = tuple(p for p in _ORDER if levels.get(p) == worst)
    complete: bool | None = None
    if station_type is not None:
        has_pm = "pm2_5" in levels or "pm10" in levels
        # EEA notes: traffic stations are indexed only with NO2 and PM; all others need NO2, O3 and PM.
        needed_gas = {"no2"} if station_type == "traffic" else {"no2", "o3"}
        complete = has_pm and needed_gas <= levels.keys()
    names = EAQI_BANDS[table]
    return EaqiOverall(names[worst - 1], worst, tied[0], tied, {p: names[lv - 1] for p, lv in levels.items()}, complete)


CAQI_BANDS: Final = ("very low", "low", "medium", "high", "very high")

# CITEAIR hourly grid, µg/m³: concentrations at index 25, 50, 75 and 100 (index 0 at 0 µg/m³).
# CO is the 8-h mean. Source: airqualitynow.eu definition (grid as reproduced in docs/kpis.md §3).
CAQI_GRID: Final[dict[str, tuple[float, float, float, float]]] = {
    "no2": (50, 100, 200, 400),
    "pm10": (25, 50, 90, 180),
    "pm2_5": (15, 30, 55, 110),
    "o3": (60, 120, 180, 240),
    "so2": (50, 100, 350, 500),
    "co": (5000, 7500, 10000, 20000),
}


@dataclass(frozen=True, slots=True)
class CaqiResult:
    """CAQI sub-index: the continuous index value and its band."""

    index: float
    band: str


def _caqi_band(index: float) -> str:
    # Same upper-inclusive reading as the EAQI (A6): index 25.0 is "very low", above 100 is "very high".
    for i, hi in enumerate((25, 50, 75, 100)):
        if index <= hi:
            return CAQI_BANDS[i]
    return CAQI_BANDS[-1]


def caqi(pollutant: str, ugm3: float) -> CaqiResult:
    """CAQI sub-index of one pollutant: linear within its grid cell, with the band name."""
    try:
        grid = CAQI_GRID[pollutant]
    except KeyError:
        raise ValueError(f"no CAQI grid for {pollutant!r}; expected one of {', '.join(CAQI_GRID)}") from None
    c = _check(ugm3)
    lo_c, lo_i = 0.0, 0.0
    for k, hi_c in enumerate(grid):
        hi_i = 25.0 * (k + 1)
        if c <= hi_c:
            index = lo_i + (c - lo_c) * (hi_i - lo_i) / (hi_c - lo_c)
            return CaqiResult(index, _caqi_band(index))
        lo_c, lo_i = hi_c, hi_i
    # "very high" (> 100) has no upper concentration in the grid. We continue the slope of the "high" cell,
    # as CAQI services that publish values above 100 do, so the index keeps rising with the concentration.
    slope = 25.0 / (grid[3] - grid[2])
    index = 100.0 + (c - grid[3]) * slope
    return CaqiResult(index, _caqi_band(index))


@dataclass(frozen=True, slots=True)
class CaqiOverall:
    """CAQI of a station: the highest sub-index and the pollutant that set it."""

    index: float
    band: str
    pollutant: str
    sub_indices: dict[str, float]


def caqi_overall(concentrations: Mapping[str, float]) -> CaqiOverall:
    """Overall CAQI: the maximum sub-index among {pollutant: µg/m³}."""
    if not concentrations:
        raise ValueError("no concentrations given")
    sub = {p: caqi(p, c).index for p, c in concentrations.items()}
    top = max(sub.values())
    pollutant = next(p for p in CAQI_GRID if sub.get(p) == top)
    return CaqiOverall(top, _caqi_band(top), pollutant, sub)
