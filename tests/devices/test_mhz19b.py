"""MH-Z19B: reference commands, replies, warm-up, framer resync, polled simulator round trip over pyserial."""

from __future__ import annotations

import time

import pytest
import serial

from devices import mhz19b
from devices.reading import DecodeContext, DecodeError
from devices.registry import get_kind
from simulators.faults import FaultPlan
from simulators.mhz19b import Co2OccupancySignal, Mhz19bSimulator

CTX = DecodeContext(device_id="co2-aula-3", received_ns=7, tags={"room": "3"})


@pytest.mark.parametrize(
    ("frame", "wire"),
    [
        (mhz19b.read_co2(), "FF 01 86 00 00 00 00 00 79"),  # reference §3
        (mhz19b.abc(True), "FF 01 79 A0 00 00 00 00 E6"),  # reference §3 table
        (mhz19b.abc(False), "FF 01 79 00 00 00 00 00 86"),  # reference §3 table
        (mhz19b.zero_calibration(), "FF 01 87 00 00 00 00 00 78"),  # reference §3 table
        (mhz19b.span_calibration(2000), "FF 01 88 07 D0 00 00 00 A0"),  # reference §3 table
        (mhz19b.span_calibration(1000), "FF 01 88 03 E8 00 00 00 8C"),  # reference §3 table
        (mhz19b.detection_range(5000), "FF 01 99 00 00 00 13 88 CB"),  # reference §3 table
    ],
)
def test_command_builders(frame: bytes, wire: str) -> None:
    assert frame == bytes.fromhex(wire)


def test_kind_poll_request() -> None:
    kind = get_kind("mhz19b")
    assert kind.poll_request is not None
    assert kind.poll_request({}) == bytes.fromhex("FF 01 86 00 00 00 00 00 79")  # reference §3


def test_reply_decode() -> None:
    # 0x01F4 = 500 ppm, byte 4 = 0x43 → 27 °C internal; checksum = 0x100 - (86+01+F4+43+00+00+00) & 0xFF = 0x42.
    frame = bytes.fromhex("FF 86 01 F4 43 00 00 00 42")
    readings = mhz19b.decode(frame, CTX)
    assert [(r.quantity, r.value, r.unit) for r in readings] == [("co2", 500.0, "ppm")]
    assert readings[0].device_id == "co2-aula-3" and readings[0].tags == {"room": "3"}
    reply = mhz19b.parse_reply(frame)
    assert (reply.co2_ppm, reply.internal_temperature_c, reply.status) == (500, 27, 0)
    assert all(r.quantity != "temperature" for r in readings)  # internal temperature is never ambient


