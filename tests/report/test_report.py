"""`citygw report`: 35 simulated days of the city kit in a real influxd 1.6.7 and a real VictoriaMetrics, the June
report, and every figure recomputed here, independently, from the raw `reading` series read back from influxd.

The recomputation uses numpy and plain Python only (hourly means with the 45-minute rule, daily means with the
18-hour rule, energetic means, meter deltas), never the gateway's windows or the report's code. Rules:
docs/report.md.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from gateway.cli import main
from tests.browser import save_screenshot
from tests.servers import InfluxV1, VictoriaMetrics

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "config" / "kits" / "city.toml"
SCHEMA = REPO / "schemas" / "report.schema.json"
TZ = ZoneInfo("Europe/Madrid")
S = 10**9
H = 3600 * S
SIM_START = date(2026, 5, 28)  # 35 days: the whole of June plus margins (no DST change inside)
MONTH = (date(2026, 6, 1), date(2026, 7, 1))
DAYS = [MONTH[0] + timedelta(days=k) for k in range(30)]
WHO_24H = {"pm2_5": 15.0, "pm10": 45.0, "no2": 25.0}
WHO_ANNUAL = {"pm2_5": 5.0, "pm10": 15.0, "no2": 10.0, "o3": 60.0}
EU_2008 = {"pm2_5": 25.0, "pm10": 40.0, "no2": 40.0}
EU_2030 = {"pm2_5": 10.0, "pm10": 20.0, "no2": 20.0}
AIR = {"air-station-1": ("pm2_5", "pm10", "no2", "o3"), "air-pm-2": ("pm2_5", "pm10")}
REPORT_TABLE = """
[report]
title = "Ciudad de prueba"
population = 120
inhabitants = { "plaza-mayor" = 40 }
street_km_total = 12.0
street_km = { "traffic-calle-mayor" = 1.5 }
"""


def midnight(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=TZ).timestamp()) * S


def energetic(levels: Any) -> float:
    return float(10 * np.log10(np.mean(10 ** (np.asarray(levels, dtype=float) / 10))))


class Kit:
    """The simulated kit's databases: one influxd database and one VictoriaMetrics, filled once per module."""

    def __init__(self, influx: InfluxV1, victoria: VictoriaMetrics, db: str, store: Path) -> None:
        self.influx, self.victoria, self.db, self.store = influx, victoria, db, store

    def raw(self, device: str, quantity: str) -> tuple[np.ndarray, np.ndarray]:
        t0, t1 = midnight(MONTH[0]) - 2 * 86400 * S, midnight(MONTH[1])
        rows = self.influx.query(f"SELECT value FROM reading WHERE device_id='{device}' AND quantity='{quantity}' "
                                 f"AND time >= {t0} AND time < {t1}", db=self.db)
        assert rows, (device, quantity)
        ts = np.array([r["time"] for r in rows], dtype=np.int64)
        v = np.array([r["value"] for r in rows], dtype=np.float64)
        order = np.argsort(ts, kind="stable")
        return ts[order], v[order]


@pytest.fixture(scope="module")
def kit(influx_v1: InfluxV1, victoria: VictoriaMetrics, tmp_path_factory: pytest.TempPathFactory) -> Kit:
    db = f"report_{time.time_ns() % 10**9}"
    influx_v1.create_database(db)
    config = tmp_path_factory.mktemp("report") / "sinks.toml"
    store = config.parent / "store"
    config.write_text(f'[[influx]]\napi = "v1"\nurl = "{influx_v1.url}"\ndatabase = "{db}"\nbatch_size = 20000\n\n'
                      f'[[influx]]\napi = "v2"\nurl = "{victoria.url}"\norg = "o"\nbucket = "{db}"\n'
                      'token_env = "HOME"\nbatch_size = 20000\n\n'
                      f'[local_store]\nenabled = true\npath = "{store}"\n')
    code = main(["simulate", "--kit", str(KIT), "--days", "35", "--config", str(config),
                 "--start", SIM_START.isoformat(), "--seed", "5"])
    assert code == 0
    victoria.flush()
    return Kit(influx_v1, victoria, db, store)


