"""Fuzz every MQTT payload decoder: random bytes, random JSON-ish documents, mutated valid payloads and
random options. The only exception a decoder may raise is DecodeError, and whatever it returns is a list of
Readings with finite float values and integer timestamps."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.reading import DecodeContext, DecodeError, Reading
from devices.registry import get_kind
from simulators.mqtt_publishers import make_payload

FORMATS = ("ttn_v3", "tasmota", "zigbee2mqtt", "airrohr", "telraam", "line_protocol")
RX = 1_700_000_000_000_000_000
TS = 1_717_000_000_000_000_000
# Formats whose input may carry no device id (airrohr's local data.json): the decoder invents none, `citygw
# decode` prints the readings without one, and the MQTT input refuses them unless the route names the device.
MAY_NAME_NO_DEVICE = frozenset({"airrohr"})

# Topics each format meets in practice, plus hostile ones.
TOPICS = st.sampled_from([
    "", "/", "v3/app@ttn/devices/d/up", "v3/app/devices/d/join", "tele/kit/SENSOR", "tele/kit/STATE", "tele",
    "zigbee2mqtt/room", "zigbee2mqtt/room/temperature", "zigbee2mqtt/bridge/state", "zigbee2mqtt/",
    "airrohr/x", "telraam/1", "influx/x", "a//b",
])

# Keys the decoders look for, so random documents reach deep code paths.
KEYS = [
    "end_device_ids", "device_id", "application_ids", "application_id", "dev_eui", "uplink_message",
    "decoded_payload", "rx_metadata", "rssi", "channel_rssi", "snr", "time", "received_at", "data", "simulated",
    "join_accept", "pm25", "pm2_5", "PM2.5", "temperature", "humidity", "battery", "noise", "Time", "TempUnit",
    "PressureUnit", "SDS0X1", "PMS5003", "ENERGY", "BME280", "S8", "Total", "Power", "Voltage", "Temperature",
    "Pressure", "CarbonDioxide", "voltage", "power", "last_seen", "voc_index", "sensordatavalues",
    "value_type", "value", "esp8266id", "timestamp", "sensor", "id", "P1", "P2", "SDS_P1", "pressure",
    "report", "type", "features", "properties", "date", "uptime", "car", "heavy", "bike", "pedestrian",
    "car_lft", "car_rgt", "v85", "segment_id", "instance_id", "FeatureCollection", "Feature",
]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(["NaN", "nan", "inf", "-1", "1e400", "12.5", "", "2020-10-30T07:00:00Z", "0x10",
                     "2023-05-21T01:06:38", "9999-12-31T23:59:59+14:00", "0001-01-01 00:00:00", "P1",
                     "noise_LAeq", "DNMS_noise_LAeq", "FeatureCollection", "Feature"]),
)
JSONISH = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=6),
    ),
    max_leaves=25,
)
OPTIONS = st.dictionaries(
    st.sampled_from(["fields", "ignore", "radio", "default_fields", "timezone", "topic_level", "base_topic",
                     "chip_id", "de_extrapolate", "min_uptime", "precision", "device_tag"]),
    st.one_of(JSONISH, st.sampled_from(["UTC", "Europe/Madrid", "s", "ms", "zigbee2mqtt"]),
              st.dictionaries(st.sampled_from(["pm25", "temperature", "x.y", "som"]),
                              st.sampled_from(["pm2_5", "temperature", "bogus"]) | JSONISH, max_size=2)),
    max_size=3,
)


def _check(fmt: str, payload: bytes, ctx: DecodeContext) -> None:
    try:
        readings = get_kind(fmt).decode(payload, ctx)
    except DecodeError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return
    assert isinstance(readings, list)
    for r in readings:
        assert isinstance(r, Reading)
        assert isinstance(r.value, float) and math.isfinite(r.value)
        assert isinstance(r.ts, int) and not isinstance(r.ts, bool)
        assert isinstance(r.device_id, str) and (r.device_id or fmt in MAY_NAME_NO_DEVICE)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in r.tags.items())


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=300), topic=TOPICS, device_id=st.sampled_from(["", "route-dev"]))
def test_random_bytes(fmt: str, payload: bytes, topic: str, device_id: str) -> None:
    """Arbitrary bytes never raise anything but DecodeError."""
    _check(fmt, payload, DecodeContext(device_id=device_id, received_ns=RX, topic=topic))


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=JSONISH, topic=TOPICS, device_id=st.sampled_from(["", "route-dev"]), options=OPTIONS)
def test_random_json_documents_and_options(
    fmt: str, doc: Any, topic: str, device_id: str, options: dict[str, Any]
) -> None:
    """JSON-ish documents built from the formats' own key names, with random options, only raise DecodeError."""
    # stdlib json: orjson refuses integers beyond 64 bits, which payloads may well carry
    payload = json.dumps(doc).encode() if not isinstance(doc, str) else doc.encode()
    _check(fmt, payload, DecodeContext(device_id=device_id, received_ns=RX, topic=topic, options=options))


def _mutate(doc: Any, path_choices: list[int], replacement: Any) -> Any:
    """Replace one node of `doc` (picked by successive indices) with `replacement`."""
    if not path_choices or not isinstance(doc, dict | list) or not doc:
        return replacement
    index, rest = path_choices[0], path_choices[1:]
    if isinstance(doc, dict):
        key = list(doc)[index % len(doc)]
        return {**doc, key: _mutate(doc[key], rest, replacement)}
    i = index % len(doc)
    return [*doc[:i], _mutate(doc[i], rest, replacement), *doc[i + 1:]]


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 50),
    path=st.lists(st.integers(0, 50), min_size=1, max_size=5),
    replacement=JSONISH,
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    cut=st.none() | st.integers(0, 10_000),
)
def test_mutated_valid_payloads(
    fmt: str, seed: int, path: list[int], replacement: Any, flips: list[tuple[int, int]], cut: int | None
) -> None:
    """A valid simulator payload with one node replaced, bytes flipped or truncated only raises DecodeError."""
    topic, payload = make_payload(fmt, seed, TS + seed * 1_000_003, f"dev-{seed}")
    if fmt != "line_protocol":
        mutated = _mutate(orjson.loads(payload), path, replacement)
        _check(fmt, json.dumps(mutated).encode(), DecodeContext(received_ns=RX, topic=topic))
    raw = bytearray(payload)
    for pos, byte in flips:
        raw[pos % len(raw)] = byte
    if cut is not None:
        raw = raw[: cut % (len(raw) + 1)]
    _check(fmt, bytes(raw), DecodeContext(received_ns=RX, topic=topic))


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list(' ,=\\"\n\r#\tai-u.0159eEtfTF_ñ✓')), max_size=80),
       options=OPTIONS)
def test_line_protocol_special_character_soup(text: str, options: dict[str, Any]) -> None:
    """Line protocol built from its special characters only raises DecodeError."""
    _check("line_protocol", text.encode(), DecodeContext(device_id="d", received_ns=RX, options=options))