def test_warm_up_reply_rejected() -> None:
    # All-zero payload while preheating (reference §3, PyPMS): FF 86 00.. checksum 0x100 - 0x86 = 0x7A.
    with pytest.raises(DecodeError) as err:
        mhz19b.decode(bytes.fromhex("FF 86 00 00 00 00 00 00 7A"), CTX)
    assert err.value.reason == "warming up"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("FF 86 01 F4 43 00 00 00 43", "checksum mismatch"),
        ("FE 86 01 F4 43 00 00 00 42", "starts with fe"),
        ("FF 86 01 F4 43 00 00 42", "8 bytes"),
        ("FF 01 86 00 00 00 00 00 79", "not to read CO2"),  # our own request echoed on an RS-485 adapter
    ],
)
def test_bad_frames(frame: str, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        mhz19b.decode(bytes.fromhex(frame), CTX)
    assert reason in err.value.reason


def test_config_reply_gives_no_readings() -> None:
    body = bytes.fromhex("FF 79 01 00 00 00 00 00")
    frame = body + bytes(((0x100 - sum(body[1:])) & 0xFF,))
    assert mhz19b.decode(frame, CTX) == []


def test_encode_round_trip() -> None:
    for ppm in (0, 400, 415, 1234, 5000, 10000, 65535):
        frame = mhz19b.encode({"co2": ppm}, internal_temperature_c=31)
        if ppm == 0:  # zero ppm with a temperature byte is not a warm-up frame
            assert mhz19b.parse_reply(frame).internal_temperature_c == 31
        assert [r.value for r in mhz19b.decode(frame, CTX)] == [float(ppm)]


def test_framer_resync() -> None:
    good = mhz19b.encode({"co2": 812})
    stream = b"\x00\xff\xff" + good[:5] + good + b"junk" + good
    framer = mhz19b.make_framer()
    out = [x for i in range(0, len(stream), 4) for x in framer.feed(stream[i : i + 4])]
    assert [x for x in out if isinstance(x, bytes)] == [good, good]
    errors = [x for x in out if isinstance(x, DecodeError)]
    assert any("checksum" in e.reason for e in errors)


def test_occupancy_signal_shape() -> None:
    monday_10h = 4 * 86400 + 10 * 3600  # 1970-01-05 was a Monday
    sunday_10h = 3 * 86400 + 10 * 3600
    assert Co2OccupancySignal.occupancy(monday_10h) > 0.5
    assert Co2OccupancySignal.occupancy(sunday_10h) == 0.0
    assert Co2OccupancySignal.occupancy(4 * 86400 + 3 * 3600) == 0.0
    sig = Co2OccupancySignal(seed=1)
    assert sig.value_at(monday_10h) > 1200  # occupied classroom
    assert sig.value_at(sunday_10h + 7 * 86400) < 500  # empty room: near outdoor air


# --- simulator round trip through pyserial ---------------------------------------------------------------

def _poll(ser: serial.Serial, request: bytes, timeout_s: float = 2.0) -> tuple[list[bytes], list[DecodeError]]:
    framer = mhz19b.make_framer()
    ser.write(request)
    frames: list[bytes] = []
    errors: list[DecodeError] = []
    deadline = time.monotonic() + timeout_s
    while not frames and time.monotonic() < deadline:
        for item in framer.feed(ser.read(9)):
            if isinstance(item, bytes):
                frames.append(item)
            else:
                errors.append(item)
    return frames, errors


def test_simulator_polled_round_trip() -> None:
    kind = get_kind("mhz19b")
    assert kind.poll_request is not None
    with Mhz19bSimulator(seed=5) as sim, serial.serial_for_url(sim.port, 9600, timeout=0.2) as ser:
        assert ser.read(9) == b""  # request/response only: nothing unsolicited
        for _ in range(3):
            frames, errors = _poll(ser, kind.poll_request({}))
            assert len(frames) == 1 and not errors
            readings = kind.decode(frames[0], CTX)
            assert {r.quantity: r.value for r in readings} == sim.last_values
        ser.write(mhz19b.abc(False) + mhz19b.span_calibration(2000))
        time.sleep(0.3)
        assert sim.abc_on is False and sim.span_ppm == 2000


def test_simulator_warm_up_then_values() -> None:
    with Mhz19bSimulator(seed=2, warmup_s=0.4) as sim, serial.serial_for_url(sim.port, 9600, timeout=0.2) as ser:
        frames, _ = _poll(ser, mhz19b.read_co2())
        with pytest.raises(DecodeError, match="warming up"):
            mhz19b.decode(frames[0], CTX)
        time.sleep(0.5)
        frames, _ = _poll(ser, mhz19b.read_co2())
        assert mhz19b.decode(frames[0], CTX)[0].value == sim.last_values["co2"]


def test_simulator_slow_reply_and_silence() -> None:
    with Mhz19bSimulator(seed=9, faults=FaultPlan(slow_reply_s=0.3)) as sim, serial.serial_for_url(
        sim.port, 9600, timeout=0.1
    ) as ser:
        ser.write(mhz19b.read_co2())
        assert ser.read(9) == b""  # not within 100 ms
        frames, _ = _poll(ser, b"", timeout_s=1.0)
        assert len(frames) == 1
        sim.faults.force("silence")
        frames, _ = _poll(ser, mhz19b.read_co2(), timeout_s=0.8)
        assert frames == [] and sim.faults.counts["silence"] == 1
