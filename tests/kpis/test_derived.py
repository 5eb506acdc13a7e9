"""Derived KPI series (aggregators/derived/): synthetic window points in, indicator points out.

Expected values come from the references' worked examples (docs/kpis.md, shared reference kpis.md) or are
computed here by hand with plain arithmetic; the aggregators functions are used only where the test says so.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from pydantic import ValidationError

from aggregators.derived import (
    GROUPS,
    HISTORY_HOURS,
    INDICATOR_GROUPS,
    SERIES,
    STATE_VERSION,
    DerivedKpis,
    KpiOptions,
)
from aggregators.kpi import KpiPoint
from aggregators.u4ssc import INDICATORS

H = 3_600_000_000_000
Q = 900_000_000_000
TZ = "Europe/Madrid"
MADRID = ZoneInfo(TZ)


def midnight(y: int, m: int, d: int) -> int:
    """UTC ns of local midnight in Madrid."""
    return int(datetime(y, m, d, tzinfo=MADRID).timestamp()) * 10**9


DAY0 = midnight(2026, 3, 23)  # a Monday, CET (UTC+1)


def level(name: str, start: int, value: float, unit: str = "ug/m3", device: str = "dev", valid: bool = True,
          window: str = "1h", size: int = H, count: int = 60) -> KpiPoint:
    """A closed window of a level quantity, as the window engine emits it."""
    return KpiPoint(name, device, window, start, start + size, unit, value,
                    {"count": count, "mean": value, "coverage": 1.0 if valid else 0.5}, {"site": "s1"}, valid)


def meter(name: str, start: int, consumption: float, unit: str, device: str = "m1", size: int = H,
          window: str = "1h", count: int = 60) -> KpiPoint:
    """A closed window of a cumulative meter (headline = consumption)."""
    return KpiPoint(name, device, window, start, start + size, unit, consumption,
                    {"count": count, "consumption": consumption, "coverage": 1.0}, {}, True)


def counts(name: str, start: int, total: float, device: str = "t1", size: int = H, window: str = "1h",
           reports: int = 4) -> KpiPoint:
    """A closed window of an additive count (headline = sum)."""
    return KpiPoint(name, device, window, start, start + size, "1", total,
                    {"count": reports, "sum": total, "coverage": 0.1}, {}, False)


def feed_hourly(d: DerivedKpis, points_by_hour: dict[int, list[KpiPoint]]) -> list[KpiPoint]:
    """Feed one hour per call, in order (as ticks close them)."""
    out: list[KpiPoint] = []
    for hour in sorted(points_by_hour):
        out.extend(d.feed(points_by_hour[hour]))
    return out


def named(points: list[KpiPoint], name: str, window: str | None = None, **tags: str) -> list[KpiPoint]:
    """Points of one series (and tags)."""
    return [p for p in points if p.name == name and (window is None or p.window == window)
            and all(p.tags.get(k) == v for k, v in tags.items())]


# -- NowCast and US AQI ------------------------------------------------------------------------------------


EPA_NOWCAST = [50, 80, 75, 90, 82, 53, 64, 74, 21, 10, 16, 13]  # EPA "Computing the NowCast" example → 17.4


def hand_nowcast(values: list[float | None], step: float) -> float | None:
    """NowCast by the fact-sheet recipe, newest last (independent of aggregators.aqi)."""
    last = values[-12:]
    by_age = [(age, v) for age, v in enumerate(reversed(last)) if v is not None]
    if sum(1 for age, _ in by_age if age < 3) < 2:
        return None
    cs = [v for _, v in by_age]
    w = max(1 - (max(cs) - min(cs)) / max(cs), 0.5)
    x = sum(w**a * c for a, c in by_age) / sum(w**a for a, _ in by_age)
    return math.floor(x / step + 1e-9) * step


def test_nowcast_and_hourly_aqi_follow_the_epa_example() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    hours = {DAY0 + k * H: [level("pm2_5", DAY0 + k * H, float(v))] for k, v in enumerate(EPA_NOWCAST)}
    out = feed_hourly(d, hours)
    nc = named(out, "nowcast_pm2_5")
    assert len(nc) == 11  # the first hour has 1 of the last 3 hours: NowCast undefined, not emitted
    assert nc[-1].value == pytest.approx(17.4) and nc[-1].start_ns == DAY0 + 11 * H
    assert nc[-1].fields["hours"] == 12
    for k, p in enumerate(nc, start=1):
        assert p.start_ns == DAY0 + k * H
        assert p.value == pytest.approx(hand_nowcast([float(v) for v in EPA_NOWCAST[: k + 1]], 0.1))
    aqi = named(out, "us_aqi", "1h", pollutant="pm2_5")
    assert aqi[-1].value == 66  # reference §2.4: NowCast 17.4 → AQI 66 under the 2024 table
    assert aqi[-1].tags["standard"] == "US EPA AQI 2024" and aqi[-1].tags["u4ssc"] == "EN:EN:AQ:1C"
    assert aqi[-1].tags["averaging"] == "nowcast" and aqi[-1].tags["site"] == "s1"
    assert aqi[-1].fields["category"] == "Moderate"


def test_nowcast_needs_two_of_the_last_three_hours() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    out = feed_hourly(d, {
        DAY0: [level("pm10", DAY0, 40.0)],
        DAY0 + H: [level("pm10", DAY0 + H, 60.0, valid=False)],  # incomplete hour: not a NowCast input
        DAY0 + 2 * H: [level("pm10", DAY0 + 2 * H, 50.0)],
    })
    nc = named(out, "nowcast_pm10")
    # Hour 0: 1 of 1 recent valid... only one hour exists; hour 1: valid {0}; hour 2: valid {0, 2} → defined.
    assert [p.start_ns for p in nc] == [DAY0 + 2 * H]
    # Hand: values 40 (2 h ago), 50 (now): w* = 1 - 10/50 = 0.8; (50 + 0.64·40)/(1 + 0.64) = 46.09 → 46 (1 µg/m³)
    assert nc[0].value == 46.0 and nc[0].fields["hours"] == 2


def test_daily_us_aqi_from_1d_windows_and_invalid_days() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    day = KpiPoint("pm2_5", "dev", "1d", DAY0, DAY0 + 24 * H, "ug/m3", 35.9, {"coverage": 1.0}, {}, True)
    short = KpiPoint("pm10", "dev", "1d", DAY0, DAY0 + 24 * H, "ug/m3", 155.0, {"coverage": 0.5}, {}, False)
    out = d.feed([day, short])
    pm25 = named(out, "us_aqi", "1d", pollutant="pm2_5")[0]
    assert pm25.value == 102 and pm25.valid  # TAD example: PM2.5 35.9 → 102
    pm10 = named(out, "us_aqi", "1d", pollutant="pm10")[0]
    assert pm10.value == 101 and not pm10.valid  # 155 is the bottom of 101-150; the day is flagged, not hidden
    assert pm10.tags["averaging"] == "24h"


def test_beyond_the_aqi_is_a_flagged_sentinel_not_a_cap() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    out = d.feed([KpiPoint("pm2_5", "dev", "1d", DAY0, DAY0 + 24 * H, "ug/m3", 400.0, {}, {}, True)])
    p = named(out, "us_aqi")[0]
    assert p.value > 500 and p.fields["status"] == "beyond" and p.fields["category"] == "Beyond the AQI"


def test_who_exceedance_is_strictly_above_the_guideline() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    pts = [KpiPoint("pm2_5", "a", "1d", DAY0, DAY0 + 24 * H, "ug/m3", 15.0, {}, {}, True),
           KpiPoint("pm2_5", "b", "1d", DAY0, DAY0 + 24 * H, "ug/m3", 15.01, {}, {}, True),
           KpiPoint("no2", "c", "1d", DAY0, DAY0 + 24 * H, "ppb", 14.0, {}, {}, True)]  # × 1.9 = 26.6 µg/m³
    out = named(d.feed(pts), "who_exceedance")
    by_dev = {p.device_id: p for p in out}
    assert by_dev["a"].value == 0.0 and by_dev["b"].value == 1.0  # WHO 24-h AQG PM2.5 = 15 µg/m³
    assert by_dev["c"].value == 1.0 and by_dev["c"].fields["mean"] == pytest.approx(26.6)  # AQG NO2 = 25
    assert by_dev["c"].fields["guideline"] == 25.0 and by_dev["c"].tags["standard"] == "WHO AQG 2021"


# -- EAQI ---------------------------------------------------------------------------------------------------


def test_eaqi_uses_24h_running_pm_mean_and_hourly_gases() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    pm = [5.0] * 12 + [30.0] * 12  # running mean after 24 h: 17.5 (Fair: 10 < x <= 20, 2021 table)
    hours = {}
    for k in range(24):
        t = DAY0 + k * H
        hours[t] = [level("pm2_5", t, pm[k]), level("no2", t, 95.0 if k == 23 else 30.0)]
    out = named(feed_hourly(d, hours), "eaqi")
    # The first 17 hours have fewer than 18 PM hours: NO2 alone (30 → Good).
    assert [p.value for p in out[:17]] == [1.0] * 17 and "pm2_5_ugm3" not in out[0].fields
    last = out[-1]
    assert last.fields["pm2_5_ugm3"] == pytest.approx(17.5)
    # NO2 95 is Moderate (90 < x <= 120) in the 2021 table, worse than PM's Fair.
    assert last.value == 3 and last.tags["band"] == "Moderate" and last.fields["critical_pollutant"] == "no2"
    # Hour 22: running mean of 23 hours = (12·5 + 11·30)/23; NO2 30 Good.
    h22 = out[-2]
    assert h22.fields["pm2_5_ugm3"] == pytest.approx((12 * 5 + 11 * 30) / 23)
    assert h22.tags["band"] == "Fair"


def test_eaqi_station_type_marks_incomplete_sets() -> None:
    d = DerivedKpis(KpiOptions(eaqi_station_type="background"), TZ)
    out = named(d.feed([level("no2", DAY0, 20.0)]), "eaqi")
    assert len(out) == 1 and not out[0].valid  # background stations need NO2, O3 and PM


# -- noise ---------------------------------------------------------------------------------------------------


def energetic(levels: list[float]) -> float:
    """10·lg(mean(10^(L/10)))."""
    return 10 * math.log10(sum(10 ** (v / 10) for v in levels) / len(levels))


def test_lden_per_local_day_with_default_periods() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    profile = [50.0] * 7 + [65.0] * 12 + [60.0] * 3 + [50.0] * 2  # local hours 0..23
    hours = {DAY0 + k * H: [level("noise_laeq", DAY0 + k * H, v, "dBA")] for k, v in enumerate(profile)}
    first23 = dict(list(hours.items())[:23])
    assert not named(feed_hourly(d, first23), "lden")  # the day is not over yet
    out = d.feed(hours[DAY0 + 23 * H])
    ld, le, ln = energetic(profile[7:19]), energetic(profile[19:23]), energetic(profile[23:] + profile[:7])
    lden = 10 * math.log10((12 * 10 ** (ld / 10) + 4 * 10 ** ((le + 5) / 10) + 8 * 10 ** ((ln + 10) / 10)) / 24)
    got = {p.name: p for p in out}
    assert got["lday"].value == pytest.approx(65.0) and got["lnight"].value == pytest.approx(50.0)
    assert got["levening"].value == pytest.approx(le)
    assert got["lden"].value == pytest.approx(lden)
    assert got["lden"].start_ns == DAY0 and got["lden"].end_ns == DAY0 + 24 * H and got["lden"].window == "1d"
    assert got["lden"].tags["u4ssc"] == "EN:EN:EQ:2A" and got["lden"].valid
    assert got["lden"].fields["end_band"] == "60-64" and got["lnight"].fields["end_band"] == "50-54"


def test_lden_shortened_evening_matches_the_reference_example() -> None:
    # docs/kpis.md noise example: evening 19-22 → weights 12/3/9 → Lden 63.71 dB.
    d = DerivedKpis(KpiOptions(lden_night_start=22), TZ)
    profile = [50.0] * 7 + [65.0] * 12 + [60.0] * 3 + [50.0] * 2
    out = feed_hourly(d, {DAY0 + k * H: [level("noise_laeq", DAY0 + k * H, v, "dBA")]
                          for k, v in enumerate(profile)})
    assert round(named(out, "lden")[0].value, 2) == 63.71


def test_lden_on_the_spring_dst_day_has_23_hours() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    day = midnight(2026, 3, 29)
    nxt = midnight(2026, 3, 30)
    assert nxt - day == 23 * H
    out = feed_hourly(d, {t: [level("noise_laeq", t, 55.0, "dBA")] for t in range(day, nxt, H)})
    lden = named(out, "lden")
    assert len(lden) == 1 and lden[0].end_ns == nxt and lden[0].fields["hours"] == 23
    # All hours 55 dB: Lden = 10·lg((12·10^5.5 + 4·10^6 + 8·10^6.5)/24)
    assert lden[0].value == pytest.approx(10 * math.log10((12 * 10**5.5 + 4 * 10**6 + 8 * 10**6.5) / 24))
    assert lden[0].valid  # 7 of 8 night hours ≥ 75 %


def test_noise_day_with_too_few_night_hours_is_flagged() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    hours = {DAY0 + k * H: [level("noise_laeq", DAY0 + k * H, 50.0, "dBA", valid=not (k < 3))]
             for k in range(24)}
    out = {p.name: p for p in feed_hourly(d, hours)}
    assert out["lnight"].fields["hours"] == 5 and not out["lnight"].valid  # 5 of 8 < 6
    assert out["lday"].valid and not out["lden"].valid


# -- water and energy ----------------------------------------------------------------------------------------


def test_water_day_per_capita_and_night_flow() -> None:
    d = DerivedKpis(KpiOptions(population=4), TZ)
    use = [0.02 + 0.01 * (k % 5) for k in range(24)]
    use[2], use[3] = 0.011, 0.009  # local 02:00-04:00: the night window
    use[1] = 0.001  # lower, but outside the night window
    out = feed_hourly(d, {DAY0 + k * H: [meter("water_volume", DAY0 + k * H, u, "m3")] for k, u in enumerate(use)})
    day = named(out, "water_consumption")[0]
    assert day.value == pytest.approx(sum(use)) and day.valid and day.unit == "m3"
    pc = named(out, "water_consumption_per_capita")[0]
    assert pc.value == pytest.approx(sum(use) * 1000 / 4) and pc.device_id == "kit" and pc.valid
    assert pc.tags["u4ssc"] == "EN:EN:WS:2C" and pc.unit == "l/capita/day"
    mnf = named(out, "minimum_night_flow")[0]
    assert mnf.value == pytest.approx(0.009) and mnf.unit == "m3/h" and mnf.valid


def test_water_day_with_missing_hours_is_flagged_and_silent_meter_spoils_per_capita() -> None:
    d = DerivedKpis(KpiOptions(population=10), TZ)
    hours: dict[int, list[KpiPoint]] = {}
    for k in range(24):
        t = DAY0 + k * H
        hours[t] = [meter("water_volume", t, 0.1, "m3", "m1")]
        if k < 17:  # m2 stops after 17 hours: 17 of 24 < 18
            hours[t].append(meter("water_volume", t, 0.2, "m3", "m2"))
    out = feed_hourly(d, hours)
    by = {p.device_id: p for p in named(out, "water_consumption")}
    assert by["m1"].valid and not by["m2"].valid and by["m2"].value == pytest.approx(17 * 0.2)
    pc = named(out, "water_consumption_per_capita")[0]
    assert not pc.valid and pc.value == pytest.approx((2.4 + 3.4) * 1000 / 10)


def test_a_meter_silent_for_a_day_spoils_per_capita_until_it_is_a_week_gone() -> None:
    d = DerivedKpis(KpiOptions(population=2), TZ)
    hours: dict[int, list[KpiPoint]] = {}
    day0 = midnight(2026, 4, 6)  # ten 24-hour days (no DST change)
    for k in range(10 * 24):
        t = day0 + k * H
        hours[t] = [meter("water_volume", t, 0.01, "m3", "m1")]
        if k < 24:
            hours[t].append(meter("water_volume", t, 0.02, "m3", "m2"))  # m2 is heard on day 0 only
    pc = named(feed_hourly(d, hours), "water_consumption_per_capita")
    assert [p.fields["meters"] for p in pc] == [2] + [1] * 9
    # Days 1-7 start within a week of m2's last hour (day 0, 23:00): incomplete. Day 8 and 9: m2 is forgotten.
    assert [p.valid for p in pc] == [True] + [False] * 7 + [True] * 2
    assert pc[0].value == pytest.approx(24 * 0.03 * 1000 / 2) and pc[9].value == pytest.approx(24 * 0.01 * 1000 / 2)


def test_energy_day_and_peak_15min_demand() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    quarters = [0.5] * 96
    quarters[40] = 3.1  # 10:00 local: 3.1 kWh in 15 min = 12.4 kW
    quarters[41] = 3.1  # a tie: the earliest interval is reported
    batches: dict[int, list[KpiPoint]] = {}
    for k in range(24):
        t = DAY0 + k * H
        batch = [meter("energy_import", t + i * Q, quarters[4 * k + i], "kWh", "e1", Q, "15m", 15) for i in range(4)]
        batch.append(meter("energy_import", t, sum(quarters[4 * k:4 * k + 4]), "kWh", "e1"))
        batches[t] = batch
    out = feed_hourly(d, batches)
    peak = named(out, "peak_demand")[0]
    assert peak.value == pytest.approx(12.4) and peak.fields["peak_start"] == DAY0 + 40 * Q
    assert peak.fields["intervals"] == 96 and peak.valid and peak.unit == "kW"
    assert named(out, "energy_consumption")[0].value == pytest.approx(sum(quarters))


# -- traffic -------------------------------------------------------------------------------------------------


def test_traffic_hourly_volume_peak_hour_phf_and_class_shares() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    bins = [20.0] * 96
    bins[32:36] = [900.0, 1000.0, 1200.0, 850.0]  # 08:00-09:00: the NIATT example, PHF 3950/4800 = 0.82
    batches: dict[int, list[KpiPoint]] = {}
    for k in range(24):
        t = DAY0 + k * H
        batch = [counts("vehicle_count", t + i * Q, bins[4 * k + i], size=Q, window="15m", reports=1)
                 for i in range(4)]
        total = sum(bins[4 * k:4 * k + 4])
        batch.append(counts("vehicle_count", t, total))
        batch.append(counts("car_count", t, total * 0.75))
        batch.append(counts("heavy_vehicle_count", t, total * 0.25))
        batches[t] = batch
    out = feed_hourly(d, batches)
    hourly = named(out, "traffic_volume", "1h")
    assert [p.value for p in hourly][8] == 3950 and all(p.valid for p in hourly)
    assert named(out, "traffic_volume", "1d")[0].value == pytest.approx(sum(bins))
    peak = named(out, "traffic_peak_hour")[0]
    assert peak.value == 3950 and peak.fields["peak_start"] == DAY0 + 8 * H and peak.valid
    phf = named(out, "traffic_phf")[0]
    assert round(phf.value, 2) == 0.82 and phf.value == pytest.approx(3950 / 4800)
    shares = {p.tags["class"]: p.value for p in named(out, "traffic_class_share")}
    assert shares == pytest.approx({"car": 75.0, "heavy_vehicle": 25.0})


def test_traffic_hour_with_missing_reports_is_flagged() -> None:
    d = DerivedKpis(KpiOptions(traffic_report_interval="15m"), TZ)
    out = d.feed([counts("vehicle_count", DAY0, 100.0, reports=3)])
    assert not named(out, "traffic_volume")[0].valid


# -- 8-hour running means (O3, CO), CAQI, electricity per capita ---------------------------------------------


def aqi_by_hand(c: Fraction, bp_lo: str, bp_hi: str, i_lo: int, i_hi: int) -> int:
    """EPA equation (reference kpis.md §2.1) on an already truncated concentration, rounded half up."""
    ip = Fraction(i_hi - i_lo) / (Fraction(bp_hi) - Fraction(bp_lo)) * (c - Fraction(bp_lo)) + i_lo
    return math.floor(ip + Fraction(1, 2))


def test_o3_8h_running_mean_needs_6_of_8_hours() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    values = [20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0]  # ppb
    invalid = {8, 9}  # hours 08:00 and 09:00 local are incomplete windows
    out = feed_hourly(d, {DAY0 + k * H: [level("o3", DAY0 + k * H, v, "ppb", valid=k not in invalid)]
                          for k, v in enumerate(values)})
    means = named(out, "o3_8h")
    assert [p.start_ns for p in means] == [DAY0 + k * H for k in range(-7, 3)]  # one per closed hour, by start
    assert all(p.window == "8h_running" and p.unit == "ppm" and p.end_ns - p.start_ns == 8 * H for p in means)
    first8 = means[7]  # hours 00:00-07:00: all 8 valid
    assert first8.value == pytest.approx(sum(values[:8]) / 8 / 1000) and first8.valid and first8.fields["hours"] == 8
    assert means[6].fields["hours"] == 7 and means[6].valid  # 7 hours since the start (-1 .. 6): 7 of 8
    assert means[4].fields["hours"] == 5 and not means[4].valid  # only 5 hours exist yet
    last = means[9]  # 02:00-09:00: 08:00 and 09:00 invalid -> 6 of 8, the mean of the 6 valid hours
    assert last.fields["hours"] == 6 and last.valid and last.value == pytest.approx(sum(values[2:8]) / 6 / 1000)


def o3_day_batches(hourly: list[float | None], unit: str = "ppb", device: str = "o3dev") -> dict[int, list[KpiPoint]]:
    """One batch per hour from DAY0 on; None = no o3 window that hour (a pm10 window keeps the clock going)."""
    out: dict[int, list[KpiPoint]] = {}
    for k, v in enumerate(hourly):
        t = DAY0 + k * H
        out[t] = [level("pm10", t, 10.0, device="clock")] + ([] if v is None else [level("o3", t, v, unit, device)])
    return out


def test_o3_daily_max_8h_gives_the_tad_aqi_and_the_who_flag() -> None:
    # TAD worked example (reference kpis.md §2.5): 8-h O3 0.078 ppm -> AQI 126. 78 ppb for 12:00-19:00 local.
    hourly: list[float | None] = [30.0] * 31
    for k in range(12, 20):
        hourly[k] = 78.0
    d = DerivedKpis(KpiOptions(), TZ)
    batches = o3_day_batches(hourly)
    out: list[KpiPoint] = []
    for t in sorted(batches):
        got = d.feed(batches[t])
        # the day's last mean starts 23:00 and ends 07:00 the next day: nothing daily before that hour closes
        assert bool(named(got, "o3_8h_max")) == (t == DAY0 + 30 * H), t
        out.extend(got)
    day = named(out, "o3_8h_max")[0]
    assert (day.start_ns, day.end_ns, day.window) == (DAY0, DAY0 + 24 * H, "1d")
    assert day.value == pytest.approx(0.078) and day.valid and day.fields["means"] == 17
    assert day.fields["peak_start"] == DAY0 + 12 * H
    aqi = named(out, "us_aqi", "1d", pollutant="o3")[0]
    assert aqi.value == 126 and aqi.tags["averaging"] == "8h" and aqi.valid
    who = named(out, "who_exceedance", pollutant="o3")[0]
    # WHO AQG O3 daily max 8-h = 100 µg/m³ (reference §4); 78 ppb × 1.96 = 152.88 µg/m³
    assert who.value == 1.0 and who.fields["mean"] == pytest.approx(152.88) and who.fields["guideline"] == 100.0


def test_o3_in_ugm3_and_an_incomplete_day() -> None:
    # µg/m³ input: 137.2 µg/m³ / 1.96 = 70 ppb = 0.070 ppm, the top of "Moderate" (AQI 100, reference §2.2).
    # No o3 after 15:00 local: means start 07:00 … 10:00 have >= 6 of 8 hours (4 of 17 < 13): day invalid.
    hourly: list[float | None] = [137.2] * 16 + [None] * 15
    d = DerivedKpis(KpiOptions(), TZ)
    out = feed_hourly(d, o3_day_batches(hourly, "ug/m3"))
    day = named(out, "o3_8h_max")[0]
    assert day.fields["means"] == 4 and not day.valid and day.value == pytest.approx(0.070)
    aqi = named(out, "us_aqi", "1d", pollutant="o3")[0]
    assert aqi.value == 100 and not aqi.valid
    who = named(out, "who_exceedance", pollutant="o3")[0]
    assert who.fields["mean"] == pytest.approx(137.2) and who.value == 1.0 and not who.valid


def test_o3_who_flag_below_the_guideline_and_missing_level() -> None:
    hourly: list[float | None] = [50.0] * 31  # 50 ppb × 1.96 = 98 µg/m³ <= 100
    out = feed_hourly(DerivedKpis(KpiOptions(), TZ), o3_day_batches(hourly))
    assert named(out, "who_exceedance", pollutant="o3")[0].value == 0.0
    # 50 ppb = 0.050 ppm: "Good" segment 0.000-0.054 -> 0-50
    assert named(out, "us_aqi", "1d", pollutant="o3")[0].value == aqi_by_hand(Fraction("0.050"), "0", "0.054", 0, 50)
    out = feed_hourly(DerivedKpis(KpiOptions(who_level="IT-4"), TZ), o3_day_batches(hourly))
    assert not named(out, "who_exceedance", pollutant="o3")  # WHO 2021 has no IT-4 value for O3


def test_co_8h_running_mean_daily_max_and_aqi() -> None:
    # docs/kpis.md example: co_8h 8.4 ppm -> AQI 90. 8.4 ppm × 1.145 mg/m³/ppm = 9.618 mg/m³ for 04:00-11:00.
    hourly: list[float | None] = [1.0] * 31
    for k in range(4, 12):
        hourly[k] = 8.4 * 1.145
    batches: dict[int, list[KpiPoint]] = {}
    for k, v in enumerate(hourly):
        t = DAY0 + k * H
        batches[t] = [level("co", t, float(v or 0.0), "mg/m3", "codev")]
    out = feed_hourly(DerivedKpis(KpiOptions(), TZ), batches)
    running = named(out, "co_8h")
    assert running and all(p.window == "8h_running" and p.unit == "ppm" for p in running)
    peak = next(p for p in running if p.start_ns == DAY0 + 4 * H)
    assert peak.value == pytest.approx(8.4)
    day = named(out, "co_8h_max")[0]
    assert day.value == pytest.approx(8.4) and day.fields["peak_start"] == DAY0 + 4 * H
    assert day.fields["means"] == 24 and day.valid  # every 8-h mean starting in the day
    aqi = named(out, "us_aqi", "1d", pollutant="co")[0]
    assert aqi.value == 90 == aqi_by_hand(Fraction("8.4"), "4.5", "9.4", 51, 100)
    assert not named(out, "who_exceedance", pollutant="co")  # CO's WHO flag comes from the "1d" daily mean


def test_caqi_hourly_index_band_and_core_pollutants() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    t = DAY0
    out = d.feed([level("pm10", t, 25.0), level("no2", t, 150.0), level("o3", t, 30.0, "ppb")])
    p = named(out, "caqi")[0]
    # Grid (reference kpis.md §3): NO2 150 in 100-200 -> 50 + 50 × 25/100 = 62.5 (medium); PM10 25 -> 25;
    # O3 30 ppb × 1.96 = 58.8 µg/m³ in 0-60 -> 58.8 × 25/60 = 24.5.
    assert p.value == pytest.approx(62.5) and p.tags["band"] == "medium" and p.unit == "index"
    assert p.fields["critical_pollutant"] == "no2" and p.fields["o3_ugm3"] == pytest.approx(58.8)
    assert p.valid and (p.window, p.start_ns, p.end_ns) == ("1h", t, t + H)
    out = d.feed([level("pm10", t + H, 10.0), level("o3", t + H, 30.0, "ppb")])
    assert not named(out, "caqi")[0].valid  # no NO2: a CITEAIR core pollutant is missing
    out = d.feed([level("no2", t + 2 * H, 20.0)])
    assert not named(out, "caqi")[0].valid  # no PM10 either


def test_caqi_uses_the_co_8h_mean() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    out: list[KpiPoint] = []
    for k in range(8):
        out = d.feed([level("co", DAY0 + k * H, 8.0, "mg/m3"), level("no2", DAY0 + k * H, 20.0)])
        if k < 5:  # fewer than 6 hours: no CO 8-h mean yet, the index is NO2's 20 × 25/50 = 10
            early = named(out, "caqi")[0]
            assert early.value == pytest.approx(10.0) and "co_ugm3" not in early.fields
    p = named(out, "caqi")[0]
    # CO 8-h 8000 µg/m³ in 7500-10000 -> 50 + 500 × 25/2500 = 55 (medium)
    assert p.value == pytest.approx(55.0) and p.fields["critical_pollutant"] == "co" and p.tags["band"] == "medium"


def test_electricity_per_capita_sums_meters_like_water() -> None:
    d = DerivedKpis(KpiOptions(population=40), TZ)
    batches = {DAY0 + k * H: [meter("energy_import", DAY0 + k * H, 2.0, "kWh", "e1"),
                              meter("energy_import", DAY0 + k * H, 0.5, "kWh", "e2")] for k in range(24)}
    # day 2: e2 silent after 06:00 -> its day is incomplete, so the kit-wide value is flagged
    batches.update({DAY0 + k * H: [meter("energy_import", DAY0 + k * H, 2.0, "kWh", "e1")]
                    + ([meter("energy_import", DAY0 + k * H, 0.5, "kWh", "e2")] if k < 30 else [])
                    for k in range(24, 49)})
    days = named(feed_hourly(d, batches), "energy_consumption_per_capita")
    assert [p.start_ns for p in days] == [DAY0, DAY0 + 24 * H]
    assert days[0].value == pytest.approx((24 * 2.0 + 24 * 0.5) / 40) and days[0].valid  # 1.5 kWh/capita/day
    assert days[0].device_id == "kit" and days[0].tags["u4ssc"] == "EN:E:E:2C" and days[0].fields["meters"] == 2
    assert days[1].value == pytest.approx((24 * 2.0 + 6 * 0.5) / 40) and not days[1].valid
    assert not named(feed_hourly(DerivedKpis(KpiOptions(), TZ), batches), "energy_consumption_per_capita")


# -- state and memory -------------------------------------------------------------------------------------------


def synthetic_stream(days: int, seed: int) -> list[list[KpiPoint]]:
    """Batches of closed windows for every indicator family, one batch per hour (+ daily windows)."""
    rng = random.Random(seed)
    batches: list[list[KpiPoint]] = []
    for h in range(days * 24):
        t = DAY0 + h * H
        batch: list[KpiPoint] = []
        for i in range(4):
            batch.append(meter("energy_import", t + i * Q, rng.uniform(0.2, 2.0), "kWh", "e1", Q, "15m", 15))
            batch.append(counts("vehicle_count", t + i * Q, float(rng.randint(0, 300)), size=Q, window="15m",
                                reports=1))
        batch.append(level("pm2_5", t, rng.uniform(2, 60), valid=rng.random() > 0.1))
        batch.append(level("pm10", t, rng.uniform(5, 90)))
        batch.append(level("no2", t, rng.uniform(5, 150)))
        batch.append(level("o3", t, rng.uniform(10, 90), "ppb", valid=rng.random() > 0.15))
        batch.append(level("co", t, rng.uniform(0.2, 6.0), "mg/m3", valid=rng.random() > 0.15))
        batch.append(level("noise_laeq", t, rng.uniform(40, 75), "dBA", "n1"))
        batch.append(meter("water_volume", t, rng.uniform(0.0, 0.5), "m3"))
        batch.append(meter("energy_import", t, rng.uniform(1.0, 8.0), "kWh", "e1"))
        batch.append(counts("vehicle_count", t, float(rng.randint(0, 1200))))
        batch.append(counts("car_count", t, float(rng.randint(0, 1000))))
        batch.append(counts("bike_count", t, float(rng.randint(0, 100))))
        if (h + 1) % 24 == 0:
            d0 = DAY0 + (h - 23) * H
            batch.append(KpiPoint("pm2_5", "dev", "1d", d0, d0 + 24 * H, "ug/m3", rng.uniform(3, 40),
                                  {"coverage": 1.0}, {}, rng.random() > 0.3))
        batches.append(batch)
    return batches


def test_state_round_trip_mid_day_equals_uninterrupted() -> None:
    options = KpiOptions(population=50)
    batches = synthetic_stream(3, seed=7)
    straight = DerivedKpis(options, TZ)
    expected = [p for b in batches for p in straight.feed(b)]
    assert {p.name for p in expected} >= {"lden", "us_aqi", "eaqi", "nowcast_pm2_5", "peak_demand",
                                          "traffic_phf", "water_consumption_per_capita", "who_exceedance",
                                          "o3_8h", "co_8h", "o3_8h_max", "co_8h_max", "caqi",
                                          "energy_consumption_per_capita"}
    assert named(expected, "us_aqi", "1d", pollutant="o3") and named(expected, "who_exceedance", pollutant="o3")
    for cut in (13, 30, 47):  # mid-day of day 1, early day 2, last hour of day 2
        first = DerivedKpis(options, TZ)
        got = [p for b in batches[:cut] for p in first.feed(b)]
        saved = orjson.loads(orjson.dumps(first.state()))  # what the journal's meta table keeps
        second = DerivedKpis(options, TZ)
        second.restore(saved)
        got += [p for b in batches[cut:] for p in second.feed(b)]
        assert got == expected, cut


V1_STATE = Path(__file__).parent / "data" / "derived_state_v1.json"
V1_CUT = 33  # batches the version-1 code had been fed when it saved V1_STATE


def test_restores_the_state_the_v1_code_saved() -> None:
    # V1_STATE: `state()` of the single-class code (git show fd64535:aggregators/derived.py) after
    # synthetic_stream(3, seed=11)[:V1_CUT] with KpiOptions(population=50) in Madrid: all groups' records at the
    # top level. Restored, it must carry on exactly like an uninterrupted run of this code.
    options = KpiOptions(population=50)
    batches = synthetic_stream(3, seed=11)
    straight = DerivedKpis(options, TZ)
    for b in batches[:V1_CUT]:
        straight.feed(b)
    restored = DerivedKpis(options, TZ)
    restored.restore(orjson.loads(V1_STATE.read_bytes()))
    assert restored.state() == straight.state()
    expected = [p for b in batches[V1_CUT:] for p in straight.feed(b)]
    got = [p for b in batches[V1_CUT:] for p in restored.feed(b)]
    assert got == expected
    assert {p.name for p in got} >= {"lden", "o3_8h_max", "water_consumption_per_capita", "peak_demand",
                                     "energy_consumption_per_capita", "traffic_class_share", "eaqi"}


def test_state_is_versioned_per_group() -> None:
    options = KpiOptions(population=50)
    batches = synthetic_stream(2, seed=2)
    d = DerivedKpis(options, TZ)
    for b in batches[:30]:
        d.feed(b)
    state = orjson.loads(orjson.dumps(d.state()))
    assert state["version"] == STATE_VERSION and set(state["groups"]) == set(GROUPS)
    assert all(g["version"] == 1 for g in state["groups"].values())
    state["groups"]["noise"]["version"] = 99  # a newer format of one group: that group starts afresh
    restored = DerivedKpis(options, TZ)
    restored.restore(state)
    again = restored.state()
    assert again["groups"]["noise"]["hourly"] == [] and again["groups"]["air"] == state["groups"]["air"]
    restored.restore({"version": 99})  # an unknown facade version is ignored
    assert restored.state() == again


def test_every_indicator_switches_one_registered_group() -> None:
    owners = [name for name, cls in GROUPS.items() for _ in cls.indicators]
    assert sorted(i for cls in GROUPS.values() for i in cls.indicators) == sorted(INDICATOR_GROUPS)
    assert len(owners) == len(INDICATOR_GROUPS)
    assert sum(len(cls.SERIES) for cls in GROUPS.values()) == len(SERIES)  # no series emitted by two groups


def test_memory_is_bounded_to_48_hours_per_series() -> None:
    d = DerivedKpis(KpiOptions(), TZ)
    for batch in synthetic_stream(5, seed=3):
        d.feed(batch)
    groups = d.state()["groups"]
    assert all(len(recs) <= HISTORY_HOURS for g in groups.values() for _d, _q, recs in g["hourly"])
    assert all(len(recs) <= 100 for g in groups.values() for _d, _q, recs in g["quarters"])  # one (25-h) day


def test_indicator_switches() -> None:
    d = DerivedKpis(KpiOptions(indicators=["noise"]), TZ)
    out = [p for b in synthetic_stream(2, seed=1) for p in d.feed(b)]
    assert {p.name for p in out} == {"lday", "levening", "lnight", "lden"}


def test_every_emitted_series_is_declared() -> None:
    d = DerivedKpis(KpiOptions(population=10), TZ)
    out = [p for b in synthetic_stream(2, seed=5) for p in d.feed(b)]
    for p in out:
        windows, unit = SERIES[p.name]
        assert p.window in windows and p.unit == unit, p
        assert math.isfinite(p.value) and "standard" in p.tags


def test_u4ssc_feeds_name_existing_series() -> None:
    named_series = [f.series for ind in INDICATORS.values() for f in ind.feeds if f.series]
    assert named_series, "the U4SSC map names the derived series that feed it"
    for s in named_series:
        assert s in SERIES, s


# -- options -------------------------------------------------------------------------------------------------


def test_options_validation() -> None:
    with pytest.raises(ValidationError, match="extra"):
        KpiOptions.model_validate({"populaton": 3})
    with pytest.raises(ValidationError, match="lden_day_start < lden_evening_start"):
        KpiOptions(lden_day_start=19, lden_evening_start=7)
    with pytest.raises(ValidationError, match="unknown EAQI table"):
        KpiOptions(eaqi_table="2030")
    with pytest.raises(ValidationError, match="divide one hour"):
        KpiOptions(traffic_report_interval="7m")
    with pytest.raises(ValidationError, match="water_night_start < water_night_end"):
        KpiOptions(water_night_start=4, water_night_end=2)
    assert KpiOptions().den_evening == (19, 23)


def test_day_grouping_follows_the_kit_time_zone() -> None:
    utc_day = int(datetime(2026, 3, 23, tzinfo=UTC).timestamp()) * 10**9
    assert utc_day - H == DAY0  # Madrid midnight is 23:00 UTC in winter
    d = DerivedKpis(KpiOptions(), "UTC")
    out = feed_hourly(d, {DAY0 + k * H: [meter("water_volume", DAY0 + k * H, 1.0, "m3")] for k in range(25)})
    days = named(out, "water_consumption")
    # In UTC the first hour (23:00 UTC on the 22nd) ends the 22nd (1 of 24 hours); the 23rd is the next 24.
    assert [(p.start_ns, p.value, p.valid) for p in days] == [(utc_day - 24 * H, 1.0, False), (utc_day, 24.0, True)]
    assert days[1].end_ns == int((datetime(2026, 3, 23, tzinfo=UTC) + timedelta(days=1)).timestamp()) * 10**9


# -- crash consistency through the real pipeline and journal -----------------------------------------------------


def _run_pipeline(path: Path, start_ns: int, end_ns: int, crash_at: int | None, meters: bool = True
                  ) -> list[KpiPoint]:
    """Play a simulated kit through Pipeline + Journal; optionally 'crash' (drop everything) once at crash_at."""
    from aggregators.windows import WindowEngine, WindowSpec
    from gateway.journal import KIND_KPI, Journal
    from gateway.metrics import Metrics
    from gateway.pipeline import Pipeline
    from simulators.kit_scenario import DeviceSpec, KitScenario

    specs = [DeviceSpec("air", (("pm2_5", "ug/m3"), ("pm10", "ug/m3"), ("o3", "ppb"))),
             DeviceSpec("noise", (("noise_laeq", "dBA"),)),
             DeviceSpec("traffic", (("vehicle_count", "1"), ("car_count", "1"), ("heavy_vehicle_count", "1")))]
    if meters:
        specs += [DeviceSpec("water", (("water_volume", "m3"),)), DeviceSpec("energy", (("energy_import", "kWh"),))]
    scenario = KitScenario(specs, TZ, start_ns, seed=4)
    now = [start_ns]

    def build() -> Pipeline:
        engine = WindowEngine([WindowSpec.parse(w) for w in ("15m", "1h", "1d")], grace_ns=10 * 10**9, timezone=TZ)
        p = Pipeline(Journal(path), engine, Metrics(), clock_ns=lambda: now[0],
                     derived=DerivedKpis(KpiOptions(population=3), TZ))
        p.rebuild()
        return p

    pipeline = build()
    t = start_ns
    step = 1800 * 10**9
    while t < end_ns:
        readings = scenario.step(t, t + step)
        t += step
        now[0] = t
        pipeline.process([(readings, None)])
        pipeline.tick()
        if crash_at is not None and t == crash_at:
            pipeline.journal.close()  # power cut: nothing but the journal survives
            pipeline = build()
    now[0] = end_ns + 3600 * 10**9
    pipeline.tick()
    kpis = [e.as_kpi() for e in pipeline.journal.read_after(0, 10**7) if e.kind == KIND_KPI]
    pipeline.journal.close()
    return kpis


def test_pipeline_restart_gives_the_same_kpi_series(tmp_path: Path) -> None:
    start, end = DAY0, DAY0 + 3 * 24 * H
    expected = _run_pipeline(tmp_path / "a.sqlite", start, end, None, meters=False)
    assert {p.name for p in expected} >= {"lden", "us_aqi", "nowcast_pm2_5", "eaqi", "traffic_phf",
                                          "traffic_class_share", "o3_8h", "o3_8h_max", "caqi"}
    got = _run_pipeline(tmp_path / "b.sqlite", start, end, DAY0 + 37 * H + 1800 * 10**9, meters=False)
    assert len(got) == len(expected)
    assert got == expected


def test_pipeline_restart_gives_the_same_meter_kpi_series(tmp_path: Path) -> None:
    start, end = DAY0, DAY0 + 3 * 24 * H
    expected = _run_pipeline(tmp_path / "a.sqlite", start, end, None)
    assert {p.name for p in expected} >= {"peak_demand", "water_consumption_per_capita", "minimum_night_flow",
                                          "energy_consumption_per_capita"}
    got = _run_pipeline(tmp_path / "b.sqlite", start, end, DAY0 + 37 * H + 1800 * 10**9)
    assert got == expected
