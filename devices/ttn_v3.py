"""The Things Stack v3 (TTN v3) uplink messages, as published on `v3/{app}@{tenant}/devices/{dev}/up`.

Readings come from `uplink_message.decoded_payload` (the output of the application's payload formatter),
mapped key → quantity by a default table (common air, noise and battery keys) overridden by the route's
option `fields`. See docs/devices/ttn_v3.md for every choice made here.

Options:
- `fields`: {decoded key: quantity | {quantity, unit?, scale?, offset?}}; keys may be dotted paths into
  decoded_payload (`sensors.pm25`). Entries override the default table.
- `default_fields` (bool, default true): use the default key table as well.
- `ignore`: list of decoded keys never to read (e.g. a `battery` that is in volts on this device).
- `radio` (bool, default true): emit `rssi` and `snr` of the best gateway as readings.

Event time: `uplink_message.received_at` (network server receipt, always set by the stack), else the top-level
`received_at`, else the earliest gateway `rx_metadata[].time`, else the gateway's receipt time.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from devices.kind import DeviceKind, register
from devices.payload import (
    FieldSpec,
    canonical_unit,
    field_specs,
    get_path,
    parse_json_object,
    parse_number,
    parse_timestamp_ns,
)
from devices.reading import DecodeContext, DecodeError, Reading

__all__ = ["DEFAULT_FIELDS", "decode", "encode"]

_ABSENT = object()


def _spec(quantity: str) -> FieldSpec:
    return FieldSpec(quantity, canonical_unit(quantity))


# Default decoded_payload keys, matched case-insensitively (`-` and spaces read as `_`). Only keys whose unit
# is unambiguous in practice are here; gases other than CO2 come in ppb from some formatters and in µg/m³
# from others, and `battery` is assumed to be a percentage (use `ignore` or `fields` when it is in volts).
_DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {
    "pm1_0": ("pm1", "pm1_0", "pm1.0"),
    "pm2_5": ("pm2_5", "pm2.5", "pm25"),
    "pm4_0": ("pm4", "pm4_0", "pm4.0"),
    "pm10": ("pm10", "pm10_0", "pm10.0"),
    "temperature": ("temperature", "temp"),
    "relative_humidity": ("humidity", "relative_humidity", "rh"),
    "pressure": ("pressure",),
    "co2": ("co2",),
    "voc_index": ("voc_index", "vocindex"),
    "noise_laeq": ("noise", "laeq", "noise_laeq"),
    "noise_lamax": ("lamax", "noise_lamax"),
    "noise_lamin": ("lamin", "noise_lamin"),
    "battery": ("battery", "battery_level", "battery_percent"),
}
DEFAULT_FIELDS: dict[str, FieldSpec] = {
    alias: _spec(quantity) for quantity, aliases in _DEFAULT_ALIASES.items() for alias in aliases
}

# Top-level keys of the other application messages, to say which message arrived instead of an uplink.
_OTHER_MESSAGES = (
    "join_accept",
    "downlink_ack",
    "downlink_nack",
    "downlink_sent",
    "downlink_failed",
    "downlink_queued",
    "downlink_queue_invalidated",
    "location_solved",
    "service_data",
)


def _normalise(key: str) -> str:
    return re.sub(r"[\s\-]", "_", key.strip()).lower()


def _flag(opts: Mapping[str, Any], name: str, default: bool) -> bool:
    value = opts.get(name, default)
    if not isinstance(value, bool):
        raise DecodeError(f"option {name!r} must be true or false, got {value!r}")
    return value


def _event_time(doc: Mapping[str, Any], up: Mapping[str, Any], rx: list[Any], ctx: DecodeContext) -> int:
    candidates = (
        ("uplink_message.received_at", up.get("received_at")),
        ("received_at", doc.get("received_at")),
    )
    for where, value in candidates:
        if value is not None:
            return parse_timestamp_ns(value, where)
    gateway_times = [
        parse_timestamp_ns(meta["time"], "rx_metadata.time")
        for meta in rx
        if isinstance(meta, Mapping) and meta.get("time") is not None
    ]
    return min(gateway_times) if gateway_times else ctx.received_ns


def _best_gateway(rx: list[Any]) -> tuple[float, float] | None:
    """(rssi, snr) of the gateway with the strongest signal; TTS omits zero fields, so a missing snr is 0."""
    best: tuple[float, float] | None = None
    for i, meta in enumerate(rx):
        if not isinstance(meta, Mapping):
            raise DecodeError(f"rx_metadata[{i}] is a {type(meta).__name__}, expected an object")
        raw = meta.get("rssi", meta.get("channel_rssi"))
        if raw is None:
            continue  # a gateway that reported no signal strength (or exactly 0 dBm, omitted by the stack)
        rssi = parse_number(raw, f"rx_metadata[{i}].rssi")
        snr = parse_number(meta.get("snr", 0), f"rx_metadata[{i}].snr")
        if best is None or rssi > best[0]:
            best = (rssi, snr)
    return best


def decode(payload: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode one TTS v3 uplink JSON message into readings (sensor values, then rssi/snr)."""
    doc = parse_json_object(payload)
    # Webhook and event-stream captures wrap the message in {"name": "as.up.data.forward", "data": {...}}.
    wrapped = doc.get("data")
    if "uplink_message" not in doc and isinstance(wrapped, Mapping) and "end_device_ids" in wrapped:
        doc = dict(wrapped)
    up = doc.get("uplink_message")
    if up is None:
        kinds = [k for k in _OTHER_MESSAGES if k in doc]
        suffix = ctx.topic.rsplit("/", 1)[-1] if ctx.topic else ""
        what = kinds[0] if kinds else (f"topic suffix /{suffix}" if suffix else "no uplink_message")
        raise DecodeError(f"not an uplink ({what})", payload)
    if not isinstance(up, Mapping):
        raise DecodeError(f"uplink_message is a {type(up).__name__}, expected an object", payload)
    ids = doc.get("end_device_ids")
    if ids is not None and not isinstance(ids, Mapping):
        raise DecodeError(f"end_device_ids is a {type(ids).__name__}, expected an object", payload)
    ids = ids or {}

    device_id = ctx.device_id
    if not device_id:
        dev = ids.get("device_id")
        if not isinstance(dev, str) or not dev:
            raise DecodeError("no end_device_ids.device_id in the uplink, no device id on the route", payload)
        device_id = dev

    tags = dict(ctx.tags)
    app = get_path(ids, "application_ids.application_id", None)
    if isinstance(app, str) and app:
        tags["application_id"] = app
    dev_eui = ids.get("dev_eui")
    if isinstance(dev_eui, str) and dev_eui:
        tags["dev_eui"] = dev_eui
    if doc.get("simulated") is True or up.get("simulated") is True:
        tags["simulated"] = "true"  # sent from the console's "simulate uplink", not by the device

    rx = up.get("rx_metadata", [])
    if not isinstance(rx, list):
        raise DecodeError(f"uplink_message.rx_metadata is a {type(rx).__name__}, expected a list", payload)
    ts = _event_time(doc, up, rx, ctx)

    decoded = up.get("decoded_payload")
    if decoded is None:
        raise DecodeError(
            "uplink has no decoded_payload (no payload formatter in the application, or it failed)", payload
        )
    if not isinstance(decoded, Mapping):
        raise DecodeError(f"decoded_payload is a {type(decoded).__name__}, expected an object", payload)

    opts = ctx.options
    explicit = field_specs(opts.get("fields"))
    ignore_opt = opts.get("ignore", [])
    if not isinstance(ignore_opt, list | tuple):
        raise DecodeError("option 'ignore' must be a list of decoded keys")
    ignore = {str(k) for k in ignore_opt}
    use_defaults = _flag(opts, "default_fields", True)

    out: list[Reading] = []
    taken: set[str] = set()
    for key, spec in explicit.items():
        if key in ignore:
            continue
        raw = decoded[key] if key in decoded else get_path(decoded, key, None)
        taken.add(key)
        if raw is None:
            continue  # absent in this uplink (formatters often send a subset)
        value = parse_number(raw, f"decoded_payload.{key}")
        out.append(Reading(device_id, spec.quantity, spec.apply(value), spec.unit, ts, tags))
    if use_defaults:
        for key, raw in decoded.items():
            if key in taken or key in ignore or raw is None:
                continue
            default = DEFAULT_FIELDS.get(_normalise(str(key)))
            if default is None:
                continue  # not a key we know: formatters add status flags, counters, text; that is fine
            value = parse_number(raw, f"decoded_payload.{key}")
            out.append(Reading(device_id, default.quantity, default.apply(value), default.unit, ts, tags))
    if not out:
        keys = ", ".join(sorted(map(str, decoded))[:12]) or "none"
        raise DecodeError(f"decoded_payload has none of the mapped keys (has: {keys}); see 'fields'", payload)

    if _flag(opts, "radio", True):
        best = _best_gateway(rx)
        if best is not None:
            out.append(Reading(device_id, "rssi", best[0], "dBm", ts, tags))
            out.append(Reading(device_id, "snr", best[1], "dB", ts, tags))
    return out


