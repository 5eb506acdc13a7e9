"""`citygw simulate`: a simulated week of the city kit into a real influxd 1.6.7, and every KPI series checked
against values recomputed here, independently, from the raw `reading` series read back from InfluxDB.

The recomputation uses numpy and plain Python only (its own AQI breakpoints, NowCast, EAQI bands, Lden,
meter deltas, peak hour), never the gateway's window engine or indicator functions. Rules: docs/kpis.md.
"""

from __future__ import annotations

import itertools
import math
import time
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest

from gateway.cli import main
from gateway.settings import load_settings
from gateway.simulate import device_specs, load_kit, run_simulation
from simulators.kit_scenario import KitScenario
from tests.servers import InfluxV1

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "config" / "kits" / "city.toml"
TZ = ZoneInfo("Europe/Madrid")
S = 10**9
H = 3600 * S
Q = 900 * S
START = date(2026, 3, 23)  # the week holds the spring DST change (29 March: a 23-hour day)
DAYS = 7

# US AQI 2024, PM rows (reference kpis.md §2): (BPlo, BPhi, Ilo, Ihi); truncation steps 0.1 and 1.
AQI_PM25 = [(0.0, 9.0, 0, 50), (9.1, 35.4, 51, 100), (35.5, 55.4, 101, 150), (55.5, 125.4, 151, 200),
            (125.5, 225.4, 201, 300), (225.5, 325.4, 301, 500)]
AQI_PM10 = [(0, 54, 0, 50), (55, 154, 51, 100), (155, 254, 101, 150), (255, 354, 151, 200), (355, 424, 201, 300),
            (425, 604, 301, 500)]
# US AQI 2024, O3 8-h rows in ppm (reference kpis.md §2.2); truncation step 0.001 ppm.
AQI_O3_8H = [("0.000", "0.054", 0, 50), ("0.055", "0.070", 51, 100), ("0.071", "0.085", 101, 150),
             ("0.086", "0.105", 151, 200), ("0.106", "0.200", 201, 300)]
# CAQI hourly grid (reference §3): µg/m³ at index 25, 50, 75, 100.
CAQI = {"no2": [50, 100, 200, 400], "pm10": [25, 50, 90, 180], "pm2_5": [15, 30, 55, 110], "o3": [60, 120, 180, 240]}
# EAQI 2021-2023 upper bounds (reference §3), bands (lo, hi]; above the last bound: level 6.
EAQI_2021 = {"pm2_5": [10, 20, 25, 50, 75], "pm10": [20, 40, 50, 100, 150], "no2": [40, 90, 120, 230, 340],
             "o3": [50, 100, 130, 240, 380]}


def local_midnight(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp()) * S


DAY_BOUNDS = [(local_midnight(START + timedelta(days=k)), local_midnight(START + timedelta(days=k + 1)))
              for k in range(DAYS)]


def trunc(x: float, step: str) -> Fraction:
    return Fraction(Decimal(repr(x)).quantize(Decimal(step), rounding=ROUND_FLOOR))


def my_aqi(pollutant: str, c: Fraction) -> int:
    for lo, hi, ilo, ihi in AQI_PM25 if pollutant == "pm2_5" else AQI_PM10:
        if Fraction(str(lo)) <= c <= Fraction(str(hi)):
            x = Fraction(ihi - ilo) / (Fraction(str(hi)) - Fraction(str(lo))) * (c - Fraction(str(lo))) + ilo
            return math.floor(x + Fraction(1, 2))
    raise AssertionError(f"{pollutant} {c} outside the table in this simulation")


