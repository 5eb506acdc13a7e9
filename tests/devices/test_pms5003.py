"""PMS5003 / PMS5003T: reference frames, commands, acks, framer resync, and simulator round trips over pyserial."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import pytest
import serial

from devices import pms5003, pms5003t
from devices.kind import Framer
from devices.reading import DecodeContext, DecodeError, Reading
from devices.vocabulary import QUANTITIES
from simulators.faults import FaultInjector, FaultPlan
from simulators.pms5003 import Pms5003Simulator, Pms5003tSimulator

CTX = DecodeContext(device_id="air-pm-1", received_ns=1_700_000_000_000_000_000, tags={"site": "plaza"})

# Reference §1 worked example: CF1 PM1/2.5/10 = 0/8/8, atm 0/8/8, counts 210/70/45/30/0/0, reserved 97 00,
# checksum 0x02C5. Rebuilt here word by word from the table (not with the encoder under test).
REF_WORDS = (0, 8, 8, 0, 8, 8, 210, 70, 45, 30, 0, 0)
REF_FRAME = struct.pack(">2sH12H2s", b"BM", 28, *REF_WORDS, b"\x97\x00") + b"\x02\xc5"


Decoder = Callable[[bytes, DecodeContext], list[Reading]]


def _values(frame: bytes, decoder: Decoder = pms5003.decode) -> dict[str, float]:
    return {r.quantity: r.value for r in decoder(frame, CTX)}


def test_reference_frame_checksum_and_values() -> None:
    assert len(REF_FRAME) == 32
    assert pms5003.frame_error(REF_FRAME) is None
    readings = pms5003.decode(REF_FRAME, CTX)
    assert [r.value for r in readings] == [float(v) for v in REF_WORDS]
    assert {r.quantity: r.value for r in readings}["pm2_5"] == 8.0
    assert all(r.device_id == "air-pm-1" and r.ts == CTX.received_ns for r in readings)
    assert readings[0].tags == {"site": "plaza"}
    assert readings[6].unit == "1/0.1L"


def test_encoder_reproduces_reference_frame() -> None:
    values = {q: float(v) for (q, _), v in zip(pms5003.FIELDS, REF_WORDS, strict=True)}
    assert pms5003.encode(values) == REF_FRAME


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: f[:30] + b"\x02\xc6", "checksum mismatch"),
        (lambda f: f[:2] + b"\x00\x14" + f[4:], "length field"),
        (lambda f: b"BN" + f[2:], "does not start"),
        (lambda f: f[:31], "31 bytes"),
    ],
)
def test_bad_frames_rejected_with_reason(mutate: Callable[[bytes], bytes], reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        pms5003.decode(mutate(REF_FRAME), CTX)
    assert reason in err.value.reason


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("read", "42 4D E2 00 00 01 71"),  # reference §1 table
        ("wake", "42 4D E4 00 01 01 74"),  # reference §1 table
        ("mode_passive", "42 4D E1 00 00 01 70"),  # PyPMS pmsx003.py commands
        ("mode_active", "42 4D E1 00 01 01 71"),  # PyPMS pmsx003.py commands
        ("sleep", "42 4D E4 00 00 01 73"),  # PyPMS pmsx003.py commands
    ],
)
def test_commands(name: str, wire: str) -> None:
    assert pms5003.command(name) == bytes.fromhex(wire)


def test_unknown_command_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown PMS command"):
        pms5003.command("reboot")


def test_ack_decodes_to_no_readings() -> None:
    # Passive-mode ack as reported by driver authors (header 42 4D 00 04, checksum = sum of bytes 0..5, ref §1).
    ack = bytes.fromhex("42 4D 00 04 E1 00 01 74")
    assert pms5003.parse_ack(ack) == (0xE1, 0x00)
    assert pms5003.decode(ack, CTX) == []
    with pytest.raises(DecodeError, match="ack checksum"):
        pms5003.decode(ack[:7] + b"\x75", CTX)


def test_framer_resyncs_after_garbage_and_cut_frame() -> None:
    good = pms5003.encode({"pm2_5": 17, "pm10": 23})
    ack = bytes.fromhex("42 4D 00 04 E4 00 01 77")  # sleep ack: 42+4D+00+04+E4+00 = 0x177
    stream = b"\x00\x13garbage" + REF_FRAME[:20] + REF_FRAME + b"\xff" + ack + good
    framer = pms5003.make_framer()
    out = []
    for i in range(0, len(stream), 7):  # arrive in small pieces, as from a UART
        out += list(framer.feed(stream[i : i + 7]))
    frames = [x for x in out if isinstance(x, bytes)]
    errors = [x for x in out if isinstance(x, DecodeError)]
    assert frames == [REF_FRAME, ack, good]
    assert errors, "garbage and the cut frame must be reported"
    assert any("garbage" in e.reason for e in errors)
    assert any("checksum" in e.reason for e in errors), "the cut frame fails its checksum"


def test_encode_decode_round_trip_clamps() -> None:
    values = {q: float(i * 37 + 1) for i, (q, _) in enumerate(pms5003.FIELDS)}
    assert _values(pms5003.encode(values)) == values
    assert _values(pms5003.encode({"pm2_5": 70000, "pm10": -5}))["pm2_5"] == 65535.0


# --- PMS5003T -------------------------------------------------------------------------------------------

def _t_frame(temp_word: bytes, rh_word: bytes) -> bytes:
    body = struct.pack(">2sH10H", b"BM", 28, 1, 2, 3, 1, 2, 3, 300, 90, 20, 4) + temp_word + rh_word + b"\x97\x00"
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


def test_pms5003t_reference_temperature_and_humidity() -> None:
    # Reference §1: words 11-12 `00 D4` = 21.2 °C and `00 E0` = 22.4 %.
    values = _values(_t_frame(b"\x00\xd4", b"\x00\xe0"), pms5003t.decode)
    assert values["temperature"] == pytest.approx(21.2)
    assert values["relative_humidity"] == pytest.approx(22.4)
    assert values["particles_2_5um"] == 4.0
    assert "particles_5_0um" not in values and "particles_10um" not in values


def test_pms5003t_sub_zero_is_signed() -> None:
    # 0xFFDE as two's complement = -34 → -3.4 °C (documented choice: signed word).
    assert _values(_t_frame(b"\xff\xde", b"\x03\x20"), pms5003t.decode)["temperature"] == pytest.approx(-3.4)


def test_pms5003t_round_trip() -> None:
    values = {"pm2_5": 12.0, "pm10": 20.0, "temperature": -7.5, "relative_humidity": 81.3}
    decoded = _values(pms5003t.encode(values), pms5003t.decode)
    assert decoded["temperature"] == pytest.approx(-7.5)
    assert decoded["relative_humidity"] == pytest.approx(81.3)
    assert decoded["pm2_5"] == 12.0


# --- simulator round trips through the real pyserial path ------------------------------------------------

def _collect(
    ser: serial.Serial, framer: Framer, want: int, timeout_s: float = 4.0
) -> tuple[list[bytes], list[DecodeError]]:
    frames: list[bytes] = []
    errors: list[DecodeError] = []
    deadline = time.monotonic() + timeout_s
    while len(frames) < want and time.monotonic() < deadline:
        for item in framer.feed(ser.read(64)):
            if isinstance(item, bytes):
                frames.append(item)
            else:
                errors.append(item)
    return frames, errors


def test_simulator_active_mode_round_trip() -> None:
    with Pms5003Simulator(seed=7, period_s=0.05) as sim, serial.serial_for_url(sim.port, 9600, timeout=0.2) as ser:
        frames, errors = _collect(ser, pms5003.make_framer(), 4)
        assert len(frames) >= 4 and not errors
        history = list(sim.history)
        for frame in frames:
            assert _values(frame) in history
        assert _values(frames[-1])["pm2_5"] > 0


def test_simulator_passive_read_sleep_wake() -> None:
    with Pms5003Simulator(seed=2, period_s=0.05) as sim, serial.serial_for_url(sim.port, 9600, timeout=0.3) as ser:
        ser.write(pms5003.command("mode_passive"))
        time.sleep(0.3)
        ser.reset_input_buffer()
        assert sim.streaming is False
        ser.write(pms5003.command("read"))
        frames, _ = _collect(ser, pms5003.make_framer(), 1)
        assert len(frames) == 1
        assert _values(frames[0]) == sim.last_values
        ser.write(pms5003.command("sleep"))
        frames, _ = _collect(ser, pms5003.make_framer(), 1)
        assert pms5003.parse_ack(frames[0]) == (0xE4, 0)
        ser.write(pms5003.command("read"))  # asleep: no answer
        assert ser.read(32) == b""
        ser.write(pms5003.command("wake") + pms5003.command("mode_active"))
        frames, _ = _collect(ser, pms5003.make_framer(), 2)
        assert len(frames) >= 2 and all(_values(f) in list(sim.history) for f in frames)


def test_simulator_faults_are_rejected_and_stream_recovers() -> None:
    plan = FaultPlan(garbage_len=(3, 9))
    with Pms5003Simulator(seed=4, period_s=0.04, faults=plan) as sim, serial.serial_for_url(
        sim.port, 9600, timeout=0.2
    ) as ser:
        framer = pms5003.make_framer()
        _collect(ser, framer, 1)
        sim.faults.force("bad_checksum")
        sim.faults.force("cut_frame")
        sim.faults.force("garbage")
        frames, errors = _collect(ser, framer, 6)
        assert len(frames) >= 6
        assert sim.faults.counts["bad_checksum"] == 1 and sim.faults.counts["cut_frame"] == 1
        assert any("checksum" in e.reason for e in errors)
        history = list(sim.history)
        assert all(_values(f) in history for f in frames)


def test_pms5003t_simulator_round_trip() -> None:
    with Pms5003tSimulator(seed=5, period_s=0.05) as sim, serial.serial_for_url(sim.port, 9600, timeout=0.2) as ser:
        frames, errors = _collect(ser, pms5003.make_framer(), 3)
        assert len(frames) >= 3 and not errors
        history = list(sim.history)
        for frame in frames:
            assert _values(frame, pms5003t.decode) in history


def test_stuck_and_out_of_range_faults() -> None:
    with Pms5003Simulator(seed=9, period_s=0.03) as sim, serial.serial_for_url(sim.port, 9600, timeout=0.2) as ser:
        framer = pms5003.make_framer()
        _collect(ser, framer, 1)
        sim.faults.force("out_of_range")
        frames, _ = _collect(ser, framer, 3)
        decoded = [_values(f) for f in frames]
        bad = [d for d in decoded if d["pm2_5"] > QUANTITIES["pm2_5"].high or d["pm10"] > QUANTITIES["pm10"].high]
        assert len(bad) == 1, "exactly one frame carries an implausible value for the validator to reject"
        sim.faults.force("stuck")
        _collect(ser, framer, 2)
        frames, _ = _collect(ser, framer, 4)
        assert len({f[4:30] for f in frames[-3:]}) == 1, "a stuck sensor repeats the same data words"


def test_fault_plan_is_reproducible() -> None:
    plan = FaultPlan(bad_checksum=0.2, cut_frame=0.1, garbage=0.2, silence=0.1)
    frame = pms5003.encode({"pm2_5": 10})
    runs = []
    for _ in range(2):
        injector = FaultInjector(plan, seed=42)
        runs.append([injector.frame(frame, checksum_at=31) for _ in range(200)])
    assert runs[0] == runs[1]
    sent = [f for f in runs[0] if f is not None]
    assert 5 < runs[0].count(None) < 40  # silence ≈ 10 %
    assert sum(1 for f in sent if f != frame) > 40  # ≈ 45 % of the sent frames are damaged
    with pytest.raises(ValueError, match="unknown fault"):
        injector.force("lightning")
