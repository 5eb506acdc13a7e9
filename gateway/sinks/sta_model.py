"""How citygw's KPI points map onto the OGC SensorThings API v1.1 data model (pure functions, no I/O).

Thing per device, Location from the device's coordinates, Sensor per device kind, ObservedProperty per KPI
name, Datastream per (device, KPI name, window), Observation per closed window. docs/feeds.md has the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aggregators.derived import SERIES
from devices.vocabulary import QUANTITIES

__all__ = [
    "DOCS_URL",
    "OM_MEASUREMENT",
    "DeviceInfo",
    "datastream_body",
    "iso_seconds",
    "observation_body",
    "observed_property_body",
    "sensor_body",
    "thing_body",
    "unit_of_measurement",
]

OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
# Where citygw documents its own terms (indicators and units no public vocabulary defines).
DOCS_URL = "https://github.com/citygw/citygw/blob/main/docs"
_EEA_POLLUTANT = "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/"
_EEA_CONCENTRATION = "http://dd.eionet.europa.eu/vocabulary/uom/concentration/"
_QUDT = "http://qudt.org/vocab/unit/"

# EEA air-quality pollutant vocabulary (the codes of the e-Reporting data flows, Decision 2011/850/EU).
# A KPI whose name starts with a key ("pm2_5", "nowcast_pm2_5" does not) takes that definition.
EEA_POLLUTANTS: dict[str, str] = {
    "so2": "1", "pm10": "5", "o3": "7", "no2": "8", "co": "10", "pm2_5": "6001", "pm1_0": "6002", "pm4_0": "6003",
}

# citygw unit -> (name, symbol, definition). Concentrations use the EEA unit vocabulary that goes with the
# pollutant codes; other units QUDT; units no vocabulary has (indices, per-capita rates) citygw's docs.
UNITS: dict[str, tuple[str, str, str]] = {
    "ug/m3": ("microgram per cubic metre", "µg/m³", _EEA_CONCENTRATION + "ug.m-3"),
    "mg/m3": ("milligram per cubic metre", "mg/m³", _EEA_CONCENTRATION + "mg.m-3"),
    "ppm": ("part per million", "ppm", _QUDT + "PPM"),
    "ppb": ("part per billion", "ppb", _QUDT + "PPB"),
    "degC": ("degree Celsius", "°C", _QUDT + "DEG_C"),
    "%": ("percent", "%", _QUDT + "PERCENT"),
    "hPa": ("hectopascal", "hPa", _QUDT + "HectoPA"),
    "dBA": ("decibel, A-weighted", "dB(A)", f"{DOCS_URL}/kpis.md#units"),
    "dB": ("decibel", "dB", _QUDT + "DeciB"),
    "V": ("volt", "V", _QUDT + "V"),
    "A": ("ampere", "A", _QUDT + "A"),
    "W": ("watt", "W", _QUDT + "W"),
    "kW": ("kilowatt", "kW", _QUDT + "KiloW"),
    "kWh": ("kilowatt hour", "kWh", _QUDT + "KiloW-HR"),
    "Hz": ("hertz", "Hz", _QUDT + "HZ"),
    "m3": ("cubic metre", "m³", _QUDT + "M3"),
    "m3/h": ("cubic metre per hour", "m³/h", _QUDT + "M3-PER-HR"),
    "km/h": ("kilometre per hour", "km/h", _QUDT + "KiloM-PER-HR"),
    "uS/cm": ("microsiemens per centimetre", "µS/cm", _QUDT + "MicroS-PER-CentiM"),
    "NTU": ("nephelometric turbidity unit", "NTU", _QUDT + "NTU"),
    "1": ("dimensionless", "1", _QUDT + "UNITLESS"),
}


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the configuration says about a device: its kind, tags and position ((lon, lat[, alt]) or None)."""

    device_id: str
    kind: str
    tags: Mapping[str, str]
    position: tuple[float, ...] | None


def iso_seconds(ns: int) -> str:
    """A UTC instant in ISO 8601 with whole seconds (window bounds are whole seconds)."""
    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unit_of_measurement(unit: str) -> dict[str, str]:
    """The Datastream's unitOfMeasurement {name, symbol, definition} for a citygw unit."""
    name, symbol, definition = UNITS.get(unit, (unit, unit, f"{DOCS_URL}/kpis.md#units"))
    return {"name": name, "symbol": symbol, "definition": definition}


