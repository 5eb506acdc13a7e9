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
        (b'[{"value_type": "P1", "value": "1"}]', {}, "record [0]: body has no 'sensordatavalues' list"),
        (b'42', {}, "is a int, expected an object or an array of records"),
        (b'[]', {}, "array of records is empty"),
        (b'["x"]', {}, "record [0]: is a str, not an object"),
        ([_body(("samples", "1"), sensor={"id": 1})], {}, "no known value type in any of the 1 records"),
        ([_body(("P1", "1"), sensor={"id": 1}, timestamp="2024-03-01T10:15")], {}, "record [0]: timestamp"),
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
        (_body(("P1", "1"), timestamp="2024-03-01T10:15:32+01:00"), {}, "is not 'YYYY-MM-DD HH:MM:SS' (UTC)"),
        (_body(("P1", "1"), timestamp="2024-13-01 10:15:32"), {}, "not a valid date"),
    ],
)
def test_rejections(doc: Any, kw: dict[str, Any], reason: str) -> None:
    """Missing/wrong-typed parts, NaN strings and nothing known are DecodeErrors (arrays name the record)."""
    with pytest.raises(DecodeError) as info:
        _decode(doc, **kw)
    assert reason in info.value.reason


def test_encode_round_trip() -> None:
    """The simulator's encoder output (string values) decodes back, pressure converted to hPa."""
    payload = airrohr.encode({"P1": 20.25, "P2": 10.5, "pressure": 101200.0}, chip_id="777")
    readings = _decode(payload, device_id="")
    assert {(r.device_id, r.quantity, r.value) for r in readings} == {
        ("esp8266-777", "pm10", 20.25), ("esp8266-777", "pm2_5", 10.5), ("esp8266-777", "pressure", 1012.0)}


def test_api_array_gives_each_records_sensor_and_time() -> None:
    """The data API's array of records: each record's own sensor id and UTC time; foreign sensors skipped."""
    records = [_body(("P1", "1.5"), ("P2", "0.5"), sensor={"id": 6179}, timestamp="2024-03-01 10:15:32"),
               _body(("lat", "48.1"), ("lon", "9.1"), sensor={"id": 6181}, timestamp="2024-03-01 10:15:40"),
               _body(("temperature", "4.5"), sensor={"id": 6180}, timestamp="2024-03-01 10:16:32")]
    readings = _decode(records, device_id="")
    assert [(r.device_id, r.quantity, r.value, r.ts // 10**9) for r in readings] == [
        ("sensor-community-6179", "pm10", 1.5, 1_709_288_132), ("sensor-community-6179", "pm2_5", 0.5, 1_709_288_132),
        ("sensor-community-6180", "temperature", 4.5, 1_709_288_192)]


def test_local_data_json_without_chip_id_gives_readings_without_a_device_id() -> None:
    """data.json has no chip id: nothing is invented; the caller (route, decode command) decides."""
    readings = _decode(_body(("SDS_P1", "27.73"), ("signal", "-41")), device_id="")
    assert {(r.device_id, r.quantity) for r in readings} == {("", "pm10"), ("", "rssi")}


def test_citygw_decode_prints_local_data_json_readings_without_device_id() -> None:
    """`citygw decode --format airrohr --file data.json`: the readings, no device_id (the input has none)."""
    import subprocess
    import sys
    from pathlib import Path

    data_json = Path(__file__).parent / "vectors" / "airrohr" / "local_data_json_without_id" / "input.json"
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "decode", "--format", "airrohr", "--file",
                           str(data_json)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    printed = orjson.loads(proc.stdout)
    assert [(r["quantity"], r["value"]) for r in printed] == [
        ("pm10", 27.73), ("pm2_5", 19.43), ("temperature", 17.0), ("relative_humidity", 34.1), ("rssi", -41.0)]
    assert all("device_id" not in r for r in printed)
    with_chip = subprocess.run([sys.executable, "-m", "gateway.cli", "decode", "--format", "airrohr", "--file",
                                str(data_json), "--device-id", "kit-air-1"], capture_output=True, text=True,
                               timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert with_chip.returncode == 0, with_chip.stderr
    assert {r["device_id"] for r in orjson.loads(with_chip.stdout)} == {"kit-air-1"}
