"""Sensor.Community / airrohr bodies: value types, prefixes, Pa → hPa, device id sources, rejections.

Value types follow reference §9d (airrohr-firmware sendSensorCommunity, ext_def.h) and §8c (DNMS)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from devices import airrohr
from devices.reading import DecodeContext, DecodeError

RX = 1_700_000_000_000_000_000


def _body(*pairs: tuple[str, Any], **extra: Any) -> dict[str, Any]:
    return {"software_version": "NRZ-2020-133",
            "sensordatavalues": [{"value_type": t, "value": v} for t, v in pairs], **extra}


def _decode(doc: Any, **kw: Any) -> list[Any]:
    kw.setdefault("device_id", "air-1")
    payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return airrohr.decode(payload, DecodeContext(received_ns=RX, topic="airrohr/x", **kw))


def test_upload_value_types() -> None:
    """P0/P1/P2/P4, climate and DNMS noise map to the vocabulary; pressure Pa → hPa; receipt time."""
    readings = _decode(_body(("P0", "3.10"), ("P1", "12.30"), ("P2", "8.20"), ("P4", "9.00"),
                             ("temperature", "-3.5"), ("humidity", "99.9"), ("pressure", "98765"),
                             ("noise_LAeq", "55.1"), ("noise_LA_min", "40.0"), ("noise_LA_max", "80.2")))
    assert {r.quantity: (r.value, r.unit) for r in readings} == {
        "pm1_0": (3.1, "ug/m3"), "pm10": (12.3, "ug/m3"), "pm2_5": (8.2, "ug/m3"), "pm4_0": (9.0, "ug/m3"),
        "temperature": (-3.5, "degC"), "relative_humidity": (99.9, "%"), "pressure": (987.65, "hPa"),
        "noise_laeq": (55.1, "dBA"), "noise_lamin": (40.0, "dBA"), "noise_lamax": (80.2, "dBA"),
    }
    assert {r.ts for r in readings} == {RX}


def test_prefixes_stripped_only_for_known_value_types() -> None:
    """`SPS30_P2` → pm2_5 tagged sensor=SPS30; `BME280_pressure_at_sealevel`, `SPS30_N05` are skipped."""
    readings = _decode(_body(("SPS30_P2", "4.0"), ("SPS30_N05", "30.1"), ("BME280_pressure_at_sealevel", "1"),
                             ("BME280_pressure", "100000"), ("HTU21D_humidity", "50")))
    assert {(r.quantity, r.value, r.tags.get("sensor")) for r in readings} == {
        ("pm2_5", 4.0, "SPS30"), ("pressure", 1000.0, "BME280"), ("relative_humidity", 50.0, "HTU21D")}


def test_device_id_sources() -> None:
    """Route id wins; else body esp8266id; else option chip_id; else the API record's sensor id."""
    body = _body(("P1", "1"), esp8266id="13597771")
    assert _decode(body)[0].device_id == "air-1"
    assert _decode(body, device_id="")[0].device_id == "esp8266-13597771"
    assert _decode(_body(("P1", "1")), device_id="", options={"chip_id": 42})[0].device_id == "esp8266-42"
    record = _body(("P1", "1"), sensor={"id": 6179}, timestamp="2024-03-01 10:15:32")
    (r,) = _decode(record, device_id="")
    assert (r.device_id, r.ts) == ("sensor-community-6179", 1_709_288_132_000_000_000)  # date -u -d … +%s


@pytest.mark.parametrize(
    ("doc", "kw", "reason"),
    [
        (b'{"sensordatavalues": [', {}, "malformed JSON"),
        (b'[{"value_type": "P1", "value": "1"}]', {}, "is a list, expected an object"),
        ({"software_version": "x"}, {}, "no 'sensordatavalues' list"),
        ({"sensordatavalues": {"P1": "1"}}, {}, "sensordatavalues is a dict"),
        ({"sensordatavalues": []}, {}, "sensordatavalues is empty"),
        ({"sensordatavalues": ["P1"]}, {}, "sensordatavalues[0] is a str"),
        ({"sensordatavalues": [{"value": "1"}]}, {}, "sensordatavalues[0] has no value_type"),
        ({"sensordatavalues": [{"value_type": "P1"}]}, {}, "sensordatavalues[0] (P1) has no value"),
        (_body(("P1", "12,5")), {}, "P1: '12,5' is not a number"),
        (_body(("P1", "nan")), {}, "not a finite number"),
        (_body(("P2", "NaN")), {}, "not a finite number"),
        (_body(("P2", "inf")), {}, "not a finite number"),
        (_body(("P1", [1])), {}, "expected a number, got a list"),
        (_body(("P1", None)), {}, "expected a number"),
        (_body(("samples", "1"), ("signal_quality", "2")), {}, "no known value type (has: samples, signal_quality)"),
        (_body(("P1", "1")), {"device_id": ""}, "no device id"),
        (_body(("P1", "1"), timestamp="2024-03-01T10:15:32+01:00"), {}, "is not 'YYYY-MM-DD HH:MM:SS' (UTC)"),
        (_body(("P1", "1"), timestamp="2024-13-01 10:15:32"), {}, "not a valid date"),
    ],
)
def test_rejections(doc: Any, kw: dict[str, Any], reason: str) -> None:
    """Missing/wrong-typed parts, NaN strings, nothing known and no device id are DecodeErrors."""
    with pytest.raises(DecodeError) as info:
        _decode(doc, **kw)
    assert reason in info.value.reason


def test_encode_round_trip() -> None:
    """The simulator's encoder output (string values) decodes back, pressure converted to hPa."""
    payload = airrohr.encode({"P1": 20.25, "P2": 10.5, "pressure": 101200.0}, chip_id="777")
    readings = _decode(payload, device_id="")
    assert {(r.device_id, r.quantity, r.value) for r in readings} == {
        ("esp8266-777", "pm10", 20.25), ("esp8266-777", "pm2_5", 10.5), ("esp8266-777", "pressure", 1012.0)}
