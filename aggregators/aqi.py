"""US EPA Air Quality Index (2024 revision of 40 CFR 58 App. G) and the PM NowCast.

Every step that decides a category is done exactly: concentrations become `decimal.Decimal` through their
shortest decimal text, are truncated with integer steps, and the AQI equation is evaluated with
`fractions.Fraction`, then rounded half up. Binary floating point would turn O3 0.072 ppm (exactly
104.5) into 104.4999… and report 104 instead of 105 (ambiguity A2 in docs/kpis.md).

The European indices live in `aggregators.eaqi`; `eaqi` and `caqi` are re-exported here because the
issue tracker names them `aggregators.aqi.eaqi` / `aggregators.aqi.caqi`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal, localcontext
from fractions import Fraction
from typing import Final

from aggregators.eaqi import caqi, eaqi

__all__ = [
    "BEYOND",
    "BREAKPOINTS_2024",
    "CATEGORIES",
    "POLLUTANTS",
    "AqiResult",
    "Segment",
    "UsAqiOverall",
    "caqi",
    "category_of",
    "eaqi",
    "nowcast",
    "round_half_up",
    "truncate",
    "us_aqi",
    "us_aqi_overall",
]

Number = float | int | Decimal | str

BEYOND: Final = "Beyond the AQI"

# (lowest AQI, highest AQI, name, colour) — AirNow colour codes.
CATEGORIES: Final[tuple[tuple[int, int, str, str], ...]] = (
    (0, 50, "Good", "#00E400"),
    (51, 100, "Moderate", "#FFFF00"),
    (101, 150, "Unhealthy for Sensitive Groups", "#FF7E00"),
    (151, 200, "Unhealthy", "#FF0000"),
    (201, 300, "Very Unhealthy", "#8F3F97"),
    (301, 500, "Hazardous", "#7E0023"),
)


@dataclass(frozen=True, slots=True)
class Segment:
    """One row of the breakpoint table: concentrations [bp_lo, bp_hi] map linearly onto [i_lo, i_hi]."""

    bp_lo: Decimal
    bp_hi: Decimal
    i_lo: int
    i_hi: int


def _segments(step: str, rows: Sequence[tuple[str, str, int, int]]) -> tuple[Decimal, tuple[Segment, ...]]:
    return Decimal(step), tuple(Segment(Decimal(lo), Decimal(hi), ilo, ihi) for lo, hi, ilo, ihi in rows)


# TAD EPA-454/B-24-002 Table 6 (2024); units: PM µg/m³, O3 and CO ppm, SO2 and NO2 ppb. The first value of
# each entry is the truncation step. Blank cells of the official table are simply absent here; what happens
# outside a pollutant's rows is decided in `us_aqi` (see `_BELOW` / `_ABOVE`).
BREAKPOINTS_2024: Final[dict[str, tuple[Decimal, tuple[Segment, ...]]]] = {
    "pm2_5_24h": _segments(
        "0.1",
        [
            ("0.0", "9.0", 0, 50),
            ("9.1", "35.4", 51, 100),
            ("35.5", "55.4", 101, 150),
            ("55.5", "125.4", 151, 200),
            ("125.5", "225.4", 201, 300),
            ("225.5", "325.4", 301, 500),
        ],
    ),
    "pm10_24h": _segments(
        "1",
        [
            ("0", "54", 0, 50),
            ("55", "154", 51, 100),
            ("155", "254", 101, 150),
            ("255", "354", 151, 200),
            ("355", "424", 201, 300),
            ("425", "604", 301, 500),
        ],
    ),
    "o3_8h": _segments(
        "0.001",
        [
            ("0.000", "0.054", 0, 50),
            ("0.055", "0.070", 51, 100),
            ("0.071", "0.085", 101, 150),
            ("0.086", "0.105", 151, 200),
            ("0.106", "0.200", 201, 300),
        ],
    ),
    "o3_1h": _segments(
        "0.001",
        [
            ("0.125", "0.164", 101, 150),
            ("0.165", "0.204", 151, 200),
            ("0.205", "0.404", 201, 300),
            ("0.405", "0.604", 301, 500),
        ],
    ),
    "co_8h": _segments(
        "0.1",
        [
            ("0.0", "4.4", 0, 50),
            ("4.5", "9.4", 51, 100),
            ("9.5", "12.4", 101, 150),
            ("12.5", "15.4", 151, 200),
            ("15.5", "30.4", 201, 300),
            ("30.5", "50.4", 301, 500),
        ],
    ),
    "so2_1h": _segments(
        "1",
        [
            ("0", "35", 0, 50),
            ("36", "75", 51, 100),
            ("76", "185", 101, 150),
            ("186", "304", 151, 200),
        ],
    ),
    "so2_24h": _segments(
        "1",
        [
            ("305", "604", 201, 300),
            ("605", "1004", 301, 500),
        ],
    ),
    "no2_1h": _segments(
        "1",
        [
            ("0", "53", 0, 50),
            ("54", "100", 51, 100),
            ("101", "360", 101, 150),
            ("361", "649", 151, 200),
            ("650", "1249", 201, 300),
            ("1250", "2049", 301, 500),
        ],
    ),
}

POLLUTANTS: Final = tuple(BREAKPOINTS_2024)

# Status of a concentration below the first row of a pollutant whose table starts above zero (blank cells).
_BELOW: Final = {"o3_1h": "use_8h", "so2_24h": "use_1h"}
# Status above the last row when the table hands over to another averaging period instead of "beyond".
_ABOVE: Final = {"o3_8h": "use_1h", "so2_1h": "use_24h"}


@dataclass(frozen=True, slots=True)
class AqiResult:
    """Sub-index of one pollutant: `aqi` is None when the table does not define it (see `status`)."""

    pollutant: str
    concentration: float  # truncated, as a float for display
    truncated: Decimal  # the exact truncated value used in the equation
    aqi: int | None
    category: str | None
    # "ok"; "beyond" (above the table, AQI > 500); "use_1h" (o3_8h > 0.200 ppm, so2_24h < 305 ppb);
    # "use_8h" (o3_1h < 0.125 ppm); "use_24h" (so2_1h >= 305 ppb).
    status: str


def _to_decimal(value: Number) -> Decimal:
    if isinstance(value, bool):
        raise TypeError("a concentration must be a number, not a bool")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"concentration is not finite: {value!r}")
        # repr() is the shortest text that round-trips, so 0.072 becomes exactly 0.072 (not 0.07199999…).
        d = Decimal(repr(value))
    elif isinstance(value, str):
        d = Decimal(value)
    else:
        raise TypeError(f"unsupported concentration type {type(value).__name__}")
    if not d.is_finite():
        raise ValueError(f"concentration is not finite: {value!r}")
    if d < 0:
        raise ValueError(f"negative concentration {value!r}: the AQI is defined from 0 upwards")
    return d


def truncate(value: Number, step: Decimal | str) -> Decimal:
    """Truncate a non-negative concentration down to a multiple of `step` (the EPA rule: never round)."""
    d, q = _to_decimal(value), Decimal(step)
    with localcontext() as ctx:
        # Enough digits for any magnitude (the default 28 would make 1e30 ppm raise instead of "beyond").
        ctx.prec = max(28, d.adjusted() - int(q.as_tuple().exponent) + 5)
        return d.quantize(q, rounding=ROUND_FLOOR)


def round_half_up(x: Fraction) -> int:
    """Round an exact non-negative number to the nearest integer, halves upwards (x.5 → x+1)."""
    return math.floor(x + Fraction(1, 2))


def category_of(aqi: float) -> str:
    """AQI category name for an index value; above 500 is "Beyond the AQI"."""
    if isinstance(aqi, bool) or not math.isfinite(aqi) or aqi < 0:
        raise ValueError(f"not an AQI value: {aqi!r}")
    for _lo, hi, name, _colour in CATEGORIES:
        if aqi <= hi:
            return name
    return BEYOND


def us_aqi(pollutant: str, concentration: Number) -> AqiResult:
    """US AQI sub-index (2024 table) of one averaged concentration in EPA units."""
    try:
        step, segments = BREAKPOINTS_2024[pollutant]
    except KeyError:
        raise ValueError(f"unknown AQI pollutant {pollutant!r}; expected one of {', '.join(POLLUTANTS)}") from None
    cp = truncate(concentration, step)

    def result(aqi: int | None, status: str) -> AqiResult:
        category = category_of(aqi) if aqi is not None else (BEYOND if status == "beyond" else None)
        return AqiResult(pollutant, float(cp), cp, aqi, category, status)

    if cp < segments[0].bp_lo:
        return result(None, _BELOW[pollutant])
    for seg in segments:
        if seg.bp_lo <= cp <= seg.bp_hi:
            # Exact rational evaluation of Ip = (IHi-ILo)/(BPHi-BPLo)·(Cp-BPLo) + ILo.
            ip = Fraction(seg.i_hi - seg.i_lo) / Fraction(seg.bp_hi - seg.bp_lo) * Fraction(cp - seg.bp_lo)
            return result(round_half_up(ip + seg.i_lo), "ok")
    # Truncation leaves no gaps between rows, so cp is above the table here. A1: above the last row the EPA
    # defines no formula ("Beyond the AQI"); we return None rather than cap at 500 or extrapolate.
    return result(None, _ABOVE.get(pollutant, "beyond"))


@dataclass(frozen=True, slots=True)
class UsAqiOverall:
    """Reported AQI: the maximum sub-index and the pollutant(s) that set it."""

    aqi: int | None
    category: str | None
    critical_pollutant: str | None
    critical_pollutants: tuple[str, ...]
    sub_indices: dict[str, int | None]
    results: dict[str, AqiResult] = field(default_factory=dict)
    # Pollutants whose value lies where the table hands over to another averaging period that was not given.
    unresolved: tuple[str, ...] = ()


def us_aqi_overall(concentrations: Mapping[str, Number]) -> UsAqiOverall:
    """Overall US AQI from {pollutant: concentration}: the highest sub-index and its critical pollutant."""
    if not concentrations:
        raise ValueError("no concentrations given")
    results = {p: us_aqi(p, c) for p, c in concentrations.items()}
    sub: dict[str, int | None] = {p: r.aqi for p, r in results.items()}
    unresolved: list[str] = []

    def is_defined(p: str) -> bool:
        return p in results and results[p].status in ("ok", "beyond")

    for p, r in results.items():
        if r.status in ("ok", "beyond"):
            continue
        if p == "so2_1h" and "so2_24h" in results:
            # A4: 1-h SO2 >= 305 ppb only says "at least the top of the 1-h scale" (200); values >= 201 come
            # from the 24-h mean, which takes over through the max rule when it is itself >= 305 ppb.
            sub[p] = 200
        elif (p == "o3_8h" and is_defined("o3_1h")) or (p == "o3_1h" and is_defined("o3_8h")):
            pass  # the other ozone averaging period carries the index (TAD footnotes)
        elif p == "so2_24h" and "so2_1h" in results:
            pass  # 24-h SO2 below 305 ppb: the 1-h value defines the index (200 at most)
        else:
            unresolved.append(p)

    beyond = tuple(p for p, r in results.items() if r.status == "beyond")
    if beyond:
        # "Beyond the AQI; follow Hazardous recommendations": no number is reported.
        crit = tuple(p for p in POLLUTANTS if p in beyond)
        return UsAqiOverall(None, BEYOND, crit[0], crit, sub, results, tuple(unresolved))
    defined = {p: v for p, v in sub.items() if v is not None}
    if not defined:
        return UsAqiOverall(None, None, None, (), sub, results, tuple(unresolved))
    top = max(defined.values())
    # Ties: every pollutant at the maximum is critical; the first in table order is named first.
    crit = tuple(p for p in POLLUTANTS if defined.get(p) == top)
    return UsAqiOverall(top, category_of(top), crit[0], crit, sub, results, tuple(unresolved))


_NOWCAST_STEP: Final = {"pm2_5": Decimal("0.1"), "pm10": Decimal("1")}


def nowcast(hourly: Sequence[float | None], pollutant: str = "pm2_5") -> float | None:
    """EPA PM NowCast from hourly means, oldest first (None/NaN = missing); truncated, or None if invalid."""
    if pollutant not in _NOWCAST_STEP:
        # A5: the ozone NowCast is EPA's 2019 PLS model, not reproducible at the edge; use the 8-h rule.
        raise ValueError(f"NowCast is defined here for pm2_5 and pm10 only, not {pollutant!r}")
    last12 = list(hourly[-12:])
    # hours_ago 0 is the current (newest) hour; a series shorter than 12 h just has its older hours missing.
    # None or NaN marks a missing hour.
    by_age = [
        (age, Fraction(_to_decimal(v)))
        for age, v in enumerate(reversed(last12))
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    # A5: AirNow-Tech rule "2 of the 3 most recent hours must be valid".
    if sum(1 for age, _ in by_age if age < 3) < 2:
        return None
    values = [c for _, c in by_age]
    cmax, cmin = max(values), min(values)
    if cmax == 0:
        return 0.0
    # Weight from the range of the valid hours only; minimum 0.5 (about a 3-h average), at most 1.
    w = max(1 - (cmax - cmin) / cmax, Fraction(1, 2))
    # The exponent is "hours ago" counted from the current clock hour, so missing hours still age the data.
    num = sum((w**age * c for age, c in by_age), Fraction(0))
    den = sum((w**age for age, _ in by_age), Fraction(0))
    exact = num / den
    step = _NOWCAST_STEP[pollutant]
    return float(Decimal(math.floor(exact / Fraction(step))) * step)
