"""TTN v3 uplinks: event-time choice, device id and tags, field mapping options, radio readings, rejections.

Message shapes follow reference §9a (TTS data formats: uplink, join-accept, other application messages)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from devices import ttn_v3
from devices.reading import DecodeContext, DecodeError

RX = 1_700_000_000_000_000_000
TOPIC = "v3/app1@ttn/devices/dev1/up"


def _uplink() -> dict[str, Any]:
    return {
        "end_device_ids": {
            "device_id": "dev1",
            "application_ids": {"application_id": "app1"},
            "dev_eui": "0004A30B001C0530",
        },
        "received_at": "2020-02-12T15:15:45.787Z",
        "uplink_message": {
            "f_port": 1,
            "decoded_payload": {"pm25": 9.5, "temperature": 18.25},
            "rx_metadata": [
                {"gateway_ids": {"gateway_id": "a"}, "time": "2020-02-12T15:15:45.100Z", "rssi": -80, "snr": 3},
                {"gateway_ids": {"gateway_id": "b"}, "time": "2020-02-12T15:15:45.050Z", "rssi": -120, "snr": -9},
            ],
            "received_at": "2020-02-12T15:15:45.774576327Z",
        },
    }


def _decode(doc: Any, **kw: Any) -> list[Any]:
    ctx = DecodeContext(received_ns=RX, topic=kw.pop("topic", TOPIC), **kw)
    return ttn_v3.decode(orjson.dumps(doc), ctx)


def _values(readings: list[Any]) -> dict[str, float]:
    return {r.quantity: r.value for r in readings}


def test_event_time_fallbacks() -> None:
    """uplink_message.received_at, else top-level received_at, else the earliest gateway time, else receipt."""
    doc = _uplink()
    assert {r.ts for r in _decode(doc)} == {1_581_520_545_774_576_327}
    del doc["uplink_message"]["received_at"]
    assert {r.ts for r in _decode(doc)} == {1_581_520_545_787_000_000}
    del doc["received_at"]
    assert {r.ts for r in _decode(doc)} == {1_581_520_545_050_000_000}  # gateway b heard it first
    for meta in doc["uplink_message"]["rx_metadata"]:
        del meta["time"]
    assert {r.ts for r in _decode(doc)} == {RX}


def test_best_gateway_radio_readings_and_option_off() -> None:
    """RSSI/SNR come from the strongest gateway (a: -80 dBm, snr 3); radio=false leaves them out."""
    values = _values(_decode(_uplink()))
    assert values == {"pm2_5": 9.5, "temperature": 18.25, "rssi": -80.0, "snr": 3.0}
    assert set(_values(_decode(_uplink(), options={"radio": False}))) == {"pm2_5", "temperature"}


def test_device_id_tags_and_route_override() -> None:
    """Device id from end_device_ids unless the route sets one; application_id/dev_eui become tags."""
    (r, *_) = _decode(_uplink(), tags={"site": "x"})
    assert r.device_id == "dev1"
    assert dict(r.tags) == {"site": "x", "application_id": "app1", "dev_eui": "0004A30B001C0530"}
    (r, *_) = _decode(_uplink(), device_id="kit-9")
    assert r.device_id == "kit-9"


def test_simulated_uplink_is_tagged() -> None:
    """Console-simulated uplinks carry `simulated: true` and are tagged so."""
    doc = _uplink()
    doc["simulated"] = True
    assert all(r.tags["simulated"] == "true" for r in _decode(doc))


def test_default_key_aliases() -> None:
    """Formatter key spellings map to one quantity each; `pm1_0` is PM1.0, never PM10."""
    doc = _uplink()
    doc["uplink_message"]["decoded_payload"] = {
        "PM2.5": 1, "pm1_0": 2, "PM10": 3, "Relative-Humidity": 4, "LAeq": 5, "LAmax": 6, "CO2": 7,
        "Battery Level": 8, "voc_index": 9, "counter": 10, "text": "hello",
    }
    assert _values(_decode(doc, options={"radio": False})) == {
        "pm2_5": 1.0, "pm1_0": 2.0, "pm10": 3.0, "relative_humidity": 4.0, "noise_laeq": 5.0,
        "noise_lamax": 6.0, "co2": 7.0, "battery": 8.0, "voc_index": 9.0,
    }


def test_fields_override_ignore_and_null_values() -> None:
    """`fields` overrides a default key, `ignore` drops a key, null values are absent readings."""
    doc = _uplink()
    doc["uplink_message"]["decoded_payload"] = {"temperature": 2950, "battery": 3.6, "pm25": None, "noise": 50}
    options = {"fields": {"temperature": {"quantity": "temperature", "scale": 0.01, "offset": -273.15}},
               "ignore": ["battery"], "radio": False}
    values = _values(_decode(doc, options=options))
    assert values.keys() == {"temperature", "noise_laeq"}
    assert values["temperature"] == pytest.approx(-243.65)  # 2950 x 0.01 - 273.15


def test_webhook_event_wrapper_is_unwrapped() -> None:
    """An `as.up.data.forward` event ({"name", "data": {...}}) decodes like the bare message."""
    wrapped = {"name": "as.up.data.forward", "time": "2025-11-07T08:52:14Z", "data": _uplink()}
    assert _values(_decode(wrapped)) == _values(_decode(_uplink()))


@pytest.mark.parametrize(
    ("kind", "topic_suffix"),
    [("join_accept", "join"), ("downlink_ack", "down/ack"), ("location_solved", "location/solved"),
     ("service_data", "service/data"), ("downlink_queued", "down/queued")],
)
def test_other_application_messages_are_not_uplinks(kind: str, topic_suffix: str) -> None:
    """Join-accepts, downlink events and the like raise DecodeError('not an uplink (<kind>)')."""
    doc = {"end_device_ids": _uplink()["end_device_ids"], kind: {"session_key_id": "AX..."}}
    with pytest.raises(DecodeError, match=rf"not an uplink \({kind}\)"):
        _decode(doc, topic=f"v3/app1@ttn/devices/dev1/{topic_suffix}")


def _mutate(path: list[str], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_uplink())
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (_mutate(["uplink_message"], [1, 2]), "uplink_message is a list"),
        (_mutate(["uplink_message", "decoded_payload"], KeyError), "no decoded_payload"),
        (_mutate(["uplink_message", "decoded_payload"], "AQID"), "decoded_payload is a str"),
        (_mutate(["uplink_message", "decoded_payload"], {"status": "ok"}), "none of the mapped keys"),
        (_mutate(["uplink_message", "decoded_payload", "pm25"], "abc"), "decoded_payload.pm25: 'abc' is not"),
        (_mutate(["uplink_message", "decoded_payload", "pm25"], "NaN"), "not a finite number"),
        (_mutate(["uplink_message", "decoded_payload", "pm25"], True), "expected a number"),
        (_mutate(["uplink_message", "decoded_payload", "pm25"], {"v": 1}), "got a dict"),
        (_mutate(["uplink_message", "received_at"], "yesterday"), "not an RFC 3339 time"),
        (_mutate(["uplink_message", "rx_metadata"], {"rssi": -1}), "rx_metadata is a dict"),
        (_mutate(["uplink_message", "rx_metadata"], ["gw"]), "rx_metadata[0] is a str"),
        (_mutate(["end_device_ids"], "dev1"), "end_device_ids is a str"),
        (_mutate(["end_device_ids", "device_id"], KeyError), "no end_device_ids.device_id"),
    ],
)
def test_rejections(doc: dict[str, Any], reason: str) -> None:
    """Wrong types, NaN strings, missing parts and bad times raise DecodeError naming the field."""
    with pytest.raises(DecodeError) as info:
        _decode(doc)
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b'{"uplink_message": {', "malformed JSON"), (b"[1, 2]", "is a list, expected an object"), (b"", "malformed")],
)
def test_malformed_payloads(payload: bytes, reason: str) -> None:
    """Non-JSON and non-object payloads are DecodeErrors."""
    with pytest.raises(DecodeError, match=reason):
        ttn_v3.decode(payload, DecodeContext(received_ns=RX, topic=TOPIC))


@pytest.mark.parametrize(
    ("options", "reason"),
    [({"radio": "yes"}, "option 'radio'"), ({"fields": {"pm25": "pm25"}}, "unknown quantity 'pm25'"),
     ({"fields": ["pm25"]}, "option 'fields' must be a table"),
     ({"fields": {"x": {"quantity": "nope", "unit": "V"}}}, "unknown quantity 'nope'"),
     ({"fields": {"x": {"quantity": "pm2_5", "unit": 3}}}, "unit must be a unit name"),
     ({"fields": {"x": {"quantity": "pm2_5", "scale": "ten"}}}, "scale: 'ten' is not a number"),
     ({"ignore": "battery"}, "option 'ignore'"),
     ({"default_fields": 1}, "option 'default_fields'")],
)
def test_bad_options(options: dict[str, Any], reason: str) -> None:
    """Misconfigured options are reported as DecodeErrors saying which option is wrong."""
    with pytest.raises(DecodeError, match=reason):
        _decode(_uplink(), options=options)


def test_encode_round_trip() -> None:
    """The simulator's encoder yields an uplink whose decoded values, time and radio data decode back."""
    payload = ttn_v3.encode("node-3", 1_700_000_123_456_789_012, {"pm25": 4.5, "noise": 52.5}, rssi=-101, snr=-3.5)
    readings = ttn_v3.decode(payload, DecodeContext(received_ns=RX, topic=TOPIC))
    assert {(r.device_id, r.quantity, r.value, r.ts) for r in readings} == {
        ("node-3", "pm2_5", 4.5, 1_700_000_123_456_789_012),
        ("node-3", "noise_laeq", 52.5, 1_700_000_123_456_789_012),
        ("node-3", "rssi", -101.0, 1_700_000_123_456_789_012),
        ("node-3", "snr", -3.5, 1_700_000_123_456_789_012),
    }
