"""Zigbee2MQTT state: topic handling (base topic, bridge, /set), known keys, last_seen, attribute output, rejections.

Topic layout and state keys follow reference §9c."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from devices import zigbee2mqtt
from devices.reading import DecodeContext, DecodeError

RX = 1_700_000_000_000_000_000


def _decode(doc: Any, topic: str = "zigbee2mqtt/kitchen", **kw: Any) -> list[Any]:
    payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return zigbee2mqtt.decode(payload, DecodeContext(received_ns=RX, topic=topic, **kw))


def test_unknown_keys_skipped_silently() -> None:
    """Keys outside the table (linkquality, update, state, …) produce nothing and no error."""
    readings = _decode({"temperature": 20.5, "linkquality": 80, "state": "ON", "update": {"state": "idle"},
                        "child_lock": "UNLOCK"})
    assert [(r.quantity, r.value) for r in readings] == [("temperature", 20.5)]


@pytest.mark.parametrize(
    ("last_seen", "expected_ns"),
    [
        ("2023-07-04T12:00:05.250Z", 1_688_472_005_250_000_000),  # date -u -d 2023-07-04T12:00:05Z +%s
        ("2023-07-04T14:00:05+02:00", 1_688_472_005_000_000_000),  # ISO_8601_local
        (1_688_472_005_250, 1_688_472_005_250_000_000),  # epoch ms
    ],
)
def test_last_seen_is_event_time(last_seen: Any, expected_ns: int) -> None:
    """`last_seen` (ISO 8601, local ISO with offset, or epoch ms) stamps the readings."""
    readings = _decode({"co2": 612, "last_seen": last_seen})
    assert [r.ts for r in readings] == [expected_ns]


def test_friendly_name_with_slashes_and_base_topic_option() -> None:
    """The device id is everything after the base topic (friendly names may contain '/')."""
    (r,) = _decode({"pm25": 3}, topic="site/z2m/floor1/room 2/air", options={"base_topic": "site/z2m"})
    assert r.device_id == "floor1/room 2/air"
    (r,) = _decode({"pm25": 3}, topic="zigbee2mqtt/x", device_id="air-9", tags={"site": "s"})
    assert (r.device_id, dict(r.tags)) == ("air-9", {"site": "s"})


def test_voltage_is_mains_only_on_metering_devices() -> None:
    """Battery sensors' `voltage` is mV of the battery (skipped); a plug with power has mains voltage."""
    assert {r.quantity for r in _decode({"voltage": 2900, "battery": 80})} == {"battery"}
    assert {r.quantity: r.value for r in _decode({"voltage": 229.5, "power": 12})} == {
        "voltage": 229.5, "active_power": 12.0}


def test_fields_and_ignore_options() -> None:
    """`fields` adds keys (here a noise level) or rescales (battery mV → V); `ignore` drops keys."""
    options = {"fields": {"noise": "noise_laeq", "voltage": {"quantity": "voltage", "scale": 0.001}},
               "ignore": ["temperature"]}
    readings = _decode({"noise": 48.5, "voltage": 3000, "temperature": 20}, options=options)
    assert {r.quantity: r.value for r in readings} == {"noise_laeq": 48.5, "voltage": 3.0}


def test_attribute_output_topics() -> None:
    """With advanced.output=attribute, `<base>/<name>/<attr>` carries one plain value."""
    (r,) = _decode(b"21.5", topic="zigbee2mqtt/kitchen sensor/temperature")
    assert (r.device_id, r.quantity, r.value) == ("kitchen sensor", "temperature", 21.5)
    with pytest.raises(DecodeError, match="none of the known keys"):
        _decode(b"ON", topic="zigbee2mqtt/plug/state")


@pytest.mark.parametrize(
    ("payload", "topic", "options", "reason"),
    [
        (b'{"state": "online"}', "zigbee2mqtt/bridge/state", {}, "bridge topic"),
        (b'{"type": "devices"}', "zigbee2mqtt/bridge/devices", {}, "bridge topic"),
        (b'{"state": "ON"}', "zigbee2mqtt/plug/set", {}, "/set topic"),
        (b'{"state": "online"}', "zigbee2mqtt/plug/availability", {}, "/availability topic"),
        (b'{"pm25": 1}', "other/plug", {}, "not under the base topic 'zigbee2mqtt'"),
        (b'{"pm25": 1}', "zigbee2mqtt/", {}, "no friendly name"),
        (b'{"pm25": 1}', "zigbee2mqtt/x", {"base_topic": ""}, "option 'base_topic'"),
        (b"", "zigbee2mqtt/x", {}, "empty payload"),
        (b'{"pm25": 1', "zigbee2mqtt/x", {}, "malformed JSON"),
        (b"[1]", "zigbee2mqtt/x", {}, "is a list"),
        (b'{"pm25": "high"}', "zigbee2mqtt/x", {}, "pm25: 'high' is not a number"),
        (b'{"pm25": "NaN"}', "zigbee2mqtt/x", {}, "not a finite number"),
        (b'{"battery": true}', "zigbee2mqtt/x", {}, "expected a number"),
        (b'{"temperature": [20]}', "zigbee2mqtt/x", {}, "got a list"),
        (b'{"state": "ON", "linkquality": 5}', "zigbee2mqtt/x", {}, "none of the known keys"),
        (b'{"pm25": 1, "last_seen": "recently"}', "zigbee2mqtt/x", {}, "last_seen"),
        (b'{"pm25": 1}', "zigbee2mqtt/x", {"ignore": "pm25"}, "option 'ignore'"),
    ],
)
def test_rejections(payload: bytes, topic: str, options: dict[str, Any], reason: str) -> None:
    """Bridge and request topics, bad payloads, wrong types, NaN and nothing-known are DecodeErrors."""
    with pytest.raises(DecodeError) as info:
        _decode(payload, topic=topic, options=options)
    assert reason in info.value.reason


def test_encode_round_trip() -> None:
    """The simulator's encoder output decodes back, stamped with last_seen."""
    payload = zigbee2mqtt.encode({"pm25": 7, "voc_index": 120, "linkquality": 99}, last_seen="2024-01-01T12:00:00Z")
    readings = _decode(payload)
    assert {(r.quantity, r.value, r.ts) for r in readings} == {
        ("pm2_5", 7.0, 1_704_110_400_000_000_000),
        ("voc_index", 120.0, 1_704_110_400_000_000_000),
    }