def write_config(path: Path, sink: str, report: str = "") -> Path:
    path.write_text(f'[gateway]\nid = "city-kit"\ntimezone = "Europe/Madrid"\n\n{sink}\n{REPORT_TABLE}{report}')
    return path


def run_report(tmp_path: Path, config: Path, formats: str = "json") -> dict[str, Any]:
    out = tmp_path / "out"
    code = main(["report", "--config", str(config), "--from", MONTH[0].isoformat(), "--to", MONTH[1].isoformat(),
                 "--out", str(out), "--format", formats])
    assert code == 0
    doc: dict[str, Any] = json.loads((out / "u4ssc-2026-06-01-2026-07-01.json").read_text())
    return doc


def figure(doc: dict[str, Any], code: str, quantity: str, subject: str) -> dict[str, Any]:
    found = [f for f in doc["figures"] if f["code"] == code and f["quantity"] == quantity and f["subject"] == subject]
    assert len(found) == 1, (code, quantity, subject, [(f["code"], f["quantity"], f["subject"])
                                                      for f in doc["figures"]])
    return found[0]


def daily_means(ts: np.ndarray, v: np.ndarray) -> dict[date, float]:
    """Daily means of the hourly means (hour valid with ≥ 45 distinct minutes; day valid with ≥ 18 hours)."""
    out = {}
    for day in DAYS:
        hourly = []
        for h in range(midnight(day), midnight(day + timedelta(days=1)), H):
            sel = (ts >= h) & (ts < h + H)
            if np.unique((ts[sel] - h) // (60 * S)).size >= 45:
                hourly.append(float(np.mean(v[sel])))
        if len(hourly) >= 18:
            out[day] = sum(hourly) / len(hourly)
    return out


def meter_delta(ts: np.ndarray, v: np.ndarray, t0: int, t1: int) -> float:
    """Consumption in [t0, t1): the last reading in it minus the last reading before it."""
    return float(v[ts < t1][-1] - v[ts < t0][-1])


def test_june_report_equals_independent_recomputation(kit: Kit, tmp_path: Path) -> None:
    """Every figure, completeness and comparison of the report equals the one recomputed from raw readings."""
    config = write_config(tmp_path / "report.toml", f'[[influx]]\napi = "v1"\nurl = "{kit.influx.url}"\n'
                                                     f'database = "{kit.db}"\n')
    doc = run_report(tmp_path, config, "json,csv,html")
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()), format_checker=jsonschema.FormatChecker())
    assert doc["period"] == {"from": "2026-06-01", "to": "2026-07-01", "timezone": "Europe/Madrid", "days": 30}

    # -- Air: EN:EN:AQ:1C per device and pollutant, and city-wide ----------------------------------------------
    city: dict[str, list[float]] = {}
    for device, pollutants in AIR.items():
        for p in pollutants:
            daily = daily_means(*kit.raw(device, p))
            assert len(daily) == 30  # the simulation is complete
            mean = sum(daily.values()) / len(daily)
            city.setdefault(p, []).append(mean)
            f = figure(doc, "EN:EN:AQ:1C", p, device)
            assert f["value"] == pytest.approx(mean, rel=1e-9)
            assert f["completeness"] == {"valid_days": 30, "days": 30, "ratio": 1.0, "required": 0.9, "meets": True}
            comps = {c["against"]: c for c in f["comparisons"]}
            assert comps["WHO 2021 AQG (annual)"]["limit"] == WHO_ANNUAL[p]
            assert comps["WHO 2021 AQG (annual)"]["exceeded"] == (mean > WHO_ANNUAL[p])
            if p in EU_2008:
                assert comps["EU 2008/50/EC limit (annual)"]["exceeded"] == (mean > EU_2008[p])
                assert comps["EU 2024/2881 limit for 2030 (annual)"]["exceeded"] == (mean > EU_2030[p])
            if p in WHO_24H:
                assert f["extra"]["days_above_who_24h"] == sum(1 for x in daily.values() if x > WHO_24H[p])
            expected_status = ("poor" if p in EU_2008 and mean > EU_2008[p] else
                               "fair" if mean > WHO_ANNUAL[p] or (p in EU_2030 and mean > EU_2030[p]) else "good")
            assert f["status"] == expected_status
            assert "period shorter than a year: indicative against annual values" in f["flags"]
    for p, means in city.items():
        assert figure(doc, "EN:EN:AQ:1C", p, "city")["value"] == pytest.approx(sum(means) / len(means), rel=1e-9)

    # -- Noise: period Lden/Lnight (energetic mean of daily values) and the exposed share -------------------------
    ts, v = kit.raw("noise-plaza-1", "noise_laeq")
    ldens, lnights = [], []
    for day in DAYS:
        periods: dict[str, list[float]] = {"d": [], "e": [], "n": []}
        for h in range(midnight(day), midnight(day + timedelta(days=1)), H):
            hour = datetime.fromtimestamp(h // S, TZ).hour
            periods["d" if 7 <= hour < 19 else "e" if 19 <= hour < 23 else "n"].append(
                energetic(v[(ts >= h) & (ts < h + H)]))
        ld, le, ln = (energetic(periods[k]) for k in "den")
        ldens.append(10 * math.log10((12 * 10 ** (ld / 10) + 4 * 10 ** ((le + 5) / 10) + 8 * 10 ** ((ln + 10) / 10))
                                     / 24))
        lnights.append(ln)
    f = figure(doc, "EN:EN:EQ:2A", "lden", "noise-plaza-1")
    assert f["value"] == pytest.approx(energetic(ldens), abs=1e-9)
    assert f["extra"]["lnight"] == pytest.approx(energetic(lnights), abs=1e-9)
    assert f["extra"]["days_lden_above_55"] == sum(1 for x in ldens if x >= 55)
    exposed = energetic(ldens) >= 55 or energetic(lnights) >= 50
    share = figure(doc, "EN:EN:EQ:2A", "exposed_share", "city")
    assert share["value"] == pytest.approx(100 * 40 / 120 if exposed else 0.0)
    assert share["inputs"]["population"] == 120 and share["inputs"]["inhabitants plaza-mayor"] == 40

    # -- Water, night flow, electricity: meter deltas per local day ---------------------------------------------
    ts, v = kit.raw("water-block-a", "water_volume")
    water = [meter_delta(ts, v, midnight(d), midnight(d + timedelta(days=1))) for d in DAYS]
    assert figure(doc, "EN:EN:WS:2C", "water_consumption", "water-block-a")["value"] == pytest.approx(
        sum(water) / 30, rel=1e-9)
    assert figure(doc, "EN:EN:WS:2C", "water_consumption_per_capita", "city")["value"] == pytest.approx(
        sum(water) / 30 * 1000 / 120, rel=1e-9)
    nights = [min(meter_delta(ts, v, midnight(d) + k * H, midnight(d) + (k + 1) * H) for k in (2, 3)) for d in DAYS]
    assert figure(doc, "EC:I:WS:3C", "minimum_night_flow", "water-block-a")["value"] == pytest.approx(
        sum(nights) / 30, abs=1e-9)
    ts, v = kit.raw("energy-school-1", "energy_import")
    energy = [meter_delta(ts, v, midnight(d), midnight(d + timedelta(days=1))) for d in DAYS]
    assert figure(doc, "EN:E:E:2C", "energy_consumption_per_capita", "city")["value"] == pytest.approx(
        sum(energy) / 30 * 365 / 120, rel=1e-9)

    # -- Traffic: daily volumes; monitored share of street km -----------------------------------------------------
    ts, v = kit.raw("traffic-calle-mayor", "vehicle_count")
    volumes = [float(v[(ts >= midnight(d)) & (ts < midnight(d + timedelta(days=1)))].sum()) for d in DAYS]
    f = figure(doc, "EC:ICT:T:2C", "traffic_volume", "traffic-calle-mayor")
    assert f["value"] == pytest.approx(sum(volumes) / 30) and f["extra"]["monitored"] is True
    assert figure(doc, "EC:ICT:T:2C", "monitored_share", "city")["value"] == pytest.approx(100 * 1.5 / 12)

    # The CSV carries the same figures, one row each.
    rows = (tmp_path / "out" / "u4ssc-2026-06-01-2026-07-01.csv").read_text().splitlines()
    assert len(rows) == 1 + len(doc["figures"])


@pytest.mark.parametrize("source", ["victoriametrics", "local_store"])
def test_other_sources_give_the_same_figures(kit: Kit, tmp_path: Path, source: str) -> None:
    """Read from VictoriaMetrics (its InfluxDB-written kpi_value series) or the local store's JSON lines, the
    report's figures are those read from influxd."""
    from_influx = run_report(tmp_path / "a", write_config(tmp_path / "a.toml", (
        f'[[influx]]\napi = "v1"\nurl = "{kit.influx.url}"\ndatabase = "{kit.db}"\n')))
    sink = (f'[[influx]]\napi = "v2"\nurl = "{kit.victoria.url}"\nbucket = "b"\n' if source == "victoriametrics"
            else f'[local_store]\nenabled = true\npath = "{kit.store}"\n')
    from_other = run_report(tmp_path / "b", write_config(tmp_path / "b.toml", sink, f'source = "{source}"\n'))
    key = [(f["code"], f["quantity"], f["scope"], f["subject"]) for f in from_influx["figures"]]
    assert key == [(f["code"], f["quantity"], f["scope"], f["subject"]) for f in from_other["figures"]]
    assert len(key) >= 19  # every device figure and the city-wide ones
    for a, b in zip(from_influx["figures"], from_other["figures"], strict=True):
        assert a["completeness"] == b["completeness"], a["subject"]
        assert (a["value"] is None) == (b["value"] is None)
        if a["value"] is not None:
            assert b["value"] == pytest.approx(a["value"], rel=1e-9), (a["code"], a["quantity"], a["subject"])


def test_missing_week_and_clock_fault_are_flagged(kit: Kit, tmp_path: Path) -> None:
    """A kit outage of a week and a device whose clock fault left 4 days of invalid hours: flagged, still shown."""
    db = f"{kit.db}_gaps"
    kit.influx.create_database(db)
    t0, t1 = midnight(MONTH[0]), midnight(MONTH[1])
    # A copy of the month's KPI points (what the report reads), then the faults written into it on the real server.
    kit.influx.query(f"SELECT * INTO \"{db}\"..\"kpi\" FROM \"kpi\" WHERE time >= {t0} AND time < {t1} AND "
                     "(\"window\" = '1h' OR \"window\" = '1d') GROUP BY *", db=kit.db)
    outage = (midnight(date(2026, 6, 8)), midnight(date(2026, 6, 15)))  # the kit was off: no window at all
    kit.influx.query(f"DELETE FROM kpi WHERE time >= {outage[0]} AND time < {outage[1]}", db=db)
    # Clock fault on air-pm-2 (20-23 June): its readings were rejected as "timestamp in the future", so its hourly
    # windows of those days were emitted with valid=false: rewrite them so.
    fault = (midnight(date(2026, 6, 20)), midnight(date(2026, 6, 24)))
    where = (f"device_id='air-pm-2' AND \"window\"='1h' AND (\"name\"='pm2_5' OR \"name\"='pm10') AND "
             f"time >= {fault[0]} AND time < {fault[1]}")
    series = kit.influx.query_series(f"SELECT \"value\" FROM kpi WHERE {where} GROUP BY *", db=db)
    assert sum(len(s["values"]) for s in series) == 4 * 24 * 2  # pm2_5 and pm10
    kit.influx.query(f"DELETE FROM kpi WHERE {where}", db=db)
    lines = []
    for s in series:
        tags = ",".join(f"{k}={v}" for k, v in sorted({**s["tags"], "valid": "false"}.items()) if v)
        lines += [f"kpi,{tags} value={value} {ts}" for ts, value in s["values"]]
    kit.influx.write(lines, db=db)
    doc = run_report(tmp_path, write_config(tmp_path / "gaps.toml", (
        f'[[influx]]\napi = "v1"\nurl = "{kit.influx.url}"\ndatabase = "{db}"\n')))

    station = figure(doc, "EN:EN:AQ:1C", "pm2_5", "air-station-1")
    faulty = figure(doc, "EN:EN:AQ:1C", "pm2_5", "air-pm-2")
    assert station["completeness"]["valid_days"] == 23 and station["completeness"]["meets"] is False
    assert faulty["completeness"]["valid_days"] == 19 and faulty["completeness"]["meets"] is False
    assert faulty["completeness"]["ratio"] == pytest.approx(19 / 30)
    assert any(flag.startswith("insufficient data: 19 of 30 days valid") for flag in faulty["flags"])
    # Shown, never hidden: the value is the mean of the days that are valid.
    ts, v = kit.raw("air-pm-2", "pm2_5")
    keep = {d: x for d, x in daily_means(ts, v).items() if not (date(2026, 6, 8) <= d < date(2026, 6, 15))
            and not (date(2026, 6, 20) <= d < date(2026, 6, 24))}
    assert faulty["value"] == pytest.approx(sum(keep.values()) / len(keep), rel=1e-9)
    city = figure(doc, "EN:EN:AQ:1C", "pm2_5", "city")
    assert city["flags"] == ["no device meets the data-capture rule: all devices used"]
    noise = figure(doc, "EN:EN:EQ:2A", "lden", "noise-plaza-1")
    assert noise["completeness"]["valid_days"] == 23 and not noise["completeness"]["meets"]


def test_html_report_in_chromium(kit: Kit, tmp_path: Path, chrome: WebDriver) -> None:
    """The HTML report opens offline in Chromium: every indicator row and every chart, nothing from the network."""
    doc = run_report(tmp_path, write_config(tmp_path / "html.toml", (
        f'[[influx]]\napi = "v1"\nurl = "{kit.influx.url}"\ndatabase = "{kit.db}"\n')), "json,html")
    page = tmp_path / "out" / "u4ssc-2026-06-01-2026-07-01.html"
    chrome.set_window_size(1200, 900)
    chrome.get(page.as_uri())
    rows = chrome.find_elements(By.CSS_SELECTOR, "#summary tbody tr")
    assert len(rows) == len(doc["figures"])
    shown = {(r.get_attribute("data-code"), r.get_attribute("data-quantity"), r.get_attribute("data-subject"))
             for r in rows}
    assert shown == {(f["code"], f["quantity"], f["subject"]) for f in doc["figures"]}
    charts = {f.get_attribute("data-chart") for f in chrome.find_elements(By.CSS_SELECTOR, "figure[data-chart]")}
    expected = {"air-pm2_5", "air-pm10", "air-no2", "air-o3", "calendar-us_aqi-air-station-1",
                "calendar-us_aqi-air-pm-2", "calendar-eaqi-air-station-1", "noise-lden", "noise-lnight",
                "water-water-block-a", "energy-energy-school-1", "traffic-hour-of-day"}
    assert expected <= charts
    for chart in chrome.find_elements(By.CSS_SELECTOR, "figure[data-chart] svg"):
        assert chart.size["width"] > 100 and chart.size["height"] > 50
    assert chrome.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.read_text())  # nothing to fetch
    assert "Methodology annex" in chrome.find_element(By.ID, "annex").text
    save_screenshot(chrome, "u4ssc-report")
