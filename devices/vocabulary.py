"""One vocabulary of quantities and units, used by every decoder, validator, aggregator and sink.

Extend the table; never rename an entry (names are part of the InfluxDB schema and the MQTT topic tree).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QUANTITIES", "Quantity", "unit_ok"]


@dataclass(frozen=True, slots=True)
class Quantity:
    """A measurable quantity: its accepted units (first is canonical) and its physically plausible range."""

    name: str
    units: tuple[str, ...]
    low: float
    high: float
    description: str
    cumulative: bool = False  # a meter total (energy, volume) rather than a level
    additive: bool = False  # a count per reporting interval (vehicles): windows sum it


def _q(name: str, units: str, low: float, high: float, description: str, cumulative: bool = False,
       additive: bool = False) -> Quantity:
    return Quantity(name, tuple(units.split("|")), low, high, description, cumulative, additive)


_TABLE = [
    _q("pm1_0", "ug/m3", 0, 2000, "PM1.0 mass concentration, atmospheric"),
    _q("pm2_5", "ug/m3", 0, 2000, "PM2.5 mass concentration, atmospheric"),
    _q("pm4_0", "ug/m3", 0, 2000, "PM4 mass concentration"),
    _q("pm10", "ug/m3", 0, 5000, "PM10 mass concentration, atmospheric"),
    _q("pm1_0_cf1", "ug/m3", 0, 2000, "PM1.0 mass concentration, CF=1 (standard particle)"),
    _q("pm2_5_cf1", "ug/m3", 0, 2000, "PM2.5 mass concentration, CF=1 (standard particle)"),
    _q("pm10_cf1", "ug/m3", 0, 5000, "PM10 mass concentration, CF=1 (standard particle)"),
    _q("particles_0_3um", "1/0.1L", 0, 1e6, "particles > 0.3 um per 0.1 L of air"),
    _q("particles_0_5um", "1/0.1L", 0, 1e6, "particles > 0.5 um per 0.1 L of air"),
    _q("particles_1_0um", "1/0.1L", 0, 1e6, "particles > 1.0 um per 0.1 L of air"),
    _q("particles_2_5um", "1/0.1L", 0, 1e6, "particles > 2.5 um per 0.1 L of air"),
    _q("particles_5_0um", "1/0.1L", 0, 1e6, "particles > 5.0 um per 0.1 L of air"),
    _q("particles_10um", "1/0.1L", 0, 1e6, "particles > 10 um per 0.1 L of air"),
    _q("no2", "ug/m3|ppb", 0, 5000, "nitrogen dioxide"),
    _q("o3", "ug/m3|ppb", 0, 2000, "ozone"),
    _q("so2", "ug/m3|ppb", 0, 5000, "sulphur dioxide"),
    _q("co", "mg/m3|ppm", 0, 1000, "carbon monoxide"),
    _q("co2", "ppm", 0, 100000, "carbon dioxide"),
    _q("voc_index", "1", 0, 500, "VOC index (Sensirion scale, no unit)"),
    _q("temperature", "degC", -60, 100, "air or water temperature"),
    _q("relative_humidity", "%", 0, 100, "relative humidity"),
    _q("pressure", "hPa", 300, 1200, "barometric pressure"),
    _q("noise_laeq", "dBA", 0, 160, "A-weighted equivalent continuous sound level"),
    _q("noise_lamax", "dBA", 0, 180, "A-weighted maximum sound level"),
    _q("noise_lamin", "dBA", 0, 160, "A-weighted minimum sound level"),
    # A sample of the time-weighted level (tag `detector`: fast/slow/impulse), not an equivalent level: windows
    # average it energetically (an LAeq estimate as good as the sampling), but it never feeds Lden/Lnight.
    _q("noise_spl", "dBA", 0, 180, "A-weighted sound pressure level, time-weighted (instantaneous sample)"),
    _q("voltage", "V", 0, 1000, "RMS voltage"),
    _q("current", "A", -10000, 10000, "RMS current"),
    _q("active_power", "W", -1e7, 1e7, "active power (negative = export)"),
    _q("apparent_power", "VA", 0, 1e7, "apparent power"),
    _q("reactive_power", "var", -1e7, 1e7, "reactive power"),
    _q("power_factor", "1", -1, 1, "power factor"),
    _q("frequency", "Hz", 40, 70, "grid frequency"),
    _q("energy_import", "kWh", 0, 1e9, "imported active energy, meter total", cumulative=True),
    _q("energy_export", "kWh", 0, 1e9, "exported active energy, meter total", cumulative=True),
    _q("water_flow", "m3/h", -1e5, 1e5, "water volume flow"),
    _q("water_volume", "m3", 0, 1e9, "water volume, meter total", cumulative=True),
    _q("ph", "pH", 0, 14, "pH"),
    _q("turbidity", "NTU", 0, 4000, "turbidity"),
    _q("conductivity", "uS/cm", 0, 200000, "electrical conductivity"),
    _q("vehicle_count", "1", 0, 1e6, "vehicles counted in the reporting interval", additive=True),
    _q("heavy_vehicle_count", "1", 0, 1e6, "heavy vehicles counted in the reporting interval", additive=True),
    _q("car_count", "1", 0, 1e6, "cars counted in the reporting interval", additive=True),
    _q("bike_count", "1", 0, 1e6, "bicycles counted in the reporting interval", additive=True),
    _q("pedestrian_count", "1", 0, 1e6, "pedestrians counted in the reporting interval", additive=True),
    _q("speed", "km/h", 0, 400, "vehicle speed"),
    _q("speed_v85", "km/h", 0, 400, "85th-percentile vehicle speed reported by the counter"),
    _q("rssi", "dBm", -200, 50, "radio signal strength"),
    _q("snr", "dB", -50, 50, "radio signal-to-noise ratio"),
    _q("battery", "%", 0, 100, "battery level"),
    _q("uptime_fraction", "1", 0, 1, "fraction of the reporting interval a counter was counting (Telraam uptime)"),
]

QUANTITIES: dict[str, Quantity] = {q.name: q for q in _TABLE}


def unit_ok(quantity: str, unit: str) -> bool:
    """True when `unit` is one of the accepted units of `quantity`."""
    q = QUANTITIES.get(quantity)
    return q is not None and unit in q.units
