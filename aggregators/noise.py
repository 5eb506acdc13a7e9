"""Environmental noise indicators: LAeq (energetic mean), END Lden / Lday / Levening / Lnight, exposure.

Directive 2002/49/EC Annex I: Lden = 10·lg[(1/24)(12·10^(Ld/10) + 4·10^((Le+5)/10) + 8·10^((Ln+10)/10))].
Levels are always averaged energetically, never arithmetically (60 and 70 dB average to 67.4 dB, not 65).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

__all__ = [
    "END_LDEN_THRESHOLD",
    "END_LNIGHT_THRESHOLD",
    "EVENING_PENALTY_DB",
    "NIGHT_PENALTY_DB",
    "DenLevels",
    "end_band",
    "exposure_exceeds",
    "laeq",
    "lden",
    "lden_from_hourly",
]

EVENING_PENALTY_DB: Final = 5.0
NIGHT_PENALTY_DB: Final = 10.0
# EU exposure-reporting thresholds (END Annex VI, EEA): the lowest reported bands start here.
END_LDEN_THRESHOLD: Final = 55.0
END_LNIGHT_THRESHOLD: Final = 50.0


def laeq(levels_db: Sequence[float], durations: Sequence[float] | None = None) -> float:
    """Energetic mean LAeq,T = 10·lg(Σ tᵢ·10^(Lᵢ/10) / Σ tᵢ) of levels in dB (equal durations if None)."""
    levels = np.asarray(levels_db, dtype=float)
    if levels.ndim != 1 or levels.size == 0:
        raise ValueError("laeq needs a non-empty sequence of levels")
    if not np.all(np.isfinite(levels)):
        raise ValueError("laeq: levels must be finite numbers")
    if durations is None:
        weights = np.ones_like(levels)
    else:
        weights = np.asarray(durations, dtype=float)
        if weights.shape != levels.shape:
            raise ValueError(f"laeq: {levels.size} levels but {weights.size} durations")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("laeq: durations must be finite and non-negative")
        if weights.sum() <= 0:
            raise ValueError("laeq: total duration is zero")
    # Factor out the loudest level so 10^(L/10) never overflows and quiet levels keep their precision.
    top = float(levels.max())
    energy = np.sum(weights * np.power(10.0, (levels - top) / 10.0)) / np.sum(weights)
    return top + 10.0 * float(np.log10(energy))


def lden(
    lday: float,
    levening: float,
    lnight: float,
    day_hours: float = 12,
    evening_hours: float = 4,
    night_hours: float = 8,
) -> float:
    """END day-evening-night level (dB) with +5 dB evening and +10 dB night penalties."""
    hours = (day_hours, evening_hours, night_hours)
    if any(h < 0 for h in hours) or abs(sum(hours) - 24) > 1e-9:
        raise ValueError(f"period lengths must be non-negative and add up to 24 h, got {hours}")
    # A8: the printed 12/4/8 are the period lengths; a Member State that shortens the evening lengthens
    # the day and/or night, and the weights follow the chosen hours (24 equal hourly levels still give
    # the same result as the energetic mean of the hourly levels with their penalties).
    return laeq(
        [lday, levening + EVENING_PENALTY_DB, lnight + NIGHT_PENALTY_DB],
        [day_hours, evening_hours, night_hours],
    )


@dataclass(frozen=True, slots=True)
class DenLevels:
    """Period levels of one day (or one year of days) and the resulting Lden, all in dB(A)."""

    lday: float
    levening: float
    lnight: float
    lden: float
    day_hours: int
    evening_hours: int
    night_hours: int


def _hours(period: tuple[int, int], name: str) -> list[int]:
    start, end = period
    if not (0 <= start <= 23 and 0 <= end <= 24):
        raise ValueError(f"{name} period {period} must use local hours 0..24")
    length = (end - start) % 24
    if length == 0:
        raise ValueError(f"{name} period {period} is empty")
    return [(start + k) % 24 for k in range(length)]


def lden_from_hourly(
    levels_by_hour_0_to_23: Sequence[float | None],
    day: tuple[int, int] = (7, 19),
    evening: tuple[int, int] = (19, 23),
) -> DenLevels:
    """Lday, Levening, Lnight and Lden from 24 hourly LAeq values indexed by local hour (None = missing)."""
    if len(levels_by_hour_0_to_23) != 24:
        raise ValueError(f"need 24 hourly levels (local hours 0..23), got {len(levels_by_hour_0_to_23)}")
    day_h = _hours(day, "day")
    eve_h = _hours(evening, "evening")
    if set(day_h) & set(eve_h):
        raise ValueError(f"day {day} and evening {evening} overlap")
    if evening[0] != day[1] % 24:
        raise ValueError(f"the evening must start when the day ends (day {day}, evening {evening})")
    night_h = [h for h in range(24) if h not in day_h and h not in eve_h]
    if not night_h:
        raise ValueError("day and evening leave no night hours")

    def period(hours: list[int], name: str) -> float:
        values = [levels_by_hour_0_to_23[h] for h in hours]
        present = [float(v) for v in values if v is not None]
        if not present:
            raise ValueError(f"no hourly level in the {name} period")
        # Missing hours are left out of the period's energetic mean (it stays an average level).
        return laeq(present)

    ld, le, ln = period(day_h, "day"), period(eve_h, "evening"), period(night_h, "night")
    return DenLevels(
        ld,
        le,
        ln,
        lden(ld, le, ln, len(day_h), len(eve_h), len(night_h)),
        len(day_h),
        len(eve_h),
        len(night_h),
    )


def exposure_exceeds(lden: float | None = None, lnight: float | None = None) -> bool:
    """True when Lden >= 55 dB or Lnight >= 50 dB (END reporting thresholds); give at least one level."""
    if lden is None and lnight is None:
        raise ValueError("give lden and/or lnight")
    # A14: the U4SSC threshold for EN:EN:EQ:2A was not retrieved; we use the END thresholds, compared
    # unrounded and inclusive (the lowest END band is "55-59", so 55.0 counts as exposed, 54.99 does not).
    return (lden is not None and lden >= END_LDEN_THRESHOLD) or (lnight is not None and lnight >= END_LNIGHT_THRESHOLD)


def end_band(level: float, indicator: str = "lden") -> str | None:
    """END Annex VI reporting band ("55-59" … ">=75" for Lden; "50-54" … ">=70" for Lnight), None below."""
    base = {"lden": END_LDEN_THRESHOLD, "lnight": END_LNIGHT_THRESHOLD}.get(indicator)
    if base is None:
        raise ValueError(f"indicator must be 'lden' or 'lnight', not {indicator!r}")
    if level < base:
        return None
    top = base + 20
    if level >= top:
        return f">={int(top)}"
    lo = base + 5 * int((level - base) // 5)
    # Bands are labelled by whole decibels; a level is placed by its unrounded value (59.6 is in "55-59").
    return f"{int(lo)}-{int(lo) + 4}"
