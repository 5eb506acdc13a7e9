"""`compute`: every figure of the report for a period (the rules: gateway/report/model.py and docs/report.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from aggregators.u4ssc import INDICATORS
from gateway.report.air import AIR_POLLUTANTS, MIN_VALID_HOURS, air
from gateway.report.areas import aqi_calendar, meters, night_flow, noise, traffic
from gateway.report.model import (
    Comparison,
    Completeness,
    Figure,
    Period,
    ReportData,
    ReportInputs,
    Rows,
)
from gateway.report.source import KpiRow

__all__ = [
    "AIR_POLLUTANTS",
    "MIN_VALID_HOURS",
    "Comparison",
    "Completeness",
    "Figure",
    "Period",
    "ReportData",
    "ReportInputs",
    "compute",
]


def compute(rows: Sequence[KpiRow], period: Period, inputs: ReportInputs) -> ReportData:
    """Every figure of the report for the period, with the daily series the charts draw."""
    b = Rows(rows, period, inputs)
    air(b)
    noise(b)
    meters(b, "water_consumption", "EN:EN:WS:2C", "Water consumption", "m³", "l/capita/day", 1000.0,
             "Σ over meters of the mean daily consumption (m³) × 1000 / population")
    night_flow(b)
    meters(b, "energy_consumption", "EN:E:E:2C", "Electricity consumption", "kWh", "kWh/capita/year", 365.0,
             "Σ over meters of the mean daily consumption (kWh) × 365 / population")
    hour_of_day = traffic(b)
    aqi_calendar(b)
    for f in b.figures:
        if f.value is not None and not math.isfinite(f.value):
            f.value = None
        if f.code in INDICATORS and not f.indicator:
            f.indicator = INDICATORS[f.code].name
    devices = sorted({(g, d, site) for (g, d), site in b.sites.items()})
    return ReportData(period, b.figures, b.daily, hour_of_day, sorted({g for g, _, _ in devices}), devices)
