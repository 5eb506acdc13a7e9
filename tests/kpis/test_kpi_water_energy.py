"""Water and energy indicators, and the consistency of the U4SSC indicator map.

Vectors: docs/kpis.md §6 (per-capita, ISO 37120 loss %, IWA NRW, SAIFI/SAIDI/CAIDI), hand computations.
"""

from __future__ import annotations

import datetime as dt
import importlib
from zoneinfo import ZoneInfo

import pytest

from aggregators.u4ssc import INDICATORS
from aggregators.water_energy import (
    caidi,
    kwh_per_capita,
    minimum_night_flow,
    nrw_pct,
    peak_demand_kw,
    per_capita_l_per_day,
    percent,
    saidi,
    saifi,
    water_loss_pct,
)
from devices.vocabulary import QUANTITIES

MADRID = ZoneInfo("Europe/Madrid")


def _ns(local: dt.datetime) -> int:
    return int(local.timestamp()) * 1_000_000_000


def test_per_capita_l_per_day() -> None:
    # 1 000 000 m³ in a year for 20 000 people: 1e9 l / (20 000 × 365) = 136.99 l/cap/day
    assert per_capita_l_per_day(1_000_000, 20_000, 365) == pytest.approx(136.986, abs=1e-3)
    with pytest.raises(ValueError):
        per_capita_l_per_day(1, 0, 365)
    with pytest.raises(ValueError):
        per_capita_l_per_day(-1, 10, 365)


def test_water_loss_pct_iso_37120() -> None:
    assert water_loss_pct(1000, 800) == pytest.approx(20.0)
    assert water_loss_pct(1000, 1000) == 0.0
    assert water_loss_pct(1000, 1050) == pytest.approx(-5.0)  # A13: not clamped, shows a metering problem
    with pytest.raises(ValueError):
        water_loss_pct(0, 0)


def test_nrw_pct_iwa() -> None:
    # SIV 1200, billed authorized 900 → NRW 300 = 25 %
    assert nrw_pct(1200, 900) == pytest.approx(25.0)


def test_minimum_night_flow_local_window() -> None:
    # 15-min flows over two local days (January, UTC+1): flow = 10 + local hour, plus a dip at 03:15 on day 1.
    flows: dict[int, float] = {}
    start = dt.datetime(2026, 1, 10, 0, 0, tzinfo=MADRID)
    for k in range(2 * 96):
        t = start + dt.timedelta(minutes=15 * k)
        flows[_ns(t)] = 10.0 + t.hour
    dip = _ns(dt.datetime(2026, 1, 10, 3, 15, tzinfo=MADRID))
    flows[dip] = 4.5
    # A low flow at 04:00 (outside [02, 04)) must not count.
    flows[_ns(dt.datetime(2026, 1, 11, 4, 0, tzinfo=MADRID))] = 1.0
    mnf = minimum_night_flow(flows, "Europe/Madrid")
    assert mnf == {dt.date(2026, 1, 10): 4.5, dt.date(2026, 1, 11): 12.0}
    # Same result from (ts, flow) pairs and a tzinfo object.
    assert minimum_night_flow(list(flows.items()), MADRID) == mnf
    # The UTC clock would pick other samples: 02-04 UTC is 03-05 local.
    assert minimum_night_flow(flows, "UTC")[dt.date(2026, 1, 11)] == 1.0


def test_minimum_night_flow_dst_spring_forward() -> None:
    # 29 March 2026, Europe/Madrid jumps 02:00 → 03:00; only 03:xx local exists in the window.
    flows: dict[int, float] = {}
    t = dt.datetime(2026, 3, 28, 23, 0, tzinfo=dt.UTC)  # 00:00 local (UTC+1)
    while t < dt.datetime(2026, 3, 29, 6, 0, tzinfo=dt.UTC):
        local = t.astimezone(MADRID)
        flows[int(t.timestamp()) * 1_000_000_000] = 100.0 + local.hour
        t += dt.timedelta(minutes=30)
    assert minimum_night_flow(flows, "Europe/Madrid") == {dt.date(2026, 3, 29): 103.0}


def test_minimum_night_flow_skips_bad_values_and_validates() -> None:
    t = _ns(dt.datetime(2026, 1, 10, 2, 30, tzinfo=MADRID))
    assert minimum_night_flow({t: float("nan"), t + 1: 3.0}, "Europe/Madrid") == {dt.date(2026, 1, 10): 3.0}
    with pytest.raises(ValueError):
        minimum_night_flow({}, "UTC", 4, 2)


def test_peak_demand_kw() -> None:
    # 15-min energies: the highest 2.5 kWh in 15 min is 10 kW average power.
    assert peak_demand_kw([1.0, 2.5, None, 0.5]) == pytest.approx(10.0)
    assert peak_demand_kw([3.0], interval_minutes=60) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        peak_demand_kw([None])


def test_kwh_per_capita() -> None:
    assert kwh_per_capita(5_000_000, 1000) == pytest.approx(5000.0)
    # 30 days of 400 000 kWh for 1000 people → 400 × 365/30 = 4866.7 kWh/year/capita
    assert kwh_per_capita(400_000, 1000, days=30) == pytest.approx(400 * 365 / 30)


def test_reliability_indices_a10() -> None:
    # 1000 customers; 3 events: 200 customers × 30 min, 50 × 120 min, 1000 × 6 min
    interruptions = 200 + 50 + 1000
    minutes = 200 * 30 + 50 * 120 + 1000 * 6
    assert saifi(interruptions, 1000) == pytest.approx(1.25)
    assert saidi(minutes, 1000) == pytest.approx(18.0)
    assert caidi(minutes, interruptions) == pytest.approx(14.4)  # U4SSC Outage Time = CAIDI = SAIDI/SAIFI
    assert caidi(0, 0) is None


def test_percent() -> None:
    assert percent(30, 120) == pytest.approx(25.0)
    with pytest.raises(ValueError):
        percent(1, 0)


# --- U4SSC indicator map -------------------------------------------------------------------------------------


def test_indicator_codes_and_units() -> None:
    assert INDICATORS["EN:EN:AQ:1C"].unit.startswith("µg/m³")
    assert INDICATORS["EN:EN:WS:2C"].unit == "l/capita/day"
    assert INDICATORS["EN:E:E:2C"].unit == "kWh/year/capita"
    assert INDICATORS["EC:I:WS:3C"].unit == "%"
    assert INDICATORS["EC:ICT:T:2C"].unit == "%"
    assert INDICATORS["EN:EN:EQ:2A"].unit == "%"
    for code, ind in INDICATORS.items():
        assert code == ind.code
        parts = code.split(":")
        assert parts[-1][-1] in "CA" and parts[-1][:-1].isdigit(), code


def test_indicator_feeds_use_vocabulary_quantities() -> None:
    for ind in INDICATORS.values():
        assert ind.feeds, ind.code
        for feed in ind.feeds:
            assert feed.quantity in QUANTITIES, (ind.code, feed.quantity)


def test_indicator_functions_exist() -> None:
    for ind in INDICATORS.values():
        if not ind.function.startswith("aggregators."):
            continue  # a described ratio, not a function
        module, _, name = ind.function.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), ind.function
