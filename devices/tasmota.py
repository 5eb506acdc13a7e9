"""Tasmota telemetry: the JSON published every TelePeriod on `tele/<topic>/SENSOR`.

One object per attached sensor (`"SDS0X1": {...}`, `"PMS5003": {...}`, `"ENERGY": {...}`, `"BME280": {...}`,
`"S8": {...}`); each known key becomes a reading tagged `sensor=<object name>`. See docs/devices/tasmota.md.

Options:
- `timezone`: IANA zone (e.g. "Europe/Madrid", or "UTC") the device's `Time` is in. Tasmota writes local time
  without an offset, so by default the receipt time is used; with this option `Time` becomes the event time.
- `topic_level` (int, default 1): topic level holding the device id when the route sets none.
- `fields`: {"<Object>.<Key>" or "<Key>": quantity | {quantity, unit?, scale?, offset?}} for keys not in the
  built-in table (or to override it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from devices.kind import DeviceKind, register
from devices.payload import (
    FieldSpec,
    canonical_unit,
    field_specs,
    parse_json_object,
    parse_number,
    topic_level,
)
from devices.reading import DecodeContext, DecodeError, Reading

__all__ = ["ENERGY_KEYS", "SENSOR_KEYS", "decode", "encode"]


def _spec(quantity: str, scale: float = 1.0) -> FieldSpec:
    return FieldSpec(quantity, canonical_unit(quantity), scale)


# Keys read in any sensor object (PMS5003 words 1-12, SDS0X1, climate sensors, Senseair/MH-Z19 CO2).
SENSOR_KEYS: dict[str, FieldSpec] = {
    "CF1": _spec("pm1_0_cf1"),
    "CF2.5": _spec("pm2_5_cf1"),
    "CF10": _spec("pm10_cf1"),
    "PM1": _spec("pm1_0"),
    "PM2.5": _spec("pm2_5"),
    "PM10": _spec("pm10"),
    "PB0.3": _spec("particles_0_3um"),
    "PB0.5": _spec("particles_0_5um"),
    "PB1": _spec("particles_1_0um"),
    "PB2.5": _spec("particles_2_5um"),
    "PB5": _spec("particles_5_0um"),
    "PB10": _spec("particles_10um"),
    "Temperature": _spec("temperature"),
    "Humidity": _spec("relative_humidity"),
    "Pressure": _spec("pressure"),
    "CarbonDioxide": _spec("co2"),
}

# Keys read only inside the "ENERGY" object (energy-monitoring plugs and meters). Today/Yesterday/Period are
# derived counters that reset, so only the meter total is kept.
ENERGY_KEYS: dict[str, FieldSpec] = {
    "Total": _spec("energy_import"),
    "ImportActive": _spec("energy_import"),
    "ExportActive": _spec("energy_export"),
    "Power": _spec("active_power"),
    "ApparentPower": _spec("apparent_power"),
    "ReactivePower": _spec("reactive_power"),
    "Factor": _spec("power_factor"),
    "Voltage": _spec("voltage"),
    "Current": _spec("current"),
    "Frequency": _spec("frequency"),
}

# Top-level keys that are message metadata, never sensor objects.
_META = {"Time", "TempUnit", "PressureUnit", "SpeedUnit", "Epoch"}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_PRESSURE_TO_HPA = {"hPa": 1.0, "mmHg": 1.333223684, "inHg": 33.86389}


def _local_time_ns(text: Any, zone_name: Any) -> int:
    if not isinstance(zone_name, str) or not zone_name:
        raise DecodeError(f"option 'timezone' must be an IANA zone name, got {zone_name!r}")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise DecodeError(f"option 'timezone': unknown zone {zone_name!r}") from None
    if not isinstance(text, str):
        raise DecodeError(f"Time is {text!r}, expected local time text like 2023-05-21T01:06:38")
    try:
        local = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DecodeError(f"Time {text[:40]!r} is not an ISO 8601 local time") from None
    if local.tzinfo is None:
        # fold=0: in the repeated hour when clocks go back, the first occurrence is taken (documented).
        local = local.replace(tzinfo=zone)
    return ((local - _EPOCH) // _MICROSECOND) * 1000


def _units(doc: Mapping[str, Any]) -> tuple[str, float]:
    temp_unit = doc.get("TempUnit", "C")
    if temp_unit not in ("C", "F"):
        raise DecodeError(f"TempUnit is {temp_unit!r}, expected C or F")
    pressure_unit = doc.get("PressureUnit", "hPa")
    if not isinstance(pressure_unit, str) or pressure_unit not in _PRESSURE_TO_HPA:
        raise DecodeError(f"PressureUnit is {pressure_unit!r}, expected one of {', '.join(_PRESSURE_TO_HPA)}")
    return str(temp_unit), _PRESSURE_TO_HPA[str(pressure_unit)]


def decode(payload: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode one Tasmota tele/…/SENSOR JSON message into readings tagged with their sensor object."""
    last = ctx.topic.rsplit("/", 1)[-1] if ctx.topic else ""
    if last in ("STATE", "LWT", "RESULT", "INFO1", "INFO2", "INFO3", "UPTIME"):
        raise DecodeError(f"not a SENSOR message: {ctx.topic} carries device status, not sensors", payload)
    doc = parse_json_object(payload)
    opts = ctx.options
    device_id = ctx.device_id
    if not device_id:
        level = opts.get("topic_level", 1)
        if not isinstance(level, int) or isinstance(level, bool):
            raise DecodeError(f"option 'topic_level' must be an integer, got {level!r}")
        device_id = topic_level(ctx.topic, level)
    ts = ctx.received_ns
    if "timezone" in opts:
        if "Time" not in doc:
            raise DecodeError("SENSOR message has no Time, but option 'timezone' asks to use it", payload)
        ts = _local_time_ns(doc["Time"], opts["timezone"])
    temp_unit, pressure_scale = _units(doc)
    extra = field_specs(opts.get("fields"))

    out: list[Reading] = []
    objects = [name for name, value in doc.items() if name not in _META and isinstance(value, Mapping)]
    for name in objects:
        obj = doc[name]
        tags = {**ctx.tags, "sensor": name}
        table = {**SENSOR_KEYS, **ENERGY_KEYS} if name == "ENERGY" else SENSOR_KEYS
        for key, raw in obj.items():
            spec = extra.get(f"{name}.{key}") or extra.get(key) or table.get(key)
            if spec is None or raw is None:
                continue  # unknown keys (DewPoint, Gas, Today…) and sensors that failed this period
            where = f"{name}.{key}"
            # Multi-channel meters report arrays, one element per channel.
            channels = list(enumerate(raw, 1)) if isinstance(raw, list) else [(0, raw)]
            for channel, item in channels:
                value = parse_number(item, where)
                if key == "Temperature" and temp_unit == "F" and spec.quantity == "temperature":
                    value = (value - 32.0) * 5.0 / 9.0
                elif key == "Pressure" and spec.quantity == "pressure":
                    value *= pressure_scale
                value = spec.apply(value)  # raises DecodeError if a unit conversion overflowed
                reading_tags = {**tags, "channel": str(channel)} if channel else tags
                out.append(Reading(device_id, spec.quantity, value, spec.unit, ts, reading_tags))
    if not out:
        names = ", ".join(objects[:10]) or "none"
        raise DecodeError(f"SENSOR message has no known sensor values (objects: {names})", payload)
    return out


def encode(sensors: Mapping[str, Mapping[str, Any]], local_time: str = "", temp_unit: str = "C") -> bytes:
    """A tele/…/SENSOR payload from {object name: {key: value}} (used by the MQTT simulator)."""
    doc: dict[str, Any] = {}
    if local_time:
        doc["Time"] = local_time
    doc.update({name: dict(values) for name, values in sensors.items()})
    if any("Temperature" in values for values in sensors.values()):
        doc["TempUnit"] = temp_unit
    if any("Pressure" in values for values in sensors.values()):
        doc["PressureUnit"] = "hPa"
    return orjson.dumps(doc)


_QUANTITIES = tuple(sorted({(s.quantity, s.unit) for s in (*SENSOR_KEYS.values(), *ENERGY_KEYS.values())}))

KIND = register(
    DeviceKind(
        name="tasmota",
        link="mqtt",
        summary="Tasmota tele/<topic>/SENSOR JSON: SDS0X1, PMSx003, ENERGY, BME/SHT climate, S8/MH-Z19 CO2",
        quantities=_QUANTITIES,
        decode=decode,
        encode=encode,
        doc="tasmota.md",
    )
)