def _description(kpi: str) -> str:
    quantity = QUANTITIES.get(kpi)
    if quantity is not None:
        return quantity.description
    if kpi in SERIES:
        return f"citygw indicator {kpi} (docs/kpis.md)"
    return f"citygw series {kpi}"


def definition_of(kpi: str) -> str:
    """The ObservedProperty definition URI: the EEA pollutant where one exists, else citygw's docs."""
    code = EEA_POLLUTANTS.get(kpi)
    if code is not None:
        return _EEA_POLLUTANT + code
    page = "kpis.md" if kpi in SERIES else "architecture.md"
    return f"{DOCS_URL}/{page}#{kpi}"


def thing_body(gateway: str, device: DeviceInfo) -> dict[str, Any]:
    """A Thing for one device, with its Location inline (deep insert) when the device has coordinates."""
    body: dict[str, Any] = {
        "name": f"{gateway}/{device.device_id}",
        "description": f"citygw device {device.device_id} ({device.kind}) of gateway {gateway}",
        "properties": {"gateway": gateway, "device": device.device_id, "kind": device.kind,
                       "tags": dict(device.tags)},
    }
    if device.position is not None:
        body["Locations"] = [{
            "name": f"{gateway}/{device.device_id}",
            "description": f"where device {device.device_id} stands (citygw configuration)",
            "encodingType": "application/geo+json",
            "location": {"type": "Point", "coordinates": list(device.position)},
        }]
    return body


def sensor_body(kind: str) -> dict[str, Any]:
    """A Sensor for one device kind; its metadata is the kind's doc page."""
    return {
        "name": kind,
        "description": f"citygw device kind {kind}",
        "encodingType": "text/html",
        "metadata": f"{DOCS_URL}/devices/{kind}.md",
        "properties": {"source": "citygw", "kind": kind},
    }


def observed_property_body(kpi: str) -> dict[str, Any]:
    """An ObservedProperty for one KPI name (a quantity or an indicator)."""
    return {
        "name": kpi,
        "definition": definition_of(kpi),
        "description": _description(kpi),
        "properties": {"source": "citygw", "kpi": kpi},
    }


def datastream_body(gateway: str, device_id: str, kpi: str, window: str, unit: str, tags: Mapping[str, str],
                    ids: Mapping[str, Any]) -> dict[str, Any]:
    """A Datastream for (device, KPI, window), linked to existing Thing, Sensor and ObservedProperty ids."""
    return {
        "name": f"{gateway}/{device_id}/{kpi}/{window}",
        "description": f"{_description(kpi)}: {window} windows of device {device_id}",
        "unitOfMeasurement": unit_of_measurement(unit),
        "observationType": OM_MEASUREMENT,
        "properties": {"gateway": gateway, "device": device_id, "kpi": kpi, "window": window, "unit": unit,
                       **{k: v for k, v in tags.items() if k in ("standard", "u4ssc")}},
        "Thing": {"@iot.id": ids["thing"]},
        "Sensor": {"@iot.id": ids["sensor"]},
        "ObservedProperty": {"@iot.id": ids["observed_property"]},
    }


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def observation_body(start_ns: int, end_ns: int, value: float, valid: bool,
                     fields: Mapping[str, Any]) -> dict[str, Any]:
    """An Observation for one closed window (no Datastream link: the caller adds it or uses the MQTT topic).

    phenomenonTime is the window interval; resultTime its end (when the result came to exist, which keeps a
    re-sent window identical); resultQuality only on windows that missed their completeness rule; the
    window's statistics go into parameters.
    """
    body: dict[str, Any] = {
        "phenomenonTime": f"{iso_seconds(start_ns)}/{iso_seconds(end_ns)}",
        "resultTime": iso_seconds(end_ns),
        "result": value,
        "parameters": {k: _json_number(v) for k, v in sorted(fields.items())},
    }
    if not valid:
        body["resultQuality"] = {"valid": False, "reason": "window below its completeness rule (min_coverage)",
                                 "coverage": _json_number(fields.get("coverage"))}
    return body
