"""Zigbee2MQTT device state: the JSON object published on `<base_topic>/<friendly_name>` at every report.

Known keys become readings (temperature, humidity, pressure, pm25, co2, voc_index, power, energy, …); the rest
(linkquality, update, state, …) is skipped. `<base_topic>/bridge/…` topics are refused with a reason.
See docs/devices/zigbee2mqtt.md.

Options:
- `base_topic` (default "zigbee2mqtt"): Z2M's `mqtt.base_topic`; the friendly name is what follows it.
- `fields`: {state key: quantity | {quantity, unit?, scale?, offset?}} to add or override keys.
- `ignore`: list of state keys never to read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from devices.kind import DeviceKind, register
from devices.payload import (
    FieldSpec,
    canonical_unit,
    field_specs,
    parse_json_object,
    parse_number,
    parse_timestamp_ns,
)
from devices.reading import DecodeContext, DecodeError, Reading

__all__ = ["STATE_KEYS", "decode", "encode"]


def _spec(quantity: str) -> FieldSpec:
    return FieldSpec(quantity, canonical_unit(quantity))


# Z2M exposes names (zigbee-herdsman-converters) → vocabulary. Units are Z2M's documented ones: °C, %, hPa,
# µg/m³, ppm, W, kWh, V, A, Hz.
STATE_KEYS: dict[str, FieldSpec] = {
    "temperature": _spec("temperature"),
    "humidity": _spec("relative_humidity"),
    "pressure": _spec("pressure"),
    "pm25": _spec("pm2_5"),
    "pm10": _spec("pm10"),
    "pm1": _spec("pm1_0"),
    "co2": _spec("co2"),
    "voc_index": _spec("voc_index"),
    "power": _spec("active_power"),
    "energy": _spec("energy_import"),
    "produced_energy": _spec("energy_export"),
    "voltage": _spec("voltage"),
    "current": _spec("current"),
    "power_factor": _spec("power_factor"),
    "ac_frequency": _spec("frequency"),
    "battery": _spec("battery"),
}

# Battery-powered sensors publish `voltage` as their battery voltage in mV; metering plugs publish mains
# voltage in V. Only a state that also carries metering keys has a mains voltage.
_METERING_KEYS = ("power", "current", "energy")

# Topic suffixes that are Z2M requests or availability, not state.
_NOT_STATE = ("set", "get", "availability")


def _friendly_name(topic: str, base: str) -> str:
    prefix = base.rstrip("/") + "/"
    if not topic.startswith(prefix):
        raise DecodeError(f"topic {topic!r} is not under the base topic {base!r} (option 'base_topic')")
    name = topic[len(prefix):]
    first = name.split("/", 1)[0]
    if first == "bridge":
        raise DecodeError(f"{topic} is a bridge topic (coordinator status and logs), not device state")
    last = name.rsplit("/", 1)[-1]
    if last in _NOT_STATE:
        raise DecodeError(f"{topic} is a /{last} topic, not device state")
    if not name:
        raise DecodeError(f"topic {topic!r} has no friendly name after the base topic")
    return name


def _last_seen_ns(value: Any) -> int:
    """Event time from last_seen: ISO text, or an integer epoch (Z2M's `epoch` setting: ms) kept exact."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        # Same magnitude rule as parse_timestamp_ns, in integers: a float would lose the last ns digits.
        for limit, multiplier in ((10**11, 10**9), (10**14, 10**6), (10**17, 10**3)):
            if value < limit:
                return value * multiplier
        return value
    return parse_timestamp_ns(value, "last_seen")


def decode(payload: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode one Zigbee2MQTT state message into readings; unknown keys are skipped silently."""
    opts = ctx.options
    base = opts.get("base_topic", "zigbee2mqtt")
    if not isinstance(base, str) or not base:
        raise DecodeError(f"option 'base_topic' must be a topic prefix, got {base!r}")
    name = _friendly_name(ctx.topic, base) if ctx.topic else ""
    if not payload.strip():
        raise DecodeError("empty payload (Z2M clears a removed device's retained state this way)")

    extra = field_specs(opts.get("fields"))
    ignore_opt = opts.get("ignore", [])
    if not isinstance(ignore_opt, list | tuple):
        raise DecodeError("option 'ignore' must be a list of state keys")
    ignore = {str(k) for k in ignore_opt}

    stripped = payload.strip()
    if stripped[:1] != b"{" and "/" in name:
        # advanced.output = attribute: `<base>/<friendly_name>/<attribute>` carries one plain value.
        name, _, attribute = name.rpartition("/")
        doc: dict[str, Any] = {attribute: stripped.decode("utf-8", "replace")}
    else:
        doc = parse_json_object(payload)

    device_id = ctx.device_id or name
    if not device_id:
        raise DecodeError("no device id: no friendly name in the topic and none set on the route")
    ts = ctx.received_ns
    last_seen = doc.get("last_seen")
    if last_seen is not None:
        ts = _last_seen_ns(last_seen)
    tags = dict(ctx.tags)

    metering = any(doc.get(k) is not None for k in _METERING_KEYS)
    out: list[Reading] = []
    for key, raw in doc.items():
        if key in ignore or raw is None:
            continue
        spec = extra.get(key)
        if spec is None:
            spec = STATE_KEYS.get(key)
            if spec is None or (key == "voltage" and not metering):
                continue  # unknown keys and battery voltage (mV) are not ours to read
        value = parse_number(raw, key)
        out.append(Reading(device_id, spec.quantity, spec.apply(value), spec.unit, ts, tags))
    if not out:
        keys = ", ".join(sorted(map(str, doc))[:12]) or "none"
        raise DecodeError(f"state has none of the known keys (has: {keys}); map them in 'fields'", payload)
    return out


def encode(values: Mapping[str, Any], last_seen: str = "") -> bytes:
    """A Z2M state payload from {state key: value} (used by the MQTT simulator)."""
    doc = dict(values)
    if last_seen:
        doc["last_seen"] = last_seen
    return orjson.dumps(doc)


KIND = register(
    DeviceKind(
        name="zigbee2mqtt",
        link="mqtt",
        summary="Zigbee2MQTT device state on <base_topic>/<friendly_name> (air quality, climate, metering)",
        quantities=tuple(sorted({(s.quantity, s.unit) for s in STATE_KEYS.values()})),
        decode=decode,
        encode=encode,
        doc="zigbee2mqtt.md",
    )
)
