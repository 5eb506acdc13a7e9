"""Sensor.Community (airrohr) JSON: `{"software_version": …, "sensordatavalues": [{value_type, value}, …]}`.

Accepts the push body the firmware POSTs (unprefixed value types), the device's local `data.json` and
custom-API bodies (prefixed value types such as `SDS_P1`, `BME280_temperature`, `DNMS_noise_LAeq`), and
records of the public data API (`timestamp` in UTC, `sensor.id`): one record, or the array of records the API
answers with. Values are strings. See docs/devices/airrohr.md.

The device's local `data.json` carries no chip id: without a route id or option `chip_id` its readings have
an empty device id (`citygw decode` prints them without one; the MQTT input refuses them, naming the fix).

Options:
- `chip_id`: the ESP chip id, giving device id `esp8266-<chip_id>` when the route sets none and the body
  carries no `esp8266id`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from devices.kind import DeviceKind, register
from devices.payload import FieldSpec, canonical_unit, parse_number
from devices.reading import DecodeContext, DecodeError, Reading

__all__ = ["VALUE_TYPES", "decode", "encode"]


def _spec(quantity: str, scale: float = 1.0) -> FieldSpec:
    return FieldSpec(quantity, canonical_unit(quantity), scale)


# Upload value types (airrohr-firmware sendSensorCommunity / ext_def.h) → vocabulary.
VALUE_TYPES: dict[str, FieldSpec] = {
    "P0": _spec("pm1_0"),
    "P1": _spec("pm10"),
    "P2": _spec("pm2_5"),
    "P4": _spec("pm4_0"),
    "temperature": _spec("temperature"),
    "humidity": _spec("relative_humidity"),
    "pressure": _spec("pressure", 0.01),  # the firmware sends Pa
    "noise_LAeq": _spec("noise_laeq"),
    "noise_LA_min": _spec("noise_lamin"),
    "noise_LA_max": _spec("noise_lamax"),
    "signal": _spec("rssi"),  # WiFi signal strength of the ESP, dBm (data.json)
}

# Internal prefixes: upper-case sensor names before the first underscore (SDS_, BME280_, SPS30_, DNMS_…).
_PREFIX = re.compile(r"^([A-Z][A-Z0-9]*)_(.+)$")

# Public data API times are UTC without an offset: "2024-03-01 10:15:32".
_API_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$")


def _value_type(name: str) -> tuple[str, str]:
    """(value type without prefix, prefix or "") — only strips a prefix when what remains is known."""
    if name in VALUE_TYPES:
        return name, ""
    match = _PREFIX.match(name)
    if match and match.group(2) in VALUE_TYPES:
        return match.group(2), match.group(1)
    return name, ""


def _device_id(doc: Mapping[str, Any], ctx: DecodeContext) -> str:
    """The route's id, else the body's chip id or option `chip_id`, else the API sensor id, else ""."""
    if ctx.device_id:
        return ctx.device_id
    chip = doc.get("esp8266id")
    if chip is None:
        chip = ctx.options.get("chip_id")
    if isinstance(chip, int | str) and not isinstance(chip, bool) and str(chip).strip():
        return f"esp8266-{str(chip).strip()}"
    sensor = doc.get("sensor")
    if isinstance(sensor, Mapping) and isinstance(sensor.get("id"), int | str):
        return f"sensor-community-{sensor['id']}"
    return ""  # e.g. the local data.json: the caller knows the device (route id), or nobody needs to


def _api_time(value: Any) -> int:
    if not isinstance(value, str) or not _API_TIME.match(value.strip()):
        raise DecodeError(f"timestamp {str(value)[:40]!r} is not 'YYYY-MM-DD HH:MM:SS' (UTC)")
    try:
        dt = datetime.fromisoformat(value.strip().replace(" ", "T")).replace(tzinfo=UTC)
    except ValueError:
        raise DecodeError(f"timestamp {value[:40]!r} is not a valid date and time") from None
    return int(dt.timestamp()) * 1_000_000_000


def decode(payload: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode a Sensor.Community JSON body, or an array of API records, into readings (pressure Pa → hPa)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"malformed JSON: {exc}", payload) from None
    if isinstance(doc, dict):
        return _record(doc, ctx, payload, "")
    if not isinstance(doc, list):
        raise DecodeError(f"JSON payload is a {type(doc).__name__}, expected an object or an array of records",
                          payload)
    if not doc:
        raise DecodeError("array of records is empty", payload)
    out: list[Reading] = []
    for i, record in enumerate(doc):
        where = f"record [{i}]: "
        if not isinstance(record, dict):
            raise DecodeError(f"{where}is a {type(record).__name__}, not an object", payload)
        try:
            out += _record(record, ctx, payload, where)
        except _NothingKnownError:
            continue  # a sensor whose value types are not ours (GPS, SPS30 counts…), like an unknown value type
    if not out:
        raise DecodeError(f"sensordatavalues has no known value type in any of the {len(doc)} records", payload)
    return out


class _NothingKnownError(DecodeError):
    """A record whose value types are all unknown (skipped inside an array, an error alone)."""


def _record(doc: Mapping[str, Any], ctx: DecodeContext, payload: bytes, where: str) -> list[Reading]:
    """The readings of one body or API record; `where` prefixes reasons ("record [3]: ")."""
    values = doc.get("sensordatavalues")
    if values is None:
        raise DecodeError(f"{where}body has no 'sensordatavalues' list", payload)
    if not isinstance(values, list):
        raise DecodeError(f"{where}sensordatavalues is a {type(values).__name__}, expected a list", payload)
    if not values:
        raise DecodeError(f"{where}sensordatavalues is empty", payload)
    device_id = _device_id(doc, ctx)
    try:
        ts = _api_time(doc["timestamp"]) if "timestamp" in doc else ctx.received_ns
    except DecodeError as exc:
        raise DecodeError(where + exc.reason, payload) from None
    out: list[Reading] = []
    for i, item in enumerate(values):
        if not isinstance(item, Mapping):
            raise DecodeError(f"{where}sensordatavalues[{i}] is a {type(item).__name__}, not an object", payload)
        name = item.get("value_type")
        if not isinstance(name, str) or not name:
            raise DecodeError(f"{where}sensordatavalues[{i}] has no value_type", payload)
        if "value" not in item:
            raise DecodeError(f"{where}sensordatavalues[{i}] ({name}) has no value", payload)
        value_type, prefix = _value_type(name)
        spec = VALUE_TYPES.get(value_type)
        if spec is None:
            continue  # samples, min_micro, max_micro, GPS, counts… are not ours to read
        try:
            value = spec.apply(parse_number(item["value"], name))
        except DecodeError as exc:
            raise DecodeError(where + exc.reason, payload) from None
        tags = {**ctx.tags, "sensor": prefix} if prefix else dict(ctx.tags)
        out.append(Reading(device_id, spec.quantity, value, spec.unit, ts, tags))
    if not out:
        types = ", ".join(str(v.get("value_type")) for v in values[:10] if isinstance(v, Mapping))
        raise _NothingKnownError(f"{where}sensordatavalues has no known value type (has: {types})", payload)
    return out


def encode(values: Mapping[str, float], software_version: str = "NRZ-2024-135", chip_id: str = "") -> bytes:
    """A push body from {value_type: value}; values are sent as strings like the firmware does."""
    doc: dict[str, Any] = {"software_version": software_version}
    if chip_id:
        doc["esp8266id"] = chip_id
    doc["sensordatavalues"] = [{"value_type": k, "value": f"{v:.2f}"} for k, v in values.items()]
    return orjson.dumps(doc)


KIND = register(
    DeviceKind(
        name="airrohr",
        link="mqtt",
        summary="Sensor.Community / airrohr JSON (push body, data.json, API record): PM, climate, DNMS noise",
        quantities=tuple(sorted({(s.quantity, s.unit) for s in VALUE_TYPES.values()})),
        decode=decode,
        encode=encode,
        doc="airrohr.md",
    )
)
