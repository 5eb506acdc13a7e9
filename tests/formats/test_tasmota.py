"""Tasmota tele/…/SENSOR: sensor objects, local Time with the timezone option, units, arrays, rejections.

Objects and keys follow reference §9b (xsns_18_pms5003, xsns_17_senseair, ENERGY)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from devices import tasmota
from devices.reading import DecodeContext, DecodeError

RX = 1_700_000_000_000_000_000
TOPIC = "tele/kit-1/SENSOR"


def _decode(doc: Any, topic: str = TOPIC, **kw: Any) -> list[Any]:
    payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return tasmota.decode(payload, DecodeContext(received_ns=RX, topic=topic, **kw))


def test_receipt_time_by_default_even_with_time() -> None:
    """Tasmota's Time has no offset: without the timezone option the receipt time is used."""
    readings = _decode({"Time": "2023-05-21T01:06:38", "SDS0X1": {"PM2.5": 11.8, "PM10": 5.8}})
    assert {r.ts for r in readings} == {RX}


@pytest.mark.parametrize(
    ("local", "zone", "expected_s"),
    [
        ("2023-05-21T01:06:38", "UTC", 1_684_631_198),  # date -u -d 2023-05-21T01:06:38Z +%s
        ("2023-05-21T01:06:38", "Europe/Madrid", 1_684_623_998),  # CEST +02:00 → 2023-05-20T23:06:38Z
        ("2023-10-29T02:30:00", "Europe/Madrid", 1_698_539_400),  # repeated hour: first one (CEST) → 00:30Z
        ("2023-03-26T02:30:00", "Europe/Madrid", 1_679_794_200),  # skipped hour: read with CET → 01:30Z
    ],
)
def test_timezone_option(local: str, zone: str, expected_s: int) -> None:
    """With `timezone`, Time is local time in that zone (DST edges resolved as documented)."""
    readings = _decode({"Time": local, "SDS0X1": {"PM2.5": 1}}, options={"timezone": zone})
    assert {r.ts for r in readings} == {expected_s * 1_000_000_000}


def test_units_fahrenheit_and_mmhg() -> None:
    """TempUnit F is converted to °C and PressureUnit mmHg to hPa (760 mmHg = 1013.25 hPa)."""
    readings = _decode({"BME280": {"Temperature": 212.0, "Pressure": 760.0}, "TempUnit": "F",
                        "PressureUnit": "mmHg"})
    values = {r.quantity: r.value for r in readings}
    assert values["temperature"] == pytest.approx(100.0)
    assert values["pressure"] == pytest.approx(1013.25, abs=1e-3)


def test_multichannel_energy_arrays_get_channel_tags() -> None:
    """Multi-channel meters report arrays: one reading per channel, tagged channel=1.."""
    readings = _decode({"ENERGY": {"Total": 3.5, "Power": [10, 20], "Voltage": [230, 231]}})
    got = {(r.quantity, r.value, r.tags.get("channel")) for r in readings}
    assert got == {("energy_import", 3.5, None), ("active_power", 10.0, "1"), ("active_power", 20.0, "2"),
                   ("voltage", 230.0, "1"), ("voltage", 231.0, "2")}


def test_energy_keys_only_in_energy_object_and_fields_option() -> None:
    """`Power` outside ENERGY is not read; `fields` maps extra keys (by Object.Key or Key)."""
    doc = {"INA219": {"Power": 3.2, "Voltage": 5.0}, "ANALOG": {"A0": 615}, "ENERGY": {"Power": 7}}
    readings = _decode(doc, options={"fields": {"ANALOG.A0": {"quantity": "noise_laeq", "scale": 0.1}}})
    got = {(r.tags["sensor"], r.quantity, round(r.value, 9)) for r in readings}
    assert got == {("ENERGY", "active_power", 7.0), ("ANALOG", "noise_laeq", 61.5)}


