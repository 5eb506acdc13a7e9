"""The U4SSC indicator map (ITU-T Y.4903/L.1603): which KPI series of the gateway feed which U4SSC KPI.

Each `Indicator` names its code, unit, formula, the sensor series that feed it (vocabulary quantity +
statistic) and the non-sensor inputs a city must add (population, street length…). The gateway produces the
sensor side; the ratio itself is one of the functions named in `function`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "INDICATORS",
    "PPB_TO_UGM3",
    "Feed",
    "Indicator",
    "air_pollution_report",
    "ppb_to_ugm3",
    "to_ugm3",
]

# A9: the U4SSC Verification Manual converts ppb to µg/m³ with these factors (about 20 °C, 1 atm); EPA
# works at 25 °C (NO2 ≈ 1.88). U4SSC reports use the U4SSC factors, so we do too.
PPB_TO_UGM3: Final[dict[str, float]] = {"no2": 1.9, "so2": 2.62, "o3": 1.96}


def ppb_to_ugm3(pollutant: str, ppb: float) -> float:
    """Convert a NO2, SO2 or O3 mixing ratio in ppb to µg/m³ with the U4SSC factors (1.9, 2.62, 1.96)."""
    try:
        return ppb * PPB_TO_UGM3[pollutant]
    except KeyError:
        raise ValueError(f"no U4SSC ppb→µg/m³ factor for {pollutant!r} (have {', '.join(PPB_TO_UGM3)})") from None


def to_ugm3(pollutant: str, value: float, unit: str) -> float:
    """A concentration in µg/m³ from "ug/m3", "ppb" or "ppm" (gases via the U4SSC factors)."""
    if unit in ("ug/m3", "µg/m³", "µg/m3"):
        return value
    if unit == "ppb":
        return ppb_to_ugm3(pollutant, value)
    if unit == "ppm":
        return ppb_to_ugm3(pollutant, value * 1000.0)
    raise ValueError(f"cannot convert {unit!r} to µg/m³")


def air_pollution_report(annual_means: Mapping[str, tuple[float, str]]) -> dict[str, float]:
    """EN:EN:AQ:1C: annual mean per pollutant in µg/m³ from {pollutant: (annual mean, unit)}."""
    # A9: the KPI says "AQI based on reported value" but its methodology reports annual mean concentrations
    # and defines no index scale, so the KPI value is the per-pollutant annual mean, not an AQI.
    return {p: to_ugm3(p, v, unit) for p, (v, unit) in annual_means.items()}


@dataclass(frozen=True, slots=True)
class Feed:
    """One gateway series feeding an indicator: a vocabulary quantity and the statistic taken of it."""

    quantity: str
    statistic: str
    note: str = ""
    series: str = ""  # the derived KPI series carrying it (aggregators.derived.SERIES), when the gateway emits one


@dataclass(frozen=True, slots=True)
class Indicator:
    """One U4SSC KPI as the gateway sees it."""

    code: str
    name: str
    category: str
    unit: str
    formula: str
    feeds: tuple[Feed, ...]
    function: str  # the aggregators function that computes the value
    external: tuple[str, ...] = ()  # inputs the city supplies (not measured by sensors)
    source: str = ""  # source-quality tag of docs/kpis.md: OFF, OFF-2, SEC, NR
    note: str = ""


_LIST: Final[tuple[Indicator, ...]] = (
    Indicator(
        "EN:EN:AQ:1C",
        "Air Pollution",
        "Environment / Environment / Air Quality",
        "µg/m³ per pollutant, annual mean",
        "annual mean concentration of each of PM10, PM2.5, NO2, SO2, O3",
        (
            Feed("pm2_5", "annual_mean"),
            Feed("pm10", "annual_mean"),
            Feed("no2", "annual_mean", "ppb × 1.9"),
            Feed("so2", "annual_mean", "ppb × 2.62"),
            Feed("o3", "annual_mean", "ppb × 1.96"),
        ),
        "aggregators.u4ssc.air_pollution_report",
        source="OFF",
        note="A9: reported as concentrations, not as an index",
    ),
    Indicator(
        "EN:EN:EQ:2A",
        "Noise Exposure",
        "Environment / Environment / Environmental Quality",
        "%",
        "inhabitants exposed above threshold / population × 100",
        (
            Feed("noise_laeq", "lden", "annual, per site", series="lden"),
            Feed("noise_laeq", "lnight", "annual, per site", series="lnight"),
        ),
        "aggregators.noise.exposure_exceeds",
        ("inhabitants per site", "population"),
        "SEC; threshold NR",
        "A14: END thresholds Lden >= 55 dB, Lnight >= 50 dB",
    ),
    Indicator(
        "EN:EN:WS:2C",
        "Water Consumption",
        "Environment / Environment / Water & Sanitation",
        "l/capita/day",
        "annual volume (m³) × 1000 / (population × days)",
        (
            Feed("water_volume", "consumption", "sum over the year of meter deltas", series="water_consumption"),
            Feed("water_volume", "per_capita", "daily l/capita/day", series="water_consumption_per_capita"),
        ),
        "aggregators.water_energy.per_capita_l_per_day",
        ("population",),
        "SEC",
    ),
    Indicator(
        "EC:I:WS:3C",
        "Water Supply Loss",
        "Economy / Infrastructure / Water & Sanitation",
        "%",
        "(supplied − utilized) / supplied × 100",
        (
            Feed("water_volume", "consumption", "supply (district) meters", series="water_consumption"),
            Feed("water_volume", "consumption", "customer meters", series="water_consumption"),
            Feed("water_flow", "minimum_night_flow", "leak indicator, not the KPI itself",
                 series="minimum_night_flow"),
            Feed("water_volume", "minimum_night_flow", "hourly consumption as flow, when no flow is reported",
                 series="minimum_night_flow"),
        ),
        "aggregators.water_energy.water_loss_pct",
        source="SEC; NR",
        note="A13: ISO 37120 supplied vs utilized; IWA NRW available as nrw_pct",
    ),
    Indicator(
        "EN:E:E:1C",
        "Renewable Energy Consumption",
        "Environment / Energy",
        "%",
        "renewable consumption / total consumption × 100",
        (
            Feed("energy_import", "consumption", "renewable-source meters"),
            Feed("energy_import", "consumption"),
        ),
        "aggregators.water_energy.percent",
        source="SEC",
    ),
    Indicator(
        "EN:E:E:2C",
        "Electricity Consumption",
        "Environment / Energy",
        "kWh/year/capita",
        "total electricity consumption (kWh/yr) / population",
        (
            Feed("energy_import", "consumption", "sum over the year of meter deltas", series="energy_consumption"),
            Feed("energy_import", "per_capita", "daily kWh/capita/day", series="energy_consumption_per_capita"),
        ),
        "aggregators.water_energy.kwh_per_capita",
        ("population",),
        "SEC",
    ),
    Indicator(
        "EC:ICT:ES:1C",
        "Smart Electricity Meters",
        "Economy / ICT / Electricity Supply",
        "%",
        "smart meters installed / total meters installed × 100",
        (Feed("energy_import", "reporting_devices", "meters seen by gateways"),),
        "aggregators.water_energy.percent",
        ("total meters installed",),
        "OFF",
    ),
    Indicator(
        "EC:ICT:WS:1C",
        "Smart Water Meters",
        "Economy / ICT / Water & Sanitation",
        "%",
        "smart water meters / total water meters × 100",
        (Feed("water_volume", "reporting_devices", "meters seen by gateways"),),
        "aggregators.water_energy.percent",
        ("total water meters",),
        "SEC",
    ),
    Indicator(
        "EC:I:ES:1C",
        "Electricity System Outage Frequency",
        "Economy / Infrastructure / Electricity Supply",
        "interruptions per customer per year",
        "Σ customer interruptions / customers served (SAIFI), 12 months",
        (Feed("voltage", "interruptions", "supply lost at monitored points"),),
        "aggregators.water_energy.saifi",
        ("customers served", "customers behind each monitored point"),
        "OFF",
    ),
    Indicator(
        "EC:I:ES:2C",
        "Electricity System Outage Time",
        "Economy / Infrastructure / Electricity Supply",
        "minutes",
        "Σ customer interruption durations / Σ customer interruptions (CAIDI), 12 months",
        (Feed("voltage", "interruption_minutes", "supply lost at monitored points"),),
        "aggregators.water_energy.caidi",
        ("customers behind each monitored point",),
        "OFF",
        "A10: named like SAIDI, computed as CAIDI",
    ),
    Indicator(
        "EC:ICT:T:2C",
        "Traffic Monitoring",
        "Economy / ICT / Transport",
        "%",
        "km of major streets monitored by ICT / total km of major streets × 100",
        (
            Feed("vehicle_count", "hourly_volume", "a street counts as monitored while its counter reports",
                 series="traffic_volume"),
            Feed("speed", "speed_percentile_85"),
        ),
        "aggregators.water_energy.percent",
        ("km of major streets", "km covered by each counter"),
        "OFF",
    ),
    Indicator(
        "EC:I:T:5A",
        "Travel Time Index",
        "Economy / Infrastructure / Transport",
        "ratio",
        "peak-period travel time / free-flow travel time",
        (Feed("speed", "mean", "peak period vs free-flow period on a segment"),),
        "(ratio of two travel times: segment length / mean speed)",
        ("segment lengths",),
        "SEC",
    ),
)

INDICATORS: Final[dict[str, Indicator]] = {i.code: i for i in _LIST}