def my_nowcast(hourly: list[float | None], pollutant: str) -> Fraction | None:
    by_age = [(a, Fraction(Decimal(repr(v)))) for a, v in enumerate(reversed(hourly[-12:])) if v is not None]
    if sum(1 for a, _ in by_age if a < 3) < 2:
        return None
    cs = [c for _, c in by_age]
    w = max(1 - (max(cs) - min(cs)) / max(cs), Fraction(1, 2))
    x = sum((w**a * c for a, c in by_age), Fraction(0)) / sum((w**a for a, _ in by_age), Fraction(0))
    step = Fraction(1, 10) if pollutant == "pm2_5" else Fraction(1)
    return math.floor(x / step) * step


def my_o3_aqi(ppm: Fraction) -> int:
    c = Fraction(math.floor(ppm * 1000), 1000)
    for lo, hi, ilo, ihi in AQI_O3_8H:
        if Fraction(lo) <= c <= Fraction(hi):
            return math.floor(Fraction(ihi - ilo) / (Fraction(hi) - Fraction(lo)) * (c - Fraction(lo)) + ilo
                              + Fraction(1, 2))
    raise AssertionError(f"O3 {c} ppm outside the 8-h table in this simulation")


def my_caqi(c: float, grid: list[int]) -> float:
    lo_c, lo_i = 0.0, 0.0
    for k, hi_c in enumerate(grid):
        if c <= hi_c:
            return lo_i + (c - lo_c) * 25.0 / (hi_c - lo_c)
        lo_c, lo_i = hi_c, 25.0 * (k + 1)
    return 100.0 + (c - grid[3]) * 25.0 / (grid[3] - grid[2])


def eaqi_level(pollutant: str, c: float) -> int:
    return next((i + 1 for i, hi in enumerate(EAQI_2021[pollutant]) if c <= hi), 6)


def energetic(levels: list[float]) -> float:
    arr = np.asarray(levels)
    return float(10 * np.log10(np.mean(10 ** (arr / 10))))


