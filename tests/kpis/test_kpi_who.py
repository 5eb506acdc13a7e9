"""WHO AQG 2021 checks and the U4SSC air-pollution KPI (EN:EN:AQ:1C).

Vectors: docs/kpis.md §4 (WHO 2021 Table 0.1, SO2 24-h AQG = 40) and §1.1 (U4SSC ppb factors).
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregators.u4ssc import air_pollution_report, ppb_to_ugm3, to_ugm3
from aggregators.who import (
    attained_level,
    complies_24h,
    complies_annual,
    exceedance_days,
    guideline,
    peak_season_o3,
    percentile_99,
)


@pytest.mark.parametrize(
    ("pollutant", "averaging", "level", "value"),
    [
        ("pm2_5", "annual", "AQG", 5),
        ("pm2_5", "24h", "AQG", 15),
        ("pm2_5", "24h", "IT-3", 37.5),
        ("pm10", "annual", "AQG", 15),
        ("pm10", "24h", "AQG", 45),
        ("o3", "annual", "AQG", 60),  # peak season
        ("o3", "24h", "AQG", 100),  # daily max 8-h mean
        ("no2", "annual", "AQG", 10),
        ("no2", "24h", "AQG", 25),
        ("so2", "24h", "AQG", 40),  # not the misprinted 50
        ("so2", "24h", "IT-1", 125),
        ("co", "24h", "AQG", 4),  # mg/m³
        ("co", "24h", "IT-1", 7),
    ],
)
def test_guideline_table(pollutant: str, averaging: str, level: str, value: float) -> None:
    assert guideline(pollutant, averaging, level) == value


def test_guideline_missing_entries() -> None:
    with pytest.raises(ValueError, match="no 'annual'"):
        guideline("so2", "annual")
    with pytest.raises(ValueError, match="no level 'IT-4'"):
        guideline("o3", "24h", "IT-4")


def test_exceedance_days_strictly_above() -> None:
    days = [10.0, 15.0, 15.01, 30.0, None, float("nan")]
    assert exceedance_days(days, "pm2_5") == 2  # 15.0 is at the AQG, not above; None/NaN skipped
    assert exceedance_days(days, "pm2_5", level="IT-4") == 1  # > 25
    assert exceedance_days([101.0, 100.0, 99.0], "o3") == 1


def _year(exceed: int, n: int = 365, pollutant_level: float = 15.0) -> list[float | None]:
    days: list[float | None] = [pollutant_level + 10.0] * exceed
    return days + [pollutant_level - 5.0] * (n - exceed)


def test_a7_three_exceedances_comply_four_do_not() -> None:
    ok = complies_24h(_year(3), "pm2_5")
    assert ok.complies is True and ok.exceedance_days == 3 and ok.allowed_exceedances == 3
    assert ok.n_days == 365 and ok.limit == 15
    bad = complies_24h(_year(4), "pm2_5")
    assert bad.complies is False and bad.exceedance_days == 4
    assert bad.p99 == 25.0  # nearest rank: the 362nd value, an exceeding day
    assert bool(ok) is True and bool(bad) is False  # usable directly as a condition


def test_a7_linear_interpolation_would_pass_four() -> None:
    # 365 days, 4 of them at 16 (just above the AQG of 15), the rest at 10. Linear interpolation:
    # h = 0.99 × 364 = 360.36 → between the 361st (10) and 362nd (16) value: 10 + 0.36 × 6 = 12.16 <= 15.
    year = [16.0] * 4 + [10.0] * 361
    assert complies_24h(year, "pm2_5").complies is False
    lin = complies_24h(year, "pm2_5", method="linear")
    assert lin.p99 == pytest.approx(10 + 0.36 * 6)  # 12.16
    assert lin.complies is True


def test_a7_incomplete_days_reduce_n() -> None:
    # 300 valid days: allowed = 300 − ceil(297) = 3; 99 valid days: allowed 0.
    year = _year(3, 300) + [None] * 65
    r = complies_24h(year, "pm2_5")
    assert (r.n_days, r.allowed_exceedances, r.complies) == (300, 3, True)
    short = complies_24h(_year(1, 99), "pm2_5")
    assert (short.allowed_exceedances, short.complies) == (0, False)
    with pytest.raises(ValueError):
        complies_24h([None, None], "pm2_5")


def test_a7_exactly_at_level_complies() -> None:
    year = [15.0] * 365
    assert complies_24h(year, "pm2_5").complies is True
    assert exceedance_days(year, "pm2_5") == 0


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 400), st.integers(0, 20))
def test_nearest_rank_equals_exceedance_count_rule(n: int, exceed: int) -> None:
    exceed = min(exceed, n)
    r = complies_24h(_year(exceed, n), "pm2_5")
    assert r.complies == (exceed <= r.allowed_exceedances)
    # allowed = floor(n/100) for the nearest-rank 99th percentile
    assert r.allowed_exceedances == n // 100


def test_percentile_99_methods() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile_99(values) == 99.0  # ceil(99) = 99th value
    assert percentile_99(values, "linear") == pytest.approx(99.01)
    with pytest.raises(ValueError):
        percentile_99(values, "weird")


def test_annual_comparison_and_attained_level() -> None:
    assert complies_annual(5.0, "pm2_5") is True
    assert complies_annual(5.1, "pm2_5") is False
    assert complies_annual(24.0, "pm2_5", level="IT-2") is True
    assert attained_level(4.0, "pm2_5") == "AQG"
    assert attained_level(12.0, "pm2_5") == "IT-3"  # <= 15, > 10
    assert attained_level(35.0, "pm2_5") == "IT-1"
    assert attained_level(36.0, "pm2_5") is None
    assert attained_level(110.0, "o3", "24h") == "IT-2"  # O3 has no IT-3/IT-4
    with pytest.raises(ValueError):
        attained_level(1.0, "so2", "annual")


def test_peak_season_o3() -> None:
    # Daily max 8-h O3 of 2025: 40 µg/m³ except April-September at 80 → best 6-month window = 80.
    days: dict[dt.date, float] = {}
    d = dt.date(2025, 1, 1)
    while d.year == 2025:
        days[d] = 80.0 if 4 <= d.month <= 9 else 40.0
        d += dt.timedelta(days=1)
    assert peak_season_o3(days) == pytest.approx(80.0)
    # Shift the season by one month (May-October): still found.
    shifted = {k: (80.0 if 5 <= k.month <= 10 else 40.0) for k in days}
    assert peak_season_o3(shifted) == pytest.approx(80.0)
    with pytest.raises(ValueError, match="six consecutive"):
        peak_season_o3({dt.date(2025, 1, 1): 10.0})


def test_peak_season_o3_is_a_mean_of_days() -> None:
    # Data January-June 2025 only: January at 60, other months 0. Mean of days = 31·60 / 181 = 10.276
    # (the mean of monthly means would be 10.0).
    days = {}
    d = dt.date(2025, 1, 1)
    while d < dt.date(2025, 7, 1):
        days[d] = 60.0 if d.month == 1 else 0.0
        d += dt.timedelta(days=1)
    assert peak_season_o3(days) == pytest.approx(31 * 60 / 181)


def test_peak_season_o3_crosses_year_end() -> None:
    days = {}
    d = dt.date(2024, 7, 1)
    while d < dt.date(2025, 7, 1):
        days[d] = 90.0 if d.month in (10, 11, 12, 1, 2, 3) else 30.0
        d += dt.timedelta(days=1)
    assert peak_season_o3(days) == pytest.approx(90.0)  # October 2024 - March 2025


# --- U4SSC EN:EN:AQ:1C (A9) --------------------------------------------------------------------------------


def test_ppb_factors() -> None:
    assert ppb_to_ugm3("no2", 10) == pytest.approx(19.0)
    assert ppb_to_ugm3("so2", 10) == pytest.approx(26.2)
    assert ppb_to_ugm3("o3", 10) == pytest.approx(19.6)
    assert to_ugm3("no2", 0.01, "ppm") == pytest.approx(19.0)  # ppm × 1900
    assert to_ugm3("pm2_5", 12.0, "ug/m3") == 12.0
    with pytest.raises(ValueError, match="factor"):
        ppb_to_ugm3("co", 1)
    with pytest.raises(ValueError):
        to_ugm3("no2", 1, "mg/m3")


def test_air_pollution_report_annual_means() -> None:
    report = air_pollution_report({"no2": (20.0, "ppb"), "pm2_5": (8.0, "ug/m3"), "o3": (30.0, "ppb")})
    assert report == pytest.approx({"no2": 38.0, "pm2_5": 8.0, "o3": 58.8})
