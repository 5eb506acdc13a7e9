"""US EPA AQI (2024), NowCast, EEA EAQI and CITEAIR CAQI.

Expected values come from docs/kpis.md (reference /work/shared/reference/kpis.md §2-§3): the TAD worked
examples, the 2024 breakpoint table transcribed below independently of aggregators/aqi.py, and hand
computations shown in comments.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregators import aqi as aqi_mod
from aggregators import eaqi as eaqi_mod
from aggregators.aqi import BEYOND, category_of, nowcast, us_aqi, us_aqi_overall
from aggregators.eaqi import caqi, caqi_overall, eaqi, eaqi_level, eaqi_overall

# kpis.md §2.2, TAD 2024 Table 6: (pollutant, BPlo, BPhi, Ilo, Ihi), as text so nothing goes through floats.
TABLE_2024 = [
    ("o3_8h", "0.000", "0.054", 0, 50),
    ("o3_8h", "0.055", "0.070", 51, 100),
    ("o3_8h", "0.071", "0.085", 101, 150),
    ("o3_8h", "0.086", "0.105", 151, 200),
    ("o3_8h", "0.106", "0.200", 201, 300),
    ("o3_1h", "0.125", "0.164", 101, 150),
    ("o3_1h", "0.165", "0.204", 151, 200),
    ("o3_1h", "0.205", "0.404", 201, 300),
    ("o3_1h", "0.405", "0.604", 301, 500),
    ("pm2_5_24h", "0.0", "9.0", 0, 50),
    ("pm2_5_24h", "9.1", "35.4", 51, 100),
    ("pm2_5_24h", "35.5", "55.4", 101, 150),
    ("pm2_5_24h", "55.5", "125.4", 151, 200),
    ("pm2_5_24h", "125.5", "225.4", 201, 300),
    ("pm2_5_24h", "225.5", "325.4", 301, 500),
    ("pm10_24h", "0", "54", 0, 50),
    ("pm10_24h", "55", "154", 51, 100),
    ("pm10_24h", "155", "254", 101, 150),
    ("pm10_24h", "255", "354", 151, 200),
    ("pm10_24h", "355", "424", 201, 300),
    ("pm10_24h", "425", "604", 301, 500),
    ("co_8h", "0.0", "4.4", 0, 50),
    ("co_8h", "4.5", "9.4", 51, 100),
    ("co_8h", "9.5", "12.4", 101, 150),
    ("co_8h", "12.5", "15.4", 151, 200),
    ("co_8h", "15.5", "30.4", 201, 300),
    ("co_8h", "30.5", "50.4", 301, 500),
    ("so2_1h", "0", "35", 0, 50),
    ("so2_1h", "36", "75", 51, 100),
    ("so2_1h", "76", "185", 101, 150),
    ("so2_1h", "186", "304", 151, 200),
    ("so2_24h", "305", "604", 201, 300),
    ("so2_24h", "605", "1004", 301, 500),
    ("no2_1h", "0", "53", 0, 50),
    ("no2_1h", "54", "100", 51, 100),
    ("no2_1h", "101", "360", 101, 150),
    ("no2_1h", "361", "649", 151, 200),
    ("no2_1h", "650", "1249", 201, 300),
    ("no2_1h", "1250", "2049", 301, 500),
]
STEP = {
    "o3_8h": "0.001",
    "o3_1h": "0.001",
    "pm2_5_24h": "0.1",
    "pm10_24h": "1",
    "co_8h": "0.1",
    "so2_1h": "1",
    "so2_24h": "1",
    "no2_1h": "1",
}


def oracle(pollutant: str, conc: Decimal) -> int | None:
    """Independent integer-only AQI: concentrations in table steps, half-up via integer division."""
    step = Decimal(STEP[pollutant])
    c = int(conc // step)  # truncation
    for p, lo, hi, ilo, ihi in TABLE_2024:
        lo_n, hi_n = int(Decimal(lo) / step), int(Decimal(hi) / step)
        if p == pollutant and lo_n <= c <= hi_n:
            num = (ihi - ilo) * (c - lo_n)
            den = hi_n - lo_n
            # ilo + num/den rounded half up == floor((2·num + den) / (2·den)) + ilo
            return ilo + (2 * num + den) // (2 * den)
    return None


# --- official worked examples (kpis.md §2.5, TAD 2016 via con2aqi) -------------------------------------


def test_tad_example_o3_8h() -> None:
    assert us_aqi("o3_8h", 0.078).aqi == 126


def test_tad_example_pm25() -> None:
    r = us_aqi("pm2_5_24h", 35.9)
    assert r.aqi == 102
    assert r.category == "Unhealthy for Sensitive Groups"


def test_tad_example_co() -> None:
    r = us_aqi("co_8h", 8.4)
    assert r.aqi == 90
    assert r.category == "Moderate"


def test_tad_example_overall() -> None:
    o = us_aqi_overall({"o3_8h": 0.078, "pm2_5_24h": 35.9, "co_8h": 8.4})
    assert o.aqi == 126
    assert o.critical_pollutant == "o3_8h"
    assert o.sub_indices == {"o3_8h": 126, "pm2_5_24h": 102, "co_8h": 90}
    assert o.category == "Unhealthy for Sensitive Groups"
    assert o.unresolved == ()


def test_a3_rule_beats_printed_example_o3_1h() -> None:
    # A3: con2aqi prints 148, but (150-101)/(0.164-0.125)·(0.162-0.125)+101 = 147.487… → 147.
    assert us_aqi("o3_1h", 0.162).aqi == 147


# --- exactness (A2) ----------------------------------------------------------------------------------------


def test_o3_0072_is_exactly_half_and_rounds_up() -> None:
    # 49/0.014 · 0.001 + 101 = 104.5 exactly; binary floats give 104.4999… → 104.
    naive = (150 - 101) / (0.085 - 0.071) * (0.072 - 0.071) + 101
    assert round(naive) == 104  # the float trap this implementation must avoid
    assert us_aqi("o3_8h", 0.072).aqi == 105
    assert us_aqi("o3_8h", Decimal("0.072")).aqi == 105
    assert us_aqi("o3_8h", "0.072").aqi == 105


def test_o3_0078_half_up_not_bankers() -> None:
    # 49/14·7 + 101 = 125.5 → 126 (Python's round() would give 126 here but 124.5 → 124 elsewhere).
    assert us_aqi("o3_8h", 0.078).aqi == 126
    # 0.060: 49/15·5 + 51 = 67.333 → 67; 0.064: 49/15·9 + 51 = 80.4 → 80
    assert us_aqi("o3_8h", 0.060).aqi == 67
    assert us_aqi("o3_8h", 0.064).aqi == 80


@pytest.mark.parametrize(
    ("pollutant", "raw", "truncated", "expected"),
    [
        ("pm2_5_24h", 35.45, "35.4", 100),
        ("pm2_5_24h", 35.49999, "35.4", 100),
        ("pm2_5_24h", 9.09, "9.0", 50),
        ("pm2_5_24h", 9.05, "9.0", 50),
        ("pm10_24h", 54.9, "54", 50),
        ("pm10_24h", 154.99, "154", 100),
        ("o3_8h", 0.0549, "0.054", 50),
        ("o3_8h", 0.0709, "0.070", 100),
        ("co_8h", 4.49, "4.4", 50),
        ("co_8h", 9.49, "9.4", 100),
        ("so2_1h", 35.9, "35", 50),
        ("no2_1h", 53.99, "53", 50),
        ("no2_1h", 100.7, "100", 100),
    ],
)
def test_truncation_never_rounds(pollutant: str, raw: float, truncated: str, expected: int) -> None:
    r = us_aqi(pollutant, raw)
    assert r.truncated == Decimal(truncated)
    assert r.concentration == float(truncated)
    assert r.aqi == expected


@pytest.mark.parametrize(("pollutant", "lo", "hi", "ilo", "ihi"), TABLE_2024)
def test_every_breakpoint_edge(pollutant: str, lo: str, hi: str, ilo: int, ihi: int) -> None:
    assert us_aqi(pollutant, Decimal(lo)).aqi == ilo
    assert us_aqi(pollutant, Decimal(hi)).aqi == ihi
    # The same edges given as floats (the usual input) must land identically.
    assert us_aqi(pollutant, float(lo)).aqi == ilo
    assert us_aqi(pollutant, float(hi)).aqi == ihi


def test_module_table_matches_transcription() -> None:
    rows = [
        (p, seg.bp_lo, seg.bp_hi, seg.i_lo, seg.i_hi)
        for p, (_step, segs) in aqi_mod.BREAKPOINTS_2024.items()
        for seg in segs
    ]
    expected = [(p, Decimal(lo), Decimal(hi), ilo, ihi) for p, lo, hi, ilo, ihi in TABLE_2024]
    assert sorted(rows) == sorted(expected)
    assert {p: str(step) for p, (step, _) in aqi_mod.BREAKPOINTS_2024.items()} == STEP


# --- beyond the table and hand-overs (A1, A4, O3 8-h > 0.200) -------------------------------------------


@pytest.mark.parametrize(
    ("pollutant", "top", "above"),
    [
        ("pm2_5_24h", 325.49, 325.5),
        ("pm10_24h", 604.9, 605),
        ("co_8h", 50.49, 50.5),
        ("no2_1h", 2049.9, 2050),
        ("o3_1h", 0.6049, 0.605),
        ("so2_24h", 1004.9, 1005),
    ],
)
def test_beyond_the_table_is_none(pollutant: str, top: float, above: float) -> None:
    assert us_aqi(pollutant, top).aqi == 500
    r = us_aqi(pollutant, above)
    assert r.aqi is None
    assert r.status == "beyond"
    assert r.category == BEYOND


def test_huge_values_are_beyond_not_errors() -> None:
    assert us_aqi("o3_1h", 1e30).status == "beyond"
    assert us_aqi("pm2_5_24h", 1e300).aqi is None


def test_o3_8h_above_0200_hands_over_to_1h() -> None:
    assert us_aqi("o3_8h", 0.2009).aqi == 300  # truncated to 0.200
    r = us_aqi("o3_8h", 0.201)
    assert (r.aqi, r.status, r.category) == (None, "use_1h", None)


def test_o3_1h_below_0125_is_not_defined() -> None:
    r = us_aqi("o3_1h", 0.124)
    assert (r.aqi, r.status) == (None, "use_8h")


def test_a4_so2_1h_reaches_200_at_304_and_stops() -> None:
    assert us_aqi("so2_1h", 304).aqi == 200
    assert us_aqi("so2_1h", 304.9).aqi == 200
    r = us_aqi("so2_1h", 305)
    assert (r.aqi, r.status) == (None, "use_24h")
    assert us_aqi("so2_24h", 304).status == "use_1h"


def test_overall_so2_24h_takes_over() -> None:
    # 24-h 400 ppb: 99/299·95 + 201 = 232.45 → 232
    o = us_aqi_overall({"so2_1h": 400, "so2_24h": 400})
    assert o.aqi == 232
    assert o.critical_pollutant == "so2_24h"
    assert o.unresolved == ()


def test_overall_so2_1h_high_but_24h_low_gives_200() -> None:
    o = us_aqi_overall({"so2_1h": 400, "so2_24h": 200})
    assert o.aqi == 200
    assert o.critical_pollutant == "so2_1h"


def test_overall_unresolved_when_substitute_missing() -> None:
    o = us_aqi_overall({"so2_1h": 400, "pm2_5_24h": 35.9})
    assert o.aqi == 102
    assert o.unresolved == ("so2_1h",)
    o = us_aqi_overall({"o3_8h": 0.25})
    assert o.aqi is None and o.category is None and o.unresolved == ("o3_8h",)


def test_overall_undefined_substitute_does_not_resolve() -> None:
    # 8-h above 0.200 with a 1-h value below its table: neither defines the ozone index → reported unresolved.
    o = us_aqi_overall({"o3_8h": 0.25, "o3_1h": 0.1, "pm10_24h": 60})
    assert o.aqi == us_aqi("pm10_24h", 60).aqi
    assert set(o.unresolved) == {"o3_8h", "o3_1h"}


def test_overall_o3_1h_used_above_0200() -> None:
    # 1-h 0.300: 99/0.199·0.095 + 201 = 248.26 → 248
    o = us_aqi_overall({"o3_8h": 0.25, "o3_1h": 0.3})
    assert o.aqi == 248
    assert o.critical_pollutant == "o3_1h"
    assert o.sub_indices["o3_8h"] is None


def test_overall_1h_more_precautionary_wins() -> None:
    # 8-h 0.070 → 100; 1-h 0.170 → 49/0.039·0.005 + 151 = 157.28 → 157
    o = us_aqi_overall({"o3_8h": 0.070, "o3_1h": 0.170})
    assert (o.aqi, o.critical_pollutant) == (157, "o3_1h")


def test_overall_beyond_dominates() -> None:
    o = us_aqi_overall({"pm2_5_24h": 400.0, "o3_8h": 0.05})
    assert o.aqi is None
    assert o.category == BEYOND
    assert o.critical_pollutant == "pm2_5_24h"


def test_overall_ties_list_every_critical_pollutant() -> None:
    o = us_aqi_overall({"pm10_24h": 54, "pm2_5_24h": 9.0})
    assert o.aqi == 50
    assert o.critical_pollutants == ("pm2_5_24h", "pm10_24h")
    assert o.critical_pollutant == "pm2_5_24h"


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="unknown AQI pollutant"):
        us_aqi("pm2_5", 10)
    with pytest.raises(ValueError, match="negative"):
        us_aqi("pm2_5_24h", -0.1)
    with pytest.raises(ValueError, match="finite"):
        us_aqi("pm2_5_24h", float("nan"))
    with pytest.raises(ValueError):
        us_aqi_overall({})


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (0, "Good"),
        (50, "Good"),
        (51, "Moderate"),
        (100, "Moderate"),
        (101, "Unhealthy for Sensitive Groups"),
        (150, "Unhealthy for Sensitive Groups"),
        (151, "Unhealthy"),
        (200, "Unhealthy"),
        (201, "Very Unhealthy"),
        (300, "Very Unhealthy"),
        (301, "Hazardous"),
        (500, "Hazardous"),
        (501, BEYOND),
    ],
)
def test_category_of(value: int, name: str) -> None:
    assert category_of(value) == name


# --- properties ---------------------------------------------------------------------------------------------

_RANGE = {  # defined range of each pollutant in table steps
    p: (int(Decimal(lo) / Decimal(STEP[p])), int(Decimal(hi) / Decimal(STEP[p])))
    for p in STEP
    for lo in [min((r[1] for r in TABLE_2024 if r[0] == p), key=Decimal)]
    for hi in [max((r[2] for r in TABLE_2024 if r[0] == p), key=Decimal)]
}


@st.composite
def _pair(draw: st.DrawFn) -> tuple[str, Decimal, Decimal]:
    p = draw(st.sampled_from(sorted(STEP)))
    lo, hi = _RANGE[p]
    step = Decimal(STEP[p])
    # Up to 9 extra digits below the step, so truncation is exercised too.
    a = draw(st.integers(lo * 10**9, hi * 10**9 + 10**9 - 1))
    b = draw(st.integers(a, hi * 10**9 + 10**9 - 1))
    return p, Decimal(a) * step / 10**9, Decimal(b) * step / 10**9


@settings(max_examples=400, deadline=None)
@given(_pair())
def test_aqi_is_monotonic_and_matches_integer_oracle(case: tuple[str, Decimal, Decimal]) -> None:
    p, a, b = case
    ra, rb = us_aqi(p, a), us_aqi(p, b)
    assert ra.aqi is not None and rb.aqi is not None
    assert ra.aqi <= rb.aqi
    assert ra.aqi == oracle(p, a)
    assert rb.aqi == oracle(p, b)
    assert ra.category == category_of(ra.aqi)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(STEP)), st.floats(0, 3000, allow_nan=False))
def test_float_inputs_behave_like_their_decimal_text(p: str, x: float) -> None:
    r = us_aqi(p, x)
    assert r.truncated <= Decimal(repr(x)) < r.truncated + Decimal(STEP[p])
    assert r.aqi == oracle(p, Decimal(repr(x)))


# --- NowCast (kpis.md §2.4) -------------------------------------------------------------------------------

EPA_EXAMPLE = [50, 80, 75, 90, 82, 53, 64, 74, 21, 10, 16, 13]  # oldest → newest, EPA "Computing the NowCast"


def test_nowcast_epa_example() -> None:
    assert nowcast(EPA_EXAMPLE) == 17.4
    assert us_aqi("pm2_5_24h", nowcast(EPA_EXAMPLE) or 0).aqi == 66  # kpis.md: AQI 66 under the 2024 table


def test_nowcast_uses_only_last_12_hours() -> None:
    assert nowcast([500.0] * 30 + [float(v) for v in EPA_EXAMPLE]) == 17.4


def test_nowcast_two_of_three_recent_hours() -> None:
    assert nowcast([*EPA_EXAMPLE[:-2], None, 13]) is not None  # ages 0 and 2 valid
    assert nowcast([*EPA_EXAMPLE[:-3], 21, None, None]) is None  # only age 2 valid
    assert nowcast([*EPA_EXAMPLE[:-3], None, None, 13]) is None
    assert nowcast([13]) is None
    assert nowcast([10, 13]) is not None


def test_nowcast_missing_hour_still_ages_data() -> None:
    # oldest→newest 10, None, 20: w* = 1 - 10/20 = 0.5; (20 + 0.5²·10) / (1 + 0.5²) = 22.5/1.25 = 18.0
    # (counting only valid hours would give (20 + 0.5·10)/1.5 = 16.6).
    assert nowcast([10, None, 20]) == 18.0


def test_nowcast_nan_is_a_missing_hour() -> None:
    assert nowcast([10, float("nan"), 20]) == 18.0
    assert nowcast([10, float("nan"), float("nan")]) is None


def test_nowcast_pm10_truncates_to_integer() -> None:
    # 50, 55, 61: w = 50/61; (61 + 55w + 50w²)/(1 + w + w²) = 519731/9271 = 56.06 → 56
    assert nowcast([50, 55, 61], "pm10") == 56.0


def test_nowcast_flat_and_zero() -> None:
    assert nowcast([20.0] * 12) == 20.0
    assert nowcast([0.0] * 12) == 0.0


def test_nowcast_ozone_rejected() -> None:
    with pytest.raises(ValueError, match="pm2_5 and pm10"):
        nowcast(EPA_EXAMPLE, "o3")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0, 1000)), min_size=1, max_size=14))
def test_nowcast_within_valid_range(hours: list[float | None]) -> None:
    result = nowcast(hours)
    valid = [h for h in hours[-12:] if h is not None]
    if result is not None:
        assert min(valid) - 0.1 <= result <= max(valid)


# --- EAQI (kpis.md §3, A6) ---------------------------------------------------------------------------------

EAQI_2021 = {  # kpis.md §3, 2021-2023 table: upper bounds Good … Very poor (Extremely poor open)
    "pm2_5": (10, 20, 25, 50, 75),
    "pm10": (20, 40, 50, 100, 150),
    "no2": (40, 90, 120, 230, 340),
    "o3": (50, 100, 130, 240, 380),
    "so2": (100, 200, 350, 500, 750),
}
EAQI_2017 = {  # kpis.md §3, 2017 table: upper bounds Good … Poor (Very poor open)
    "pm2_5": (10, 20, 25, 50),
    "pm10": (20, 35, 50, 100),
    "no2": (40, 100, 200, 400),
    "o3": (80, 120, 180, 240),
    "so2": (100, 200, 350, 500),
}
NAMES_2021 = ["Good", "Fair", "Moderate", "Poor", "Very poor", "Extremely poor"]


@pytest.mark.parametrize("pollutant", sorted(EAQI_2021))
def test_eaqi_2021_boundaries_upper_inclusive(pollutant: str) -> None:
    for i, bound in enumerate(EAQI_2021[pollutant]):
        assert eaqi(pollutant, bound) == NAMES_2021[i]  # A6: exactly on the bound → lower band
        assert eaqi(pollutant, bound + 0.01) == NAMES_2021[i + 1]
    assert eaqi(pollutant, 0) == "Good"
    assert eaqi(pollutant, 5000) == "Extremely poor"  # above the printed top stays in the worst band


@pytest.mark.parametrize("pollutant", sorted(EAQI_2017))
def test_eaqi_2017_boundaries(pollutant: str) -> None:
    names = NAMES_2021[:5]
    for i, bound in enumerate(EAQI_2017[pollutant]):
        assert eaqi(pollutant, bound, "2017") == names[i]
        assert eaqi(pollutant, bound + 0.01, "2017") == names[i + 1]
    assert eaqi(pollutant, 5000, "2017") == "Very poor"


def test_eaqi_versions_differ() -> None:
    assert eaqi("no2", 95, "2017") == "Fair"
    assert eaqi("no2", 95, "2021") == "Moderate"
    assert eaqi("pm10", 160, "2017") == "Very poor"
    assert eaqi("pm10", 160) == "Extremely poor"
    assert eaqi_level("o3", 90, "2017") == 2


def test_eaqi_overall_worst_band() -> None:
    o = eaqi_overall({"pm2_5": 8, "no2": 95, "o3": 60})
    assert (o.band, o.level, o.pollutant) == ("Moderate", 3, "no2")
    assert o.bands == {"pm2_5": "Good", "no2": "Moderate", "o3": "Fair"}
    assert o.complete is None
    tie = eaqi_overall({"o3": 120, "no2": 100})
    assert tie.pollutants == ("no2", "o3") and tie.pollutant == "no2"


def test_eaqi_station_completeness() -> None:
    assert eaqi_overall({"no2": 10, "pm10": 10}, station_type="traffic").complete is True
    assert eaqi_overall({"no2": 10, "pm10": 10}, station_type="background").complete is False
    assert eaqi_overall({"no2": 10, "o3": 10, "pm2_5": 3}, station_type="background").complete is True
    assert eaqi_overall({"no2": 10, "o3": 10}, station_type="industrial").complete is False


def test_eaqi_errors() -> None:
    with pytest.raises(ValueError, match="no EAQI band"):
        eaqi("co", 1)
    with pytest.raises(ValueError, match="no EAQI band"):
        eaqi("pm2_5", 1, "2019")
    with pytest.raises(ValueError, match="negative"):
        eaqi("pm2_5", -1)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(EAQI_2021)),
    st.sampled_from(["2017", "2021"]),
    st.floats(0, 2000),
    st.floats(0, 2000),
)
def test_eaqi_monotonic(p: str, table: str, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert eaqi_level(p, lo, table) <= eaqi_level(p, hi, table)


# --- CAQI (kpis.md §3) --------------------------------------------------------------------------------------


def test_caqi_grid_points_and_linear_cells() -> None:
    for c, idx in [(0, 0), (50, 25), (100, 50), (200, 75), (400, 100)]:
        assert caqi("no2", c).index == pytest.approx(idx)
    assert caqi("no2", 150).index == pytest.approx(62.5)  # halfway in the 100-200 cell
    assert caqi("pm2_5", 15).index == pytest.approx(25)
    assert caqi("pm10", 70).index == pytest.approx(62.5)  # 50 + (70-50)/(90-50)·25
    assert caqi("co", 8750).index == pytest.approx(62.5)
    assert caqi("so2", 425).index == pytest.approx(87.5)


def test_caqi_bands() -> None:
    assert caqi("no2", 50).band == "very low"  # index exactly 25
    assert caqi("no2", 51).band == "low"
    assert caqi("o3", 180).band == "medium"
    assert caqi("o3", 181).band == "high"
    assert caqi("o3", 240).band == "high"


def test_caqi_above_100_continues_last_slope() -> None:
    # NO2 high cell: 200→75, 400→100, slope 25/200; 500 → 112.5
    r = caqi("no2", 500)
    assert r.index == pytest.approx(112.5)
    assert r.band == "very high"


def test_caqi_overall_and_reexport() -> None:
    o = caqi_overall({"no2": 150, "pm10": 20})
    assert o.pollutant == "no2" and o.index == pytest.approx(62.5) and o.band == "medium"
    assert o.sub_indices["pm10"] == pytest.approx(20.0)
    assert aqi_mod.caqi is eaqi_mod.caqi and aqi_mod.eaqi is eaqi_mod.eaqi
    with pytest.raises(ValueError, match="no CAQI grid"):
        caqi("nh3", 1)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(eaqi_mod.CAQI_GRID)), st.floats(0, 30000), st.floats(0, 30000))
def test_caqi_monotonic(p: str, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert caqi(p, lo).index <= caqi(p, hi).index + 1e-9


# --- docs/kpis.md examples -----------------------------------------------------------------------------------


def test_docs_indicator_examples_run() -> None:
    """Every example of the "Indicator functions" section of docs/kpis.md is a doctest that must pass."""
    import doctest
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "kpis.md").read_text(encoding="utf-8")
    start = text.index("## Indicator functions")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    test = doctest.DocTestParser().get_doctest(section, {}, "docs/kpis.md#indicator-functions", None, 0)
    assert len(test.examples) >= 40
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.failures == 0
