"""SDS011: datasheet frames and commands, replies, framer resync, simulator round trips over pyserial.

Byte vectors marked "V1.3" are the examples of Nova Fitness "Laser Dust Sensor Control Protocol V1.3", as
transcribed in hjkoskel/sds011 `packet_test.go` (reference §2 sources).
"""

from __future__ import annotations

import time

import pytest
import serial

from devices import sds011
from devices.reading import DecodeContext, DecodeError
from simulators.sds011 import Sds011Simulator

CTX = DecodeContext(device_id="air-sds-1", received_ns=42, tags={"site": "rambla"})
DATA_FRAME = bytes.fromhex("AA C0 D4 04 3A 0A A1 60 1D AB")  # V1.3: PM2.5 123.6, PM10 261.8, id A160


def _values(frame: bytes) -> dict[str, float]:
    return {r.quantity: r.value for r in sds011.decode(frame, CTX)}


def test_datasheet_data_frame() -> None:
    readings = sds011.decode(DATA_FRAME, CTX)
    assert [(r.quantity, r.value, r.unit) for r in readings] == [
        ("pm2_5", 123.6, "ug/m3"),
        ("pm10", 261.8, "ug/m3"),
    ]
    assert all(r.device_id == "air-sds-1" and r.ts == 42 and r.tags == {"site": "rambla"} for r in readings)


def test_sensor_id_names_the_device_only_when_none_configured() -> None:
    readings = sds011.decode(DATA_FRAME, DecodeContext())
    assert {r.device_id for r in readings} == {"sds011-a160"}


def test_encoder_reproduces_datasheet_frame() -> None:
    assert sds011.encode({"pm2_5": 123.6, "pm10": 261.8}, device_id=0xA160) == DATA_FRAME


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (DATA_FRAME[:8] + b"\x1e\xab", "checksum mismatch"),
        (DATA_FRAME[:9] + b"\xac", "ends with ac"),
        (b"\xaa\xc1" + DATA_FRAME[2:], "neither c0"),
        (DATA_FRAME[:9], "9 bytes"),
    ],
)
def test_bad_frames_rejected(frame: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        sds011.decode(frame, CTX)
    assert reason in err.value.reason


@pytest.mark.parametrize(
    ("args", "wire"),
    [
        (("query",), "AA B4 04 00 00 00 00 00 00 00 00 00 00 00 00 FF FF 02 AB"),  # V1.3 / ref §2
        (("query", 0, 0xA160), "AA B4 04 00 00 00 00 00 00 00 00 00 00 00 00 A1 60 05 AB"),  # V1.3
        (("get_mode", 0, 0xFFFF), "AA B4 02 00 00 00 00 00 00 00 00 00 00 00 00 FF FF 00 AB"),  # V1.3
        (("mode_query", 0, 0xA160), "AA B4 02 01 01 00 00 00 00 00 00 00 00 00 00 A1 60 05 AB"),  # V1.3
        (("mode_active",), "AA B4 02 01 00 00 00 00 00 00 00 00 00 00 00 FF FF 01 AB"),  # ref §2 (PyPMS)
        (("sleep",), "AA B4 06 01 00 00 00 00 00 00 00 00 00 00 00 FF FF 05 AB"),  # ref §2 (PyPMS)
        (("work",), "AA B4 06 01 01 00 00 00 00 00 00 00 00 00 00 FF FF 06 AB"),  # ref §2 (PyPMS)
        (("sleep", 0, 0xA160), "AA B4 06 01 00 00 00 00 00 00 00 00 00 00 00 A1 60 08 AB"),  # V1.3
        (("get_sleep", 0, 0xA160), "AA B4 06 00 00 00 00 00 00 00 00 00 00 00 00 A1 60 07 AB"),  # V1.3
        (("working_period", 1, 0xA160), "AA B4 08 01 01 00 00 00 00 00 00 00 00 00 00 A1 60 0B AB"),  # V1.3
        (("working_period", 0, 0xA160), "AA B4 08 01 00 00 00 00 00 00 00 00 00 00 00 A1 60 0A AB"),  # V1.3
        (("get_working_period", 0, 0xA160), "AA B4 08 00 00 00 00 00 00 00 00 00 00 00 00 A1 60 09 AB"),  # V1.3
        (("firmware", 0, 0xA160), "AA B4 07 00 00 00 00 00 00 00 00 00 00 00 00 A1 60 08 AB"),  # V1.3
        (("set_device_id", 0xA001, 0xA160), "AA B4 05 00 00 00 00 00 00 00 00 00 00 A0 01 A1 60 A7 AB"),  # ref §2
    ],
)
def test_commands(args: tuple, wire: str) -> None:
    frame = sds011.command(*args)
    assert frame == bytes.fromhex(wire)
    assert sds011.command_error(frame) is None


def test_command_arguments_checked() -> None:
    with pytest.raises(ValueError, match="working period"):
        sds011.command("working_period", 31)
    with pytest.raises(ValueError, match="unknown SDS011 command"):
        sds011.command("reset")


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("AA C5 02 00 00 00 A1 60 03 AB", sds011.Sds011Reply(2, False, 0, 0xA160)),  # V1.3: active mode
        ("AA C5 02 01 01 00 A1 60 05 AB", sds011.Sds011Reply(2, True, 1, 0xA160)),  # V1.3: set query mode
        ("AA C5 06 01 00 00 A1 60 08 AB", sds011.Sds011Reply(6, True, 0, 0xA160)),  # V1.3: set sleep
        ("AA C5 06 00 01 00 A1 60 08 AB", sds011.Sds011Reply(6, False, 1, 0xA160)),  # V1.3: working
        ("AA C5 06 00 00 00 A1 60 07 AB", sds011.Sds011Reply(6, False, 0, 0xA160)),  # V1.3 erratum: sleeping
        ("AA C5 08 00 02 00 A1 60 0B AB", sds011.Sds011Reply(8, False, 2, 0xA160)),  # V1.3: period 2 min
        ("AA C5 05 00 00 00 A0 01 A6 AB", sds011.Sds011Reply(5, True, 0xA001, 0xA001)),  # ref §2: new id
        ("AA C5 07 0F 07 0A A1 60 28 AB", sds011.Sds011Reply(7, False, 0, 0xA160, (15, 7, 10))),  # V1.3
    ],
)
def test_replies(wire: str, expected: sds011.Sds011Reply) -> None:
    frame = bytes.fromhex(wire)
    assert sds011.parse_reply(frame) == expected
    assert sds011.decode(frame, CTX) == []


