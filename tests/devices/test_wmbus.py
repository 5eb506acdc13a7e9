"""Wireless M-Bus water meters: public wmbusmeters telegrams, DIF/VIF decoding, encryption, framer, simulator.

Telegram sources (link CRC removed, as wmbusmeters prints them; the "_" header split is dropped here):
- iPerl: wmbusmeters/wmbusmeters `src/driver_iperl.cc` tests (ids 12345699 and 33225544).
- Aquastream: wmbusmeters/wmbusmeters `drivers/src/aquastream.xmq` test (id 05933237, CI 72, mode 5 but
  already decrypted: the payload starts with 2F 2F).
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
import serial

from devices import wmbus_water
from devices.reading import DecodeContext, DecodeError
from simulators.wmbus_water import HouseholdWaterDraw, WmbusWaterSimulator

IPERL_1 = bytes.fromhex("1E44AE4C9956341268077A36001000" "2F2F0413181E0000023B00002F2F2F2F")
IPERL_2 = bytes.fromhex("1844AE4C4455223368077A55000000" "041389E20100023B0000")
AQUASTREAM = bytes.fromhex(
    "4644B42557920410050E7237329305B42501075B003025"
    "2F2F04130342000084101300000000046D0D30F62B441349180000426CFF2A02FD17000002FD74DB152F2F2F2F2F2F2F"
)
# IPERL_2's header with a volume record whose 4-byte value is cut to 3 bytes (L adjusted).
CUT_RECORD = bytes((14 + 5,)) + IPERL_2[1:15] + b"\x04\x13\x89\xe2\x01"
CTX = DecodeContext(received_ns=123, tags={"district": "norte"})


def _values(telegram: bytes, ctx: DecodeContext = CTX) -> dict[str, float]:
    return {r.quantity: r.value for r in wmbus_water.decode(telegram, ctx)}


def test_iperl_header() -> None:
    h = wmbus_water.parse_header(IPERL_1)
    assert (h.length, h.c_field, h.manufacturer, h.meter_id) == (0x1E, 0x44, "SEN", "12345699")
    assert (h.version, h.device_type, h.ci, h.access_no, h.security_mode) == (0x68, 0x07, 0x7A, 0x36, 0)


def test_iperl_values_match_wmbusmeters() -> None:
    # wmbusmeters expects total_m3 7.704 / max_flow_m3h 0 and total_m3 123.529 / 0.
    assert _values(IPERL_1) == {"water_volume": 7.704, "water_flow": 0.0}
    assert _values(IPERL_2) == {"water_volume": 123.529, "water_flow": 0.0}
    readings = wmbus_water.decode(IPERL_2, CTX)
    assert {r.device_id for r in readings} == {"wmbus-33225544"}
    assert readings[0].tags == {"district": "norte", "meter_id": "33225544", "manufacturer": "SEN"}
    assert readings[0].unit == "m3" and readings[1].unit == "m3/h" and readings[0].ts == 123


def test_configured_device_id_wins() -> None:
    ctx = DecodeContext(device_id="water-block-a", received_ns=1)
    assert {r.device_id for r in wmbus_water.decode(IPERL_1, ctx)} == {"water-block-a"}


def test_aquastream_long_header_and_records() -> None:
    h = wmbus_water.parse_header(AQUASTREAM)
    assert (h.meter_id, h.manufacturer, h.device_type, h.ci, h.security_mode) == ("05933237", "IMT", 7, 0x72, 5)
    # wmbusmeters: total_m3 16.899; tariff-1 total 0 and due-date value 6.217 (storage 1) are not "current".
    assert _values(AQUASTREAM) == {"water_volume": 16.899}
    records = wmbus_water.parse_records(AQUASTREAM[h.payload_offset :])
    by_key = {(r.vif, r.storage, r.tariff): r for r in records}
    assert by_key[(0x13, 1, 0)].value == 6217  # target_m3 6.217
    assert by_key[(0x13, 0, 1)].value == 0  # total_tariff1_m3 0
    assert by_key[(0xFD, 0, 0)].vife in ((0x17,), (0x74,))


def test_meter_time_used_only_on_request() -> None:
    # wmbusmeters: meter_datetime "2023-11-22 16:13".
    utc = wmbus_water.decode(AQUASTREAM, DecodeContext(received_ns=5, options={"meter_time": True}))
    assert utc[0].ts == int(dt.datetime(2023, 11, 22, 16, 13, tzinfo=dt.UTC).timestamp()) * 10**9
    madrid = wmbus_water.decode(
        AQUASTREAM, DecodeContext(options={"meter_time": True, "meter_timezone": "Europe/Madrid"})
    )
    assert madrid[0].ts == utc[0].ts - 3600 * 10**9  # CET = UTC+1 in November
    assert wmbus_water.decode(AQUASTREAM, DecodeContext(received_ns=5))[0].ts == 5


def test_encrypted_telegram_rejected() -> None:
    # Constructed from IPERL_2: CFG 10 05 = security mode 5, one encrypted block; payload unreadable bytes.
    body = bytearray(IPERL_2[1:15])
    body[12:14] = b"\x10\x05"
    body += bytes.fromhex("9A0F3C1D22E07B4F8811AC03D5E6F710")
    telegram = bytes((len(body),)) + bytes(body)
    with pytest.raises(DecodeError) as err:
        wmbus_water.decode(telegram, CTX)
    assert err.value.reason == "encrypted (security mode 5), key needed"


@pytest.mark.parametrize(
    ("telegram", "options", "reason"),
    [
        (IPERL_1[:-1], {}, "length field says 30"),
        (b"\x1e\x45" + IPERL_1[2:], {}, "C field 45"),
        (IPERL_1[:10] + b"\x8d" + IPERL_1[11:], {}, "CI 8d not supported"),
        (IPERL_1[:9] + b"\x04" + IPERL_1[10:], {}, "not a water meter"),
        (IPERL_1, {"meter_ids": ["33225544"]}, "not in options.meter_ids"),
        (CUT_RECORD, {}, "record cut short"),
    ],
)
def test_rejections(telegram: bytes, options: dict, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        wmbus_water.decode(telegram, DecodeContext(options=options))
    assert reason in err.value.reason


def test_volume_vif_multipliers_and_bcd() -> None:
    def telegram(payload: bytes) -> bytes:
        body = IPERL_2[1:15] + payload
        return bytes((len(body),)) + body

    # VIF 0x14 = 10^-2 m³, VIF 0x16 = 1 m³; DIF 0x0C = 8-digit BCD; DIF 0x01 = 8-bit int.
    assert _values(telegram(b"\x04\x14\x10\x27\x00\x00")) == {"water_volume": 100.0}
    assert _values(telegram(b"\x0c\x13\x78\x56\x34\x12")) == {"water_volume": 12345.678}
    assert _values(telegram(b"\x01\x16\x07")) == {"water_volume": 7.0}
    # flow in m³/min (VIF 0x43 = 10^-4 m³/min) is reported in m³/h: 50 × 10^-4 × 60 = 0.3
    assert _values(telegram(b"\x04\x13\x01\x00\x00\x00\x02\x43\x32\x00"))["water_flow"] == pytest.approx(0.3)
    with pytest.raises(DecodeError, match="no current volume"):
        wmbus_water.decode(telegram(b"\x02\xfd\x17\x00\x00"), CTX)


def test_encoder_round_trip() -> None:
    t = wmbus_water.encode(
        {"water_volume": 1234.567, "water_flow": 0.42}, meter_id="87654321", meter_time=dt.datetime(2026, 3, 1, 6, 5)
    )
    assert wmbus_water.telegram_error(t) is None
    ctx = DecodeContext(options={"meter_time": True})
    readings = wmbus_water.decode(t, ctx)
    assert {r.quantity: r.value for r in readings} == {"water_volume": 1234.567, "water_flow": 0.42}
    assert readings[0].ts == int(dt.datetime(2026, 3, 1, 6, 5, tzinfo=dt.UTC).timestamp()) * 10**9
    assert readings[0].tags["meter_id"] == "87654321"


def test_framer_resync_garbage_cut_and_good() -> None:
    stream = b"\x00\x01\x02" + IPERL_1[:20] + IPERL_2 + b"\xff\xfe" + AQUASTREAM + IPERL_1
    framer = wmbus_water.make_framer()
    out = [x for i in range(0, len(stream), 5) for x in framer.feed(stream[i : i + 5])]
    frames = [x for x in out if isinstance(x, bytes)]
    errors = [x for x in out if isinstance(x, DecodeError)]
    assert frames == [IPERL_2, AQUASTREAM, IPERL_1]
    assert errors and sum(len(e.data or b"") for e in errors) == 3 + 20 + 2


# --- signal and simulator ---------------------------------------------------------------------------------

def test_household_draw_is_consistent() -> None:
    draw = HouseholdWaterDraw(seed=3, leak_lph=2.0)
    day = 20000 * 86400
    litres = draw.litres_between(day, day + 86400)
    assert 150 < litres < 900  # a 3-person household uses a few hundred litres a day
    assert draw.flow_lph(day + 3 * 3600) == pytest.approx(2.0)  # 03:00: only the leak flows
    half = draw.litres_between(day, day + 43200) + draw.litres_between(day + 43200, day + 86400)
    assert half == pytest.approx(litres)


def _read_telegrams(ser: serial.Serial, want: int, timeout_s: float = 4.0) -> list[bytes]:
    framer = wmbus_water.make_framer()
    frames: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(frames) < want and time.monotonic() < deadline:
        frames += [x for x in framer.feed(ser.read(64)) if isinstance(x, bytes)]
    return frames


def test_simulator_round_trip() -> None:
    with WmbusWaterSimulator(seed=4, period_s=0.05, meter_id="20250001") as sim, serial.serial_for_url(
        sim.port, 9600, timeout=0.2
    ) as ser:
        frames = _read_telegrams(ser, 3)
        assert len(frames) >= 3
        history = list(sim.history)
        volumes = []
        for frame in frames:
            values = _values(frame, DecodeContext())
            assert values in history
            volumes.append(values["water_volume"])
        assert volumes == sorted(volumes)  # a meter total never goes backwards
        assert wmbus_water.parse_header(frames[0]).meter_id == "20250001"


def test_simulator_encrypted_meter() -> None:
    with WmbusWaterSimulator(seed=4, period_s=0.05, encrypted=True) as sim, serial.serial_for_url(
        sim.port, 9600, timeout=0.2
    ) as ser:
        frames = _read_telegrams(ser, 1)
        with pytest.raises(DecodeError, match="key needed"):
            wmbus_water.decode(frames[0], CTX)
