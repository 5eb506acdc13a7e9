"""Noise indicators: LAeq, END Lden and its period levels, exposure thresholds.

Test vectors: the worked examples of docs/kpis.md §5 (reference kpis.md §5), recomputed by hand in comments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregators.noise import end_band, exposure_exceeds, laeq, lden, lden_from_hourly


def _lg_mean(levels: Sequence[float]) -> float:
    """Independent energetic mean, straight from the formula in kpis.md §5."""
    return 10 * math.log10(sum(10 ** (x / 10) for x in levels) / len(levels))


# --- kpis.md §5 worked examples -----------------------------------------------------------------------------


def test_lden_all_penalised_levels_equal() -> None:
    assert lden(65, 60, 55) == pytest.approx(65.0, abs=1e-9)


def test_lden_all_periods_60() -> None:
    # 10·lg((12·10^6 + 4·10^6.5 + 8·10^7)/24) = 66.395
    assert lden(60, 60, 60) == pytest.approx(66.40, abs=0.005)


def test_laeq_60_70_is_not_arithmetic() -> None:
    assert laeq([60, 70]) == pytest.approx(67.40, abs=0.005)
    assert laeq([60, 70]) != pytest.approx(65.0, abs=0.5)


def test_laeq_with_durations() -> None:
    # 80 dB for 1 h + 60 dB for 7 h: 10·lg((10^8 + 7·10^6)/8) = 71.26
    assert laeq([80, 60], [1, 7]) == pytest.approx(71.26, abs=0.005)
    assert laeq([80, 60], [3600, 7 * 3600]) == pytest.approx(71.26, abs=0.005)  # any time unit


def test_lden_from_published_period_levels() -> None:
    # kpis.md §5: Ld 65.90, Le 60.46, Ln 48.76 → Lden 64.44
    assert lden(65.90, 60.46, 48.76) == pytest.approx(64.44, abs=0.005)


def test_hourly_profile_equals_24h_energetic_mean_with_penalties() -> None:
    # kpis.md §5: Lden from 24 hourly values = energetic mean of the 24 values with +5 (19-23) and +10 (23-07).
    profile = [45, 44, 43, 43, 44, 48, 55, 62, 66, 67, 66, 65, 65, 66, 66, 67, 68, 68, 66, 62, 61, 60, 58, 50]
    res = lden_from_hourly(profile)
    penalised = [x + (10 if (h >= 23 or h < 7) else 5 if h >= 19 else 0) for h, x in enumerate(profile)]
    assert res.lden == pytest.approx(_lg_mean(penalised), abs=1e-9)
    assert res.lday == pytest.approx(_lg_mean(profile[7:19]), abs=1e-9)
    assert res.levening == pytest.approx(_lg_mean(profile[19:23]), abs=1e-9)
    assert res.lnight == pytest.approx(_lg_mean(profile[23:] + profile[:7]), abs=1e-9)
    assert (res.day_hours, res.evening_hours, res.night_hours) == (12, 4, 8)


def test_a8_shortened_evening_weights_follow_hours() -> None:
    # Evening shortened to 19-22 and night lengthened to 22-07: 12 / 3 / 9 hours.
    profile = [50.0] * 7 + [65.0] * 12 + [60.0] * 3 + [50.0] * 2
    res = lden_from_hourly(profile, day=(7, 19), evening=(19, 22))
    assert (res.day_hours, res.evening_hours, res.night_hours) == (12, 3, 9)
    assert res.lnight == pytest.approx(50.0)
    expected = 10 * math.log10((12 * 10**6.5 + 3 * 10**6.5 + 9 * 10**6.0) / 24)
    assert res.lden == pytest.approx(expected, abs=1e-9)
    # The printed 12/4/8 weights would give a different (wrong) value for this choice of hours.
    assert res.lden != pytest.approx(lden(res.lday, res.levening, res.lnight), abs=0.01)
    assert lden(65, 60, 50, 12, 3, 9) == pytest.approx(expected, abs=1e-9)


def test_lden_from_hourly_missing_hours_are_skipped() -> None:
    profile: list[float | None] = [50.0] * 24
    profile[3] = None
    assert lden_from_hourly(profile).lnight == pytest.approx(50.0)
    night_missing: list[float | None] = [None if (h >= 23 or h < 7) else 60.0 for h in range(24)]
    with pytest.raises(ValueError, match="night"):
        lden_from_hourly(night_missing)


def test_lden_from_hourly_validates_periods() -> None:
    with pytest.raises(ValueError, match="24 hourly"):
        lden_from_hourly([50.0] * 23)
    with pytest.raises(ValueError, match="start when the day ends"):
        lden_from_hourly([50.0] * 24, day=(7, 19), evening=(20, 23))
    with pytest.raises(ValueError, match="overlap"):
        lden_from_hourly([50.0] * 24, day=(7, 19), evening=(18, 22))
    with pytest.raises(ValueError, match="no night"):
        lden_from_hourly([50.0] * 24, day=(0, 20), evening=(20, 0))


def test_lden_hours_must_add_up() -> None:
    with pytest.raises(ValueError, match="24 h"):
        lden(60, 60, 60, 12, 4, 7)


def test_laeq_errors() -> None:
    with pytest.raises(ValueError):
        laeq([])
    with pytest.raises(ValueError):
        laeq([60, float("nan")])
    with pytest.raises(ValueError):
        laeq([60, 70], [1])
    with pytest.raises(ValueError):
        laeq([60, 70], [0, 0])
    with pytest.raises(ValueError):
        laeq([60, 70], [1, -1])


def test_laeq_no_overflow_for_loud_levels() -> None:
    assert laeq([3000.0, 3000.0]) == pytest.approx(3000.0)  # 10^300 would overflow if not factored out


def test_exposure_thresholds_inclusive() -> None:
    assert exposure_exceeds(lden=55.0) is True
    assert exposure_exceeds(lden=54.99) is False
    assert exposure_exceeds(lnight=50.0) is True
    assert exposure_exceeds(lnight=49.99) is False
    assert exposure_exceeds(lden=54, lnight=51) is True
    assert exposure_exceeds(lden=54, lnight=49) is False
    with pytest.raises(ValueError):
        exposure_exceeds()


@pytest.mark.parametrize(
    ("level", "indicator", "band"),
    [
        (54.9, "lden", None),
        (55.0, "lden", "55-59"),
        (59.6, "lden", "55-59"),
        (60.0, "lden", "60-64"),
        (74.9, "lden", "70-74"),
        (75.0, "lden", ">=75"),
        (49.9, "lnight", None),
        (50.0, "lnight", "50-54"),
        (70.0, "lnight", ">=70"),
    ],
)
def test_end_bands(level: float, indicator: str, band: str | None) -> None:
    assert end_band(level, indicator) == band


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(20, 120), min_size=1, max_size=50))
def test_laeq_between_min_and_max_and_matches_formula(levels: list[float]) -> None:
    value = laeq(levels)
    assert min(levels) - 1e-9 <= value <= max(levels) + 1e-9
    assert value == pytest.approx(_lg_mean(levels), abs=1e-9)
    assert value >= sum(levels) / len(levels) - 1e-9  # energetic mean >= arithmetic mean


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(20, 110), min_size=24, max_size=24))
def test_hourly_lden_is_penalised_24h_mean(profile: list[float]) -> None:
    penalised = [x + (10 if (h >= 23 or h < 7) else 5 if h >= 19 else 0) for h, x in enumerate(profile)]
    assert lden_from_hourly(profile).lden == pytest.approx(_lg_mean(penalised), abs=1e-9)