def test_device_id_topic_level_route_and_tags() -> None:
    """Device id = topic level 1 (option topic_level), or the route's; tags carry the sensor object."""
    (r,) = _decode({"S8": {"CarbonDioxide": 600}}, tags={"site": "s"})
    assert (r.device_id, dict(r.tags)) == ("kit-1", {"site": "s", "sensor": "S8"})
    (r,) = _decode({"S8": {"CarbonDioxide": 600}}, topic="city/tele/box-4/SENSOR", options={"topic_level": 2})
    assert r.device_id == "box-4"
    (r,) = _decode({"S8": {"CarbonDioxide": 600}}, device_id="co2-1")
    assert r.device_id == "co2-1"


def test_null_values_are_skipped() -> None:
    """A sensor that failed this period reports null: skipped, the rest still decodes."""
    readings = _decode({"SDS0X1": {"PM2.5": None, "PM10": 5}})
    assert [(r.quantity, r.value) for r in readings] == [("pm10", 5.0)]


@pytest.mark.parametrize(
    ("payload", "topic", "options", "reason"),
    [
        (b'{"SDS0X1":{"PM2.5":1', TOPIC, {}, "malformed JSON"),
        (b'"Online"', TOPIC, {}, "JSON payload is a str"),
        (b'{"SDS0X1":{"PM2.5":"abc"}}', TOPIC, {}, "SDS0X1.PM2.5: 'abc' is not a number"),
        (b'{"SDS0X1":{"PM2.5":"NaN"}}', TOPIC, {}, "not a finite number"),
        (b'{"SDS0X1":{"PM2.5":true}}', TOPIC, {}, "expected a number"),
        (b'{"ENERGY":{"Power":[1,"x"]}}', TOPIC, {}, "ENERGY.Power: 'x' is not a number"),
        (b'{"Time":"2023-05-21T01:06:38"}', TOPIC, {}, "no known sensor values (objects: none)"),
        (b'{"Time":"t","ANALOG":{"A0":5}}', TOPIC, {}, "no known sensor values (objects: ANALOG)"),
        (b'{"BME280":{"Temperature":1},"TempUnit":"K"}', TOPIC, {}, "TempUnit is 'K'"),
        (b'{"BME280":{"Pressure":1},"PressureUnit":"bar"}', TOPIC, {}, "PressureUnit is 'bar'"),
        (b'{"SDS0X1":{"PM2.5":1}}', TOPIC, {"timezone": "Europe/Madrid"}, "has no Time"),
        (b'{"Time":"21/05/2023","SDS0X1":{"PM2.5":1}}', TOPIC, {"timezone": "UTC"}, "not an ISO 8601"),
        (b'{"Time":"2023-05-21T01:06:38","SDS0X1":{"PM2.5":1}}', TOPIC, {"timezone": "Mars/Olympus"},
         "unknown zone"),
        (b'{"SDS0X1":{"PM2.5":1}}', "tele", {}, "has no level 1"),
        (b'{"SDS0X1":{"PM2.5":1}}', TOPIC, {"topic_level": "1"}, "option 'topic_level'"),
        (b'{"Time":"x","Uptime":"1T00:00:00"}', "tele/kit-1/STATE", {}, "not a SENSOR message"),
        (b"Offline", "tele/kit-1/LWT", {}, "not a SENSOR message"),
    ],
)
def test_rejections(payload: bytes, topic: str, options: dict[str, Any], reason: str) -> None:
    """Malformed JSON, wrong types, NaN, nothing known, bad units/options and non-SENSOR topics are rejected."""
    with pytest.raises(DecodeError) as info:
        _decode(payload, topic=topic, options=options)
    assert reason in info.value.reason


def test_encode_round_trip() -> None:
    """The simulator's encoder output decodes back to the same values."""
    payload = tasmota.encode({"PMS5003": {"PM2.5": 8, "PB0.3": 900}, "BME280": {"Temperature": 21.5}},
                             local_time="2024-01-01T12:00:00")
    readings = _decode(payload, options={"timezone": "UTC"})
    assert {(r.quantity, r.value, r.ts) for r in readings} == {
        ("pm2_5", 8.0, 1_704_110_400_000_000_000),  # date -u -d 2024-01-01T12:00:00Z +%s
        ("particles_0_3um", 900.0, 1_704_110_400_000_000_000),
        ("temperature", 21.5, 1_704_110_400_000_000_000),
    }
