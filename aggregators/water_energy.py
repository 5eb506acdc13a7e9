"""Water and energy indicators: per-capita use, water loss / NRW, minimum night flow, peak demand, outages."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

__all__ = [
    "caidi",
    "kwh_per_capita",
    "minimum_night_flow",
    "nrw_pct",
    "peak_demand_kw",
    "per_capita_l_per_day",
    "percent",
    "saidi",
    "saifi",
    "water_loss_pct",
]


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def percent(part: float, whole: float) -> float:
    """part / whole × 100 (the U4SSC ratio KPIs: smart meters, renewables, monitored streets…)."""
    return _non_negative("part", part) / _positive("whole", whole) * 100.0


def per_capita_l_per_day(volume_m3: float, population: float, days: float) -> float:
    """Water use in litres per inhabitant per day (U4SSC EN:EN:WS:2C): m³ × 1000 / (population × days)."""
    return (
        _non_negative("volume_m3", volume_m3) * 1000.0 / (_positive("population", population) * _positive("days", days))
    )


def water_loss_pct(supplied_m3: float, consumed_m3: float) -> float:
    """Water loss % (ISO 37120 §23.7, U4SSC EC:I:WS:3C): (supplied − consumed) / supplied × 100."""
    supplied = _positive("supplied_m3", supplied_m3)
    consumed = _non_negative("consumed_m3", consumed_m3)
    # A13: ISO 37120's "supplied vs utilized" reading (U4SSC's analogue); IWA NRW is `nrw_pct`. The result
    # is not clamped: a negative loss means the consumption meters read more than the supply meters (a
    # metering or period-alignment problem worth seeing, not hiding).
    return (supplied - consumed) / supplied * 100.0


def nrw_pct(system_input_m3: float, billed_authorized_m3: float) -> float:
    """IWA non-revenue water as % of system input volume: (SIV − billed authorized) / SIV × 100."""
    siv = _positive("system_input_m3", system_input_m3)
    return (siv - _non_negative("billed_authorized_m3", billed_authorized_m3)) / siv * 100.0


def minimum_night_flow(
    flows_by_ts: Mapping[int, float] | Iterable[tuple[int, float]],
    tz: str | dt.tzinfo,
    start_hour: int = 2,
    end_hour: int = 4,
) -> dict[dt.date, float]:
    """Minimum night flow per local date: the lowest flow sampled in [start_hour, end_hour) local time."""
    if not 0 <= start_hour < end_hour <= 24:
        raise ValueError(f"need 0 <= start_hour < end_hour <= 24, got {start_hour}, {end_hour}")
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    items = flows_by_ts.items() if isinstance(flows_by_ts, Mapping) else flows_by_ts
    out: dict[dt.date, float] = {}
    for ts_ns, flow in items:
        if flow is None or not math.isfinite(flow):
            continue
        # Local wall-clock hour, so the window follows DST (on the spring-forward night 02:00-03:00 does not
        # exist and the window is one hour shorter; that is the real night, not an error).
        local = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=dt.UTC).astimezone(zone)
        if start_hour <= local.hour < end_hour:
            day = local.date()
            out[day] = min(out.get(day, flow), flow)
    return out


def peak_demand_kw(energy_kwh_per_15min: Sequence[float | None], interval_minutes: float = 15) -> float:
    """Peak demand: the highest interval energy divided by the interval length (kWh per 15 min × 4 = kW)."""
    values = [float(v) for v in energy_kwh_per_15min if v is not None and math.isfinite(v)]
    if not values:
        raise ValueError("no interval energies")
    return max(values) * 60.0 / _positive("interval_minutes", interval_minutes)


def kwh_per_capita(energy_kwh: float, population: float, days: float | None = None, year_days: float = 365) -> float:
    """Electricity per capita in kWh/year (U4SSC EN:E:E:2C); a `days`-long total is scaled to a year."""
    per_capita = _non_negative("energy_kwh", energy_kwh) / _positive("population", population)
    if days is None:
        return per_capita  # energy_kwh is already an annual total
    return per_capita * _positive("year_days", year_days) / _positive("days", days)


def saifi(customer_interruptions: float, customers_served: float) -> float:
    """SAIFI (IEEE 1366, U4SSC EC:I:ES:1C): customer interruptions per customer served."""
    return _non_negative("customer_interruptions", customer_interruptions) / _positive(
        "customers_served", customers_served
    )


def saidi(customer_interruption_minutes: float, customers_served: float) -> float:
    """SAIDI: customer interruption minutes per customer served."""
    return _non_negative("customer_interruption_minutes", customer_interruption_minutes) / _positive(
        "customers_served", customers_served
    )


def caidi(customer_interruption_minutes: float, customer_interruptions: float) -> float | None:
    """CAIDI = minutes / interruptions (= SAIDI / SAIFI): U4SSC EC:I:ES:2C "Outage Time"; None if none."""
    # A10: the KPI is named like SAIDI but the Verification Manual computes CAIDI; we follow the formula.
    minutes = _non_negative("customer_interruption_minutes", customer_interruption_minutes)
    count = _non_negative("customer_interruptions", customer_interruptions)
    return None if count == 0 else minutes / count
