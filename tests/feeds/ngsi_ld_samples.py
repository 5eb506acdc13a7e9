"""Sample KPI points of every series the NGSI-LD mapping covers, and the journal round trip the sink reads them
through; shared by the mapping, sink and Prism tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aggregators.kpi import KpiPoint
from gateway.journal import Entry, Journal

H = 3_600_000_000_000
T0 = 1_767_261_600 * 10**9  # 2026-01-01T10:00:00Z
D0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
PLACES = {"air-1": (-3.7038, 40.4168), "noise-1": (2.1734, 41.3851), "traffic-1": (13.405, 52.52),
          "water-1": (4.9041, 52.3676), "meter-1": (6.0839, 50.7753)}


def hourly(name: str, device: str, unit: str, value: float, fields: dict[str, Any] | None = None,
           tags: dict[str, str] | None = None, valid: bool = True) -> KpiPoint:
    """A 1-hour KPI point of the hour from T0."""
    return KpiPoint(name, device, "1h", T0, T0 + H, unit, value, fields or {"count": 60, "coverage": 1.0},
                    tags or {}, valid)


def daily(name: str, device: str, unit: str, value: float, fields: dict[str, Any] | None = None,
          tags: dict[str, str] | None = None, valid: bool = True) -> KpiPoint:
    """A 1-day KPI point of the day from D0."""
    return KpiPoint(name, device, "1d", D0, D0 + 24 * H, unit, value, fields or {"hours": 24}, tags or {}, valid)


def sample_points() -> list[KpiPoint]:
    """One realistic point of every mapped series (units as the windows and derived series emit them)."""
    return [
        hourly("pm1_0", "air-1", "ug/m3", 7.5), hourly("pm2_5", "air-1", "ug/m3", 12.25),
        hourly("pm4_0", "air-1", "ug/m3", 14.0), hourly("pm10", "air-1", "ug/m3", 18.5),
        hourly("no2", "air-1", "ug/m3", 41.0), hourly("o3", "air-1", "ppb", 30.5), hourly("so2", "air-1", "ug/m3", 3.2),
        hourly("co", "air-1", "mg/m3", 0.4), hourly("co2", "air-1", "ppm", 415.0),
        hourly("temperature", "air-1", "degC", -2.5), hourly("pressure", "air-1", "hPa", 1013.2),
        hourly("relative_humidity", "air-1", "%", 55.0, valid=False),
        hourly("us_aqi", "air-1", "AQI", 57.0, {"concentration": 12.25, "status": "ok", "category": "Moderate"},
               {"pollutant": "pm2_5", "averaging": "nowcast"}),
        hourly("us_aqi", "air-1", "AQI", 17.0, {"concentration": 18.5, "status": "ok", "category": "Good"},
               {"pollutant": "pm10", "averaging": "nowcast"}),
        hourly("eaqi", "air-1", "level", 2.0, {"critical_pollutant": "no2"}, {"band": "fair", "table": "2021"}),
        hourly("caqi", "air-1", "index", 37.4, {"critical_pollutant": "no2"}, {"band": "low"}),
        hourly("noise_laeq", "noise-1", "dBA", 61.2), hourly("noise_lamax", "noise-1", "dBA", 70.0, {"max": 78.5}),
        daily("lday", "noise-1", "dBA", 63.1), daily("levening", "noise-1", "dBA", 60.4),
        daily("lnight", "noise-1", "dBA", 52.9, {"hours": 8, "end_band": "50-54"}),
        daily("lden", "noise-1", "dBA", 64.0, {"hours": 24, "end_band": "60-64"}),
        hourly("vehicle_count", "traffic-1", "1", 420.0, {"count": 4, "sum": 420.0, "coverage": 1.0}),
        hourly("speed", "traffic-1", "km/h", 38.5),
        daily("traffic_peak_hour", "traffic-1", "veh/h", 610.0, {"peak_start": D0 + 8 * H, "peak_15min": 170.0}),
        daily("traffic_phf", "traffic-1", "1", 0.897, {"peak_start": D0 + 8 * H, "volume": 610.0}),
        hourly("water_volume", "water-1", "m3", 0.42, {"consumption": 0.42, "first": 1234.147, "last": 1234.567}),
        daily("water_consumption", "water-1", "m3", 9.8), daily("minimum_night_flow", "water-1", "m3/h", 0.12),
        hourly("energy_import", "meter-1", "kWh", 1.2, {"consumption": 1.2, "first": 100.0, "last": 101.2}),
        hourly("energy_export", "meter-1", "kWh", 0.1, {"consumption": 0.1, "first": 5.0, "last": 5.1}),
        hourly("active_power", "meter-1", "W", 1450.0), hourly("voltage", "meter-1", "V", 231.0),
        hourly("current", "meter-1", "A", 6.3), hourly("frequency", "meter-1", "Hz", 50.01),
        hourly("power_factor", "meter-1", "1", 0.97),
        daily("energy_consumption", "meter-1", "kWh", 28.8), daily("peak_demand", "meter-1", "kW", 3.2),
    ]


def journal_entries(tmp: Path, points: list[KpiPoint]) -> list[Entry]:
    """The points as the sink reads them: appended to a real journal and read back."""
    journal = Journal(tmp / "journal.sqlite")
    try:
        journal.append(kpis=points)
        return list(journal.read_after(0, 10_000))
    finally:
        journal.close()