def encode(
    device_id: str,
    ts_ns: int,
    values: Mapping[str, float],
    application_id: str = "citygw-sim",
    dev_eui: str = "70B3D57ED0000001",
    f_cnt: int = 1,
    rssi: float = -97.0,
    snr: float = 7.5,
) -> bytes:
    """A TTS v3 uplink JSON message carrying `values` as decoded_payload (used by the MQTT simulator)."""
    sec, ns = divmod(ts_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"
    raw = b"".join(round(v * 10).to_bytes(2, "big", signed=True) for v in list(values.values())[:8])
    uplink: dict[str, Any] = {
        "session_key_id": "AXA50...",
        "f_port": 1,
        "frm_payload": base64.b64encode(raw).decode(),
        "decoded_payload": dict(values),
        "rx_metadata": [
            {
                "gateway_ids": {"gateway_id": "citygw-sim-gw", "eui": "B827EBFFFE000001"},
                "time": stamp,
                "timestamp": (sec % 4_294_967) * 1000,
                "rssi": rssi,
                "channel_rssi": rssi,
                "snr": snr,
                "uplink_token": "c2ltdWxhdGVk",
            }
        ],
        "settings": {
            "data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}},
            "coding_rate": "4/5",
            "frequency": "868100000",
        },
        "received_at": stamp,
        "consumed_airtime": "0.061696s",
    }
    if f_cnt:
        uplink["f_cnt"] = f_cnt  # zero fields are omitted by the stack: f_cnt 0 never appears
    doc = {
        "end_device_ids": {
            "device_id": device_id,
            "application_ids": {"application_id": application_id},
            "dev_eui": dev_eui,
            "join_eui": "0000000000000000",
            "dev_addr": "260B0001",
        },
        "correlation_ids": ["as:up:01SIMULATED"],
        "received_at": stamp,
        "uplink_message": uplink,
    }
    return orjson.dumps(doc)


_QUANTITIES = tuple(
    sorted({(s.quantity, s.unit) for s in DEFAULT_FIELDS.values()} | {("rssi", "dBm"), ("snr", "dB")})
)

KIND = register(
    DeviceKind(
        name="ttn_v3",
        link="mqtt",
        summary="The Things Stack v3 uplinks: decoded_payload keys → quantities, best-gateway RSSI/SNR",
        quantities=_QUANTITIES,
        decode=decode,
        encode=encode,
        doc="ttn_v3.md",
    )
)
