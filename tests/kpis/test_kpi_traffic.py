"""Traffic indicators: hourly volume, HCM peak-hour factor, TxDOT percentile speed, class shares.

Vectors: docs/kpis.md §6 Traffic (NIATT PHF example, TxDOT 125-car example), hand computations in comments.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregators.traffic import class_shares, hourly_volume, peak_hour_factor, speed_percentile


def test_phf_niatt_example() -> None:
    # U. Idaho NIATT: 900/1000/1200/850 → 3950 / (4 × 1200) = 0.8229… reported as 0.82
    r = peak_hour_factor([900, 1000, 1200, 850])
    assert r.phf == pytest.approx(3950 / 4800)
    assert round(r.phf or 0, 2) == 0.82
    assert (r.volume, r.start_index, r.peak_15min) == (3950, 0, 1200)


def test_phf_finds_peak_hour_in_longer_series() -> None:
    counts = [100, 200, 900, 1000, 1200, 850, 300, 100]
    r = peak_hour_factor(counts)
    assert (r.start_index, r.volume) == (2, 3950)
    assert r.phf == pytest.approx(3950 / 4800)


def test_phf_peak_15min_is_taken_inside_the_peak_hour() -> None:
    # A lone 15-min burst of 1500 outside the busiest hour does not set V15.
    counts = [1500, 0, 0, 0, 0, 1000, 1000, 1000, 1000]
    r = peak_hour_factor(counts)
    assert r.start_index == 5 and r.peak_15min == 1000 and r.phf == pytest.approx(1.0)


def test_phf_ties_take_earliest_and_zero_traffic() -> None:
    assert peak_hour_factor([10, 10, 10, 10, 10]).start_index == 0
    zero = peak_hour_factor([0, 0, 0, 0])
    assert zero.phf is None and zero.volume == 0
    with pytest.raises(ValueError, match="four"):
        peak_hour_factor([1, 2, 3])
    with pytest.raises(ValueError):
        peak_hour_factor([1, 2, -3, 4])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=4, max_size=96))
def test_phf_range(counts: list[int]) -> None:
    r = peak_hour_factor(counts)
    if r.phf is not None:
        assert 0.25 - 1e-12 <= r.phf <= 1.0 + 1e-12
    assert r.volume == max(sum(counts[i : i + 4]) for i in range(len(counts) - 3))


def test_hourly_volume() -> None:
    bins = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert hourly_volume(bins) == [10, 26]  # the ninth bin is a partial hour
    assert hourly_volume(bins, rolling=True) == [10, 14, 18, 22, 26, 30]
    assert hourly_volume([5] * 12, bin_minutes=5) == [60]
    assert hourly_volume([7, 8], bin_minutes=30) == [15]
    with pytest.raises(ValueError, match="divide 60"):
        hourly_volume(bins, bin_minutes=7)


def test_speed_percentile_txdot_example() -> None:
    # TxDOT: 125 cars × 0.85 = 106.25 → the 106th car counted up from the slowest.
    speeds = [float(s) for s in range(200, 75, -1)]  # 125 distinct speeds 76..200, unsorted (descending)
    assert speed_percentile(speeds, 85) == 76 + 105  # the 106th slowest


def test_speed_percentile_a12_methods_differ() -> None:
    # 24 cars: 24 × 0.85 = 20.4 → TxDOT car 20; ceil nearest-rank car 21; linear 23·0.85 = 19.55 → 20.55
    speeds = [float(s) for s in range(1, 25)]
    assert speed_percentile(speeds, 85) == 20
    assert speed_percentile(speeds, 85, method="ceil") == 21
    assert speed_percentile(speeds, 85, method="linear") == pytest.approx(20.55)
    # 22 cars: 18.7 → rounding gives car 19 (truncation would give 18)
    assert speed_percentile([float(s) for s in range(1, 23)], 85) == 19
    # 10 cars: 8.5 → halves round up: car 9
    assert speed_percentile([float(s) for s in range(1, 11)], 85) == 9


def test_speed_percentile_is_never_interpolated() -> None:
    speeds = [40.0, 50.0, 60.0, 70.0]
    assert speed_percentile(speeds, 85) in speeds  # 3.4 → car 3 = 60
    assert speed_percentile(speeds, 85) == 60.0
    assert speed_percentile([55.0], 85) == 55.0
    assert speed_percentile(speeds, 1) == 40.0  # 0.04 rounds to 0 → clamped to the first car


def test_speed_percentile_errors() -> None:
    with pytest.raises(ValueError):
        speed_percentile([], 85)
    with pytest.raises(ValueError):
        speed_percentile([50.0], 0)
    with pytest.raises(ValueError):
        speed_percentile([50.0], 85, method="median")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 250), min_size=1, max_size=300), st.floats(1, 100), st.floats(1, 100))
def test_speed_percentile_observed_and_monotonic(speeds: list[float], p1: float, p2: float) -> None:
    lo, hi = sorted((p1, p2))
    a, b = speed_percentile(speeds, lo), speed_percentile(speeds, hi)
    assert a in speeds and b in speeds
    assert a <= b


def test_class_shares() -> None:
    shares = class_shares({"car": 80, "heavy": 15, "bike": 5})
    assert shares == pytest.approx({"car": 0.80, "heavy": 0.15, "bike": 0.05})
    assert class_shares({"car": 0, "heavy": 0}) == {"car": None, "heavy": None}
    with pytest.raises(ValueError):
        class_shares({"car": -1})