def test_framer_resyncs_on_header_tail_and_checksum() -> None:
    reply = bytes.fromhex("AA C5 06 01 00 00 A1 60 08 AB")
    other = sds011.encode({"pm2_5": 5.5, "pm10": 9.1})
    stream = b"\x01\xaa\x02zz" + DATA_FRAME[:6] + DATA_FRAME + reply + b"\xaa\xab" + other
    framer = sds011.make_framer()
    out = [x for i in range(0, len(stream), 3) for x in framer.feed(stream[i : i + 3])]
    frames = [x for x in out if isinstance(x, bytes)]
    errors = [x for x in out if isinstance(x, DecodeError)]
    assert frames == [DATA_FRAME, reply, other]
    assert len(errors) >= 2
    assert any("garbage" in e.reason for e in errors)


def test_round_trip_resolution() -> None:
    for pm25, pm10 in [(0.0, 0.0), (0.1, 0.2), (35.4, 50.0), (999.9, 999.9), (6553.5, 6553.5)]:
        assert _values(sds011.encode({"pm2_5": pm25, "pm10": pm10})) == {"pm2_5": pm25, "pm10": pm10}


# --- simulator round trips through pyserial --------------------------------------------------------------

def _collect(ser: serial.Serial, want: int, timeout_s: float = 4.0) -> tuple[list[bytes], list[DecodeError]]:
    framer = sds011.make_framer()
    frames: list[bytes] = []
    errors: list[DecodeError] = []
    deadline = time.monotonic() + timeout_s
    while len(frames) < want and time.monotonic() < deadline:
        for item in framer.feed(ser.read(32)):
            if isinstance(item, bytes):
                frames.append(item)
            else:
                errors.append(item)
    return frames, errors


def test_simulator_active_stream() -> None:
    with Sds011Simulator(seed=11, period_s=0.05) as sim, serial.serial_for_url(sim.port, 9600, timeout=0.2) as ser:
        frames, errors = _collect(ser, 4)
        assert len(frames) >= 4 and not errors
        history = list(sim.history)
        assert all(_values(f) in history for f in frames)


def test_simulator_query_mode_sleep_and_commands() -> None:
    with Sds011Simulator(seed=3, period_s=0.05) as sim, serial.serial_for_url(sim.port, 9600, timeout=0.3) as ser:
        ser.write(sds011.command("mode_query"))
        time.sleep(0.3)
        assert sim.query_mode and not sim.streaming
        ser.reset_input_buffer()
        ser.write(sds011.command("query"))
        frames, _ = _collect(ser, 1)
        assert frames[0][1] == 0xC0 and _values(frames[0]) == sim.last_values
        ser.write(sds011.command("firmware"))
        frames, _ = _collect(ser, 1)
        assert sds011.parse_reply(frames[0]).firmware == (18, 11, 16)
        ser.write(sds011.command("sleep"))
        frames, _ = _collect(ser, 1)
        assert sds011.parse_reply(frames[0]) == sds011.Sds011Reply(6, True, 0, 0xA160)
        ser.write(sds011.command("query"))  # asleep: ignored
        assert ser.read(10) == b""
        ser.write(sds011.command("query", device_id=0x1234))  # another sensor's id: ignored
        assert ser.read(10) == b""
        ser.write(sds011.command("work") + sds011.command("mode_active"))
        frames, _ = _collect(ser, 4)
        replies = [sds011.parse_reply(f) for f in frames if f[1] == 0xC5]
        assert [r.command for r in replies] == [6, 2]
        assert any(f[1] == 0xC0 for f in frames)


def test_simulator_interleaved_replies_and_faults() -> None:
    with Sds011Simulator(seed=8, period_s=0.03) as sim, serial.serial_for_url(sim.port, 9600, timeout=0.2) as ser:
        ser.write(sds011.command("get_working_period"))
        frames, _ = _collect(ser, 6)
        replies = [f for f in frames if f[1] == 0xC5]
        assert len(replies) == 1 and sds011.parse_reply(replies[0]) == sds011.Sds011Reply(8, False, 0, 0xA160)
        sim.faults.force("bad_checksum")
        sim.faults.force("garbage")
        more, errors = _collect(ser, 6)
        assert any("checksum" in e.reason for e in errors)
        assert sim.faults.counts["bad_checksum"] == 1 and sim.faults.counts["garbage"] == 1
        history = list(sim.history)
        assert all(_values(f) in history for f in frames + more if f[1] == 0xC0)