class Raw:
    """Raw series from InfluxDB, grouped the way the checks need them."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.ts = np.array([r["time"] for r in rows], dtype=np.int64)
        self.v = np.array([r["value"] for r in rows], dtype=np.float64)
        order = np.argsort(self.ts, kind="stable")
        self.ts, self.v = self.ts[order], self.v[order]

    def between(self, t0: int, t1: int) -> np.ndarray:
        return self.v[(self.ts >= t0) & (self.ts < t1)]

    def hourly_means(self) -> dict[int, float | None]:
        """Mean per hour; None when fewer than 45 of its minutes hold a reading (the 0.75 coverage rule)."""
        out: dict[int, float | None] = {}
        for h in range(DAY_BOUNDS[0][0], DAY_BOUNDS[-1][1], H):
            sel = (self.ts >= h) & (self.ts < h + H)
            if not sel.any():
                continue
            minutes = np.unique((self.ts[sel] - h) // (60 * S)).size
            out[h] = float(np.mean(self.v[sel])) if minutes >= 45 else None
        return out

    def last_before(self, t: int) -> float | None:
        sel = self.ts < t
        return float(self.v[sel][-1]) if sel.any() else None

    def delta(self, t0: int, t1: int) -> float:
        """Meter consumption attributed to [t0, t1): last reading in it minus the last reading before it."""
        end = self.last_before(t1)
        before = self.last_before(t0)
        assert end is not None
        if before is None:  # the first window of a meter: from its first reading
            before = float(self.between(t0, t1)[0])
        return end - before


def test_simulated_city_week_into_influxdb(tmp_path: Path, influx_v1: InfluxV1) -> None:
    db = f"sim_{time.time_ns() % 10**9}"
    influx_v1.create_database(db)
    config = tmp_path / "sinks.toml"
    config.write_text(f'[[influx]]\napi = "v1"\nurl = "{influx_v1.url}"\ndatabase = "{db}"\nbatch_size = 20000\n')
    code = main(["simulate", "--kit", str(KIT), "--days", str(DAYS), "--config", str(config),
                 "--start", START.isoformat(), "--seed", "3"])
    assert code == 0

    def q(sql: str) -> list[dict[str, Any]]:
        return influx_v1.query(sql, db=db)

    def raw(device: str, quantity: str) -> Raw:
        rows = q(f"SELECT value FROM reading WHERE device_id='{device}' AND quantity='{quantity}'")
        assert rows, (device, quantity)
        return Raw(rows)

    def kpi(name: str, window: str, device: str, **tags: str) -> dict[int, dict[str, Any]]:
        where = "".join(f" AND \"{k}\"='{v}'" for k, v in tags.items())
        rows = q(f"SELECT * FROM kpi WHERE \"name\"='{name}' AND \"window\"='{window}' AND device_id='{device}'{where}")
        return {r["time"]: r for r in rows}

    # Raw series are complete: one reading a minute for levels and meters over the 167-hour week.
    minutes = (DAY_BOUNDS[-1][1] - DAY_BOUNDS[0][0]) // (60 * S)
    assert minutes == 7 * 1440 - 60
    pm25 = raw("air-station-1", "pm2_5")
    assert pm25.ts.size == minutes

    # -- NowCast and hourly US AQI, both PM sizes, both air devices --------------------------------------------
    for device in ("air-station-1", "air-pm-2"):
        for pollutant, step in (("pm2_5", "0.1"), ("pm10", "1")):
            hourly = raw(device, pollutant).hourly_means()
            hours = sorted(hourly)
            assert len(hours) == 167
            nc = kpi(f"nowcast_{pollutant}", "1h", device)
            aqi = kpi("us_aqi", "1h", device, pollutant=pollutant)
            expected_hours = []
            for i, h in enumerate(hours):
                window = [hourly.get(h - k * H) for k in range(11, -1, -1)]
                mine = my_nowcast(window, pollutant)
                if mine is None:
                    continue
                expected_hours.append(h)
                assert nc[h]["value"] == float(mine), (device, pollutant, i)
                assert aqi[h]["value"] == my_aqi(pollutant, mine), (device, pollutant, i)
                assert aqi[h]["standard"] == "US EPA AQI 2024" and aqi[h]["u4ssc"] == "EN:EN:AQ:1C"
            assert sorted(nc) == expected_hours and sorted(aqi) == expected_hours
            assert len(expected_hours) == 166  # all but the first hour

            # Daily US AQI from the 24-h mean of the local day (23 h on 29 March).
            daily = kpi("us_aqi", "1d", device, pollutant=pollutant)
            assert sorted(daily) == [d0 for d0, _ in DAY_BOUNDS]
            series = raw(device, pollutant)
            for d0, d1 in DAY_BOUNDS:
                mean = float(np.mean(series.between(d0, d1)))
                assert daily[d0]["value"] == my_aqi(pollutant, trunc(mean, step)), (device, pollutant, d0)
                assert daily[d0]["valid"] == "true"

    # -- WHO 24-h exceedance flags --------------------------------------------------------------------------
    who = kpi("who_exceedance", "1d", "air-station-1", pollutant="pm2_5")
    flags = [1.0 if float(np.mean(pm25.between(d0, d1))) > 15 else 0.0 for d0, d1 in DAY_BOUNDS]
    assert [who[d0]["value"] for d0, _ in DAY_BOUNDS] == flags
    assert 0 < sum(flags) < DAYS  # the seeded episodes give some days above the AQG and some below

    # -- EAQI: PM 24-h running means, gases hourly; a background station needs NO2, O3 and PM -----------------
    means = {p: raw("air-station-1", p).hourly_means() for p in ("pm2_5", "pm10", "no2", "o3")}
    eaqi = kpi("eaqi", "1h", "air-station-1")
    assert len(eaqi) == 167
    for h, row in eaqi.items():
        levels = {}
        for p in ("pm2_5", "pm10"):
            running = [float(v) for k in range(24) if (v := means[p].get(h - k * H)) is not None]
            if len(running) >= 18:
                levels[p] = eaqi_level(p, sum(running) / len(running))
        for p in ("no2", "o3"):
            if (v := means[p].get(h)) is not None:
                levels[p] = eaqi_level(p, v)
        assert row["value"] == max(levels.values()), h
        assert row["valid"] == ("true" if {"no2", "o3"} <= levels.keys() and "pm2_5" in levels else "false")
    assert sum(1 for r in eaqi.values() if r["valid"] == "true") == 167 - 17  # PM needs 18 hours first

    # -- O3 8-h running means, daily max (17 means from 07:00, 13 needed), daily US AQI and WHO O3 flag --------
    o3 = means["o3"]

    def mean8(start: int) -> tuple[float, int] | None:
        vals = [float(v) for k in range(8) if (v := o3.get(start + k * H)) is not None]
        return (sum(vals) / len(vals), len(vals)) if vals else None

    running = kpi("o3_8h", "8h_running", "air-station-1")
    assert len(running) == 167
    for start, row in running.items():
        m = mean8(start)
        assert m is not None
        assert row["value"] == pytest.approx(m[0] / 1.96 / 1000, abs=1e-9) and row["hours"] == m[1]
        assert row["valid"] == ("true" if m[1] >= 6 else "false")
    o3_max = kpi("o3_8h_max", "1d", "air-station-1")
    o3_aqi = kpi("us_aqi", "1d", "air-station-1", pollutant="o3")
    o3_who = kpi("who_exceedance", "1d", "air-station-1", pollutant="o3")
    emitted = [d0 for d0, _ in DAY_BOUNDS[:-1]]  # the last day's 23:00 mean ends after the simulated week
    assert sorted(o3_max) == sorted(o3_aqi) == sorted(o3_who) == emitted
    for d0, d1 in DAY_BOUNDS[:-1]:
        starts = [h for h in range(d0, d1, H) if datetime.fromtimestamp(h // S, TZ).hour >= 7]
        assert len(starts) == 17
        day_means = [m[0] for h in starts if (m := mean8(h)) is not None and m[1] >= 6]
        top = max(day_means)
        assert o3_max[d0]["value"] == pytest.approx(top / 1.96 / 1000, abs=1e-9)
        assert o3_max[d0]["valid"] == ("true" if len(day_means) >= 13 else "false")
        assert o3_aqi[d0]["value"] == my_o3_aqi(Fraction(Decimal(repr(top))) / Fraction("1.96") / 1000)
        assert o3_who[d0]["value"] == (1.0 if top > 100 else 0.0)

    # -- CAQI: hourly grid over the station's hourly PM, NO2 and O3 ------------------------------------------
    caqi = kpi("caqi", "1h", "air-station-1")
    assert len(caqi) == 167
    for h, row in caqi.items():
        subs = {p: my_caqi(v, CAQI[p]) for p in ("pm2_5", "pm10", "no2", "o3") if (v := means[p].get(h)) is not None}
        top_index = max(subs.values())
        assert row["value"] == pytest.approx(top_index, abs=1e-9), h
        band = next((b for b, hi in zip(("very low", "low", "medium", "high"), (25, 50, 75, 100), strict=True)
                     if top_index <= hi), "very high")
        assert row["band"] == band
        assert row["valid"] == ("true" if {"no2", "pm10"} <= subs.keys() else "false")

    # -- Noise: Lday, Levening, Lnight, Lden per local day from hourly energetic means -------------------------
    noise = raw("noise-plaza-1", "noise_laeq")
    lden = kpi("lden", "1d", "noise-plaza-1")
    lnight = kpi("lnight", "1d", "noise-plaza-1")
    assert sorted(lden) == [d0 for d0, _ in DAY_BOUNDS]
    for d0, d1 in DAY_BOUNDS:
        periods: dict[str, list[float]] = {"d": [], "e": [], "n": []}
        for h in range(d0, d1, H):
            local_hour = datetime.fromtimestamp(h // S, TZ).hour
            p = "d" if 7 <= local_hour < 19 else "e" if 19 <= local_hour < 23 else "n"
            periods[p].append(energetic(list(noise.between(h, h + H))))
        ld, le, ln = (energetic(periods[p]) for p in "den")
        expected = 10 * math.log10((12 * 10 ** (ld / 10) + 4 * 10 ** ((le + 5) / 10) + 8 * 10 ** ((ln + 10) / 10)) / 24)
        assert lden[d0]["value"] == pytest.approx(expected, abs=1e-9)
        assert lnight[d0]["value"] == pytest.approx(ln, abs=1e-9)
        assert lden[d0]["hours"] == (d1 - d0) // H and lden[d0]["u4ssc"] == "EN:EN:EQ:2A"

    # -- Water: daily consumption, per capita (population 120), minimum night flow 02-04 ----------------------
    water = raw("water-block-a", "water_volume")
    wc = kpi("water_consumption", "1d", "water-block-a")
    pc = kpi("water_consumption_per_capita", "1d", "kit")
    mnf = kpi("minimum_night_flow", "1d", "water-block-a")
    for d0, d1 in DAY_BOUNDS:
        volume = water.delta(d0, d1)
        assert wc[d0]["value"] == pytest.approx(volume, abs=1e-9)
        assert pc[d0]["value"] == pytest.approx(volume * 1000 / 120, abs=1e-6)
        night = [water.delta(h, h + H) for h in range(d0, d1, H)
                 if 2 <= datetime.fromtimestamp(h // S, TZ).hour < 4]
        assert len(night) == (1 if d0 == local_midnight(date(2026, 3, 29)) else 2)  # 02:00 does not exist
        assert mnf[d0]["value"] == pytest.approx(min(night), abs=1e-9)

    # -- Energy: daily kWh and the peak 15-min demand -------------------------------------------------------
    energy = raw("energy-school-1", "energy_import")
    ec = kpi("energy_consumption", "1d", "energy-school-1")
    peak = kpi("peak_demand", "1d", "energy-school-1")
    for d0, d1 in DAY_BOUNDS:
        assert ec[d0]["value"] == pytest.approx(energy.delta(d0, d1), abs=1e-6)
        quarters = [energy.delta(t, t + Q) for t in range(d0, d1, Q)]
        assert peak[d0]["value"] == pytest.approx(max(quarters) * 4, abs=1e-6)
        assert peak[d0]["peak_start"] == d0 + int(np.argmax(quarters)) * Q
    epc = kpi("energy_consumption_per_capita", "1d", "kit")
    assert sorted(epc) == [d0 for d0, _ in DAY_BOUNDS]
    for d0, d1 in DAY_BOUNDS:  # one meter, population 120 (EN:E:E:2C per day)
        assert epc[d0]["value"] == pytest.approx(energy.delta(d0, d1) / 120, abs=1e-6)

    # -- Traffic: hourly and daily volume, peak hour and PHF, class shares -----------------------------------
    vehicles = raw("traffic-calle-mayor", "vehicle_count")
    assert vehicles.ts.size == minutes // 15
    hourly_volume = kpi("traffic_volume", "1h", "traffic-calle-mayor")
    assert len(hourly_volume) == 167
    for h, row in hourly_volume.items():
        assert row["value"] == float(vehicles.between(h, h + H).sum()) and row["valid"] == "true"
    daily_volume = kpi("traffic_volume", "1d", "traffic-calle-mayor")
    phf = kpi("traffic_phf", "1d", "traffic-calle-mayor")
    peak_hour = kpi("traffic_peak_hour", "1d", "traffic-calle-mayor")
    cars, heavy = raw("traffic-calle-mayor", "car_count"), raw("traffic-calle-mayor", "heavy_vehicle_count")
    bikes = raw("traffic-calle-mayor", "bike_count")
    car_share = kpi("traffic_class_share", "1d", "traffic-calle-mayor", **{"class": "car"})
    for d0, d1 in DAY_BOUNDS:
        assert daily_volume[d0]["value"] == float(vehicles.between(d0, d1).sum())
        bins = [float(vehicles.between(t, t + Q).sum()) for t in range(d0, d1, Q)]
        rolling = [sum(bins[i:i + 4]) for i in range(len(bins) - 3)]
        best = int(np.argmax(rolling))  # first maximum: ties go to the earliest hour
        assert peak_hour[d0]["value"] == rolling[best]
        assert peak_hour[d0]["peak_start"] == d0 + best * Q
        assert phf[d0]["value"] == pytest.approx(rolling[best] / (4 * max(bins[best:best + 4])), abs=1e-12)
        c, hv, b = (float(x.between(d0, d1).sum()) for x in (cars, heavy, bikes))
        assert car_share[d0]["value"] == pytest.approx(100 * c / (c + hv + b), abs=1e-9)


def test_kit_devices_and_deterministic_readings(tmp_path: Path) -> None:
    settings = load_settings(KIT)
    specs = {s.device_id: s for s in device_specs(settings)}
    assert set(specs) == {"air-pm-2", "noise-plaza-1", "water-block-a", "energy-school-1", "air-station-1",
                          "traffic-calle-mayor"}
    assert ("no2", "ug/m3") in specs["air-station-1"].quantities  # from the JSON route's field mapping
    start = local_midnight(START)
    a = KitScenario(list(specs.values()), "Europe/Madrid", start, seed=9).step(start, start + 6 * H)
    b = KitScenario(list(specs.values()), "Europe/Madrid", start, seed=9).step(start, start + 6 * H)
    c = KitScenario(list(specs.values()), "Europe/Madrid", start, seed=10).step(start, start + 6 * H)
    assert a == b and a != c
    assert all(r1.ts <= r2.ts for r1, r2 in itertools.pairwise(a))


def test_simulate_into_the_local_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    config = tmp_path / "local.toml"
    config.write_text(f'[local_store]\nenabled = true\npath = "{store}"\n')
    settings, specs = load_kit(REPO / "config" / "kits" / "noise.toml", config)
    result = run_simulation(settings, specs, 2, start=date(2026, 10, 24), seed=1)  # 25 October: a 25-hour day
    assert result.ok and result.rejected == 0
    assert result.readings == (24 + 25) * 60
    kpis = [orjson.loads(line) for f in sorted(store.glob("kpi-*.jsonl")) for line in f.read_bytes().splitlines()]
    lden = [k for k in kpis if k["name"] == "lden"]
    assert [k["hours"] for k in lden] == [24, 25]
    assert all(k["valid"] for k in lden)


@pytest.mark.parametrize("kit", sorted((REPO / "config" / "kits").glob("*.toml")), ids=lambda p: p.stem)
def test_every_kit_file_is_valid_and_has_simulated_devices(kit: Path) -> None:
    settings = load_settings(kit)
    start = local_midnight(START)
    scenario = KitScenario(device_specs(settings), settings.gateway.timezone, start, seed=1)
    assert scenario.devices, kit.name
    readings = scenario.step(start, start + H)
    assert readings and {r.device_id for r in readings} == {d.device_id for d in scenario.devices}


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--kit", str(KIT), "--days", "1", "--start", "23/03/2026"]) == 2
    assert "not an ISO date" in capsys.readouterr().err
    assert main(["simulate", "--kit", str(KIT), "--days", "0"]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[kpis]\nlden_day_start = 30\n')
    assert main(["simulate", "--kit", str(KIT), "--days", "1", "--config", str(bad)]) == 1
    assert "lden_day_start" in capsys.readouterr().err
    assert main(["simulate", "--kit", str(tmp_path / "missing.toml"), "--days", "1"]) == 1
    assert "cannot read" in capsys.readouterr().err
