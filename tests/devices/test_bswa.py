"""BSWA 308/309: manual examples, answer decoding, framer resync, simulator round trips (incl. unplug/plug).

Byte vectors: BSWA 308/309 user manual pp. 96-102 (easymanua.ls/bswa/308/manual; reference §8b).
"""

from __future__ import annotations

import time

import pytest
import serial

from devices import bswa_slm
from devices.reading import DecodeContext, DecodeError
from devices.registry import get_kind
from simulators.bswa_slm import BswaSlmSimulator
from simulators.faults import FaultPlan

POLL = bytes.fromhex("02 01 43 44 4D 41 31 20 3F 03 25 0D 0A")  # manual p.98: "DMA1 ?" (reference §8b)
SPL_ANSWER = bytes.fromhex("02 01 41 30 2C 30 2C 30 2C 30 37 34 2E 33 2C 30 03 6F 0D 0A")  # manual p.98
ACK = bytes.fromhex("02 01 06 03 06 0D 0A")  # manual p.96: ACK to OUT
OUT_QUERY = bytes.fromhex("02 01 43 4F 55 54 3F 03 32 0D 0A")  # manual p.96: "OUT?"
ALARM_ANSWER = bytes.fromhex("02 01 41 31 30 30 03 70 0D 0A")  # manual p.79: "100"
CTX = DecodeContext(device_id="noise-1", received_ns=99, tags={"site": "plaza"})


def test_poll_request_matches_manual() -> None:
    assert bswa_slm.poll_request({}) == POLL
    assert get_kind("bswa_slm").poll_request is not None
    assert bswa_slm.request("OUT?") == OUT_QUERY
    assert bswa_slm.poll_request({"address": 7})[1] == 7


@pytest.mark.parametrize("frame", [POLL, SPL_ANSWER, ACK, OUT_QUERY, ALARM_ANSWER])
def test_manual_blocks_have_valid_bcc(frame: bytes) -> None:
    assert bswa_slm.frame_error(frame) is None


def test_manual_spl_answer_is_noise_spl_with_its_time_weighting() -> None:
    """The main SPL screen (manual p.98 example) gives noise_spl, not LAeq; its time weighting is the tag."""
    assert bswa_slm.parse_frame(SPL_ANSWER) == (1, 0x41, "0,0,0,074.3,0")
    (reading,) = bswa_slm.decode(SPL_ANSWER, CTX)
    assert (reading.quantity, reading.value, reading.unit, reading.quality) == ("noise_spl", 74.3, "dBA", "good")
    assert reading.tags == {"site": "plaza", "filter": "A", "detector": "fast"}
    (slow,) = bswa_slm.decode(bswa_slm.answer("0,1,0,061.0,0"), CTX)
    assert (slow.quantity, slow.tags["detector"]) == ("noise_spl", "slow")
    assert bswa_slm.encode({"noise_spl": 74.3}) == SPL_ANSWER
    assert ("noise_spl", "dBA") in get_kind("bswa_slm").quantities


def test_peak_screen_is_rejected_with_what_to_do() -> None:
    with pytest.raises(DecodeError) as err:
        bswa_slm.decode(bswa_slm.answer("0,0,1,101.0,0"), CTX)
    assert "PEAK" in err.value.reason and "LEQ" in err.value.reason


def test_noise_spl_windows_average_energetically() -> None:
    """SPL samples in a window: energetic mean (60 and 70 dB → 67.4, not 65), min/max/percentiles kept."""
    from aggregators.windows import WindowEngine, WindowSpec
    from devices.reading import Reading
    from devices.vocabulary import QUANTITIES

    assert QUANTITIES["noise_spl"].units == ("dBA",)
    engine = WindowEngine([WindowSpec.parse("1m")], grace_ns=0)
    t0 = 1_700_000_040 * 10**9  # a minute boundary
    for i, level in enumerate([60.0, 70.0] * 3):
        engine.add(Reading("noise-1", "noise_spl", level, "dBA", t0 + i * 10 * 10**9, {"detector": "fast"}))
    points = engine.advance(t0 + 120 * 10**9)
    (point,) = [p for p in points if p.name == "noise_spl"]
    assert point.value == pytest.approx(67.4036, abs=1e-3)
    assert (point.fields["min"], point.fields["max"], point.fields["count"]) == (60.0, 70.0, 6)


@pytest.mark.parametrize(
    ("text", "quantity", "value", "detector"),
    [
        ("0,0,2,074.3,0", "noise_laeq", 74.3, "fast"),
        ("0,1,3,091.0,0", "noise_lamax", 91.0, "slow"),
        ("0,2,4,035.6,0", "noise_lamin", 35.6, "impulse"),
    ],
)
def test_leq_max_min(text: str, quantity: str, value: float, detector: str) -> None:
    (reading,) = bswa_slm.decode(bswa_slm.answer(text), CTX)
    assert (reading.quantity, reading.value, reading.unit, reading.quality) == (quantity, value, "dBA", "good")
    assert reading.tags == {"site": "plaza", "filter": "A", "detector": detector}
    assert (reading.device_id, reading.ts) == ("noise-1", 99)


def test_overload_flagged_or_rejected() -> None:
    over = bswa_slm.answer("0,0,2,131.2,1")
    under = bswa_slm.answer("0,0,2,020.0,4")
    assert bswa_slm.decode(over, CTX)[0].quality == "overload"
    assert bswa_slm.decode(under, CTX)[0].quality == "under_range"
    with pytest.raises(DecodeError, match="overload"):
        bswa_slm.decode(over, DecodeContext(options={"overload": "reject"}))


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (SPL_ANSWER[:-3] + b"\x6e\r\n", "BCC mismatch"),
        (bswa_slm.answer("2,0,2,074.3,0"), "filter C"),
        (bswa_slm.answer("0,0,1,074.3,0"), "PEAK"),
        (bswa_slm.answer("0,0,2,074.3"), "4 fields"),
        (bswa_slm.answer("0,0,2,07x.3,0"), "level field"),
        (bswa_slm.answer("0,0,9,074.3,0"), "mode field"),
        (bswa_slm.block(1, bswa_slm.TYPE_NAK), "NAK"),
        (POLL, "not an answer"),
        (SPL_ANSWER[:-2] + b"\n\r", "CR LF"),
    ],
)
def test_rejections(frame: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        bswa_slm.decode(frame, CTX)
    assert reason in err.value.reason


def test_ack_and_address_check() -> None:
    assert bswa_slm.decode(ACK, CTX) == []
    with pytest.raises(DecodeError, match="address 1, expected 2"):
        bswa_slm.decode(bswa_slm.answer("0,0,2,050.0,0", 1), DecodeContext(options={"address": 2}))


def test_encode_round_trip() -> None:
    for quantity in ("noise_laeq", "noise_lamax", "noise_lamin"):
        for level in (20.0, 55.5, 99.9, 140.0):
            (r,) = bswa_slm.decode(bswa_slm.encode({quantity: level}), CTX)
            assert (r.quantity, r.value) == (quantity, level)


def test_framer_resync() -> None:
    good = bswa_slm.answer("0,0,2,061.4,0")
    stream = b"\x0d\x0a\x00" + good[:9] + ACK + b"\x02\x01A0,0" + b"\x7f" + good + SPL_ANSWER[:-3] + b"\x00\r\n" + good
    framer = bswa_slm.make_framer()
    out = [x for i in range(0, len(stream), 6) for x in framer.feed(stream[i : i + 6])]
    frames = [x for x in out if isinstance(x, bytes)]
    errors = [x for x in out if isinstance(x, DecodeError)]
    assert frames == [ACK, good, good]
    assert any("BCC" in e.reason for e in errors)
    assert any("garbage" in e.reason for e in errors)


# --- simulator --------------------------------------------------------------------------------------------

def _read_blocks(ser: serial.Serial, want: int, timeout_s: float = 3.0) -> list[bytes]:
    framer = bswa_slm.make_framer()
    frames: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(frames) < want and time.monotonic() < deadline:
        frames += [x for x in framer.feed(ser.read(max(1, ser.in_waiting))) if isinstance(x, bytes)]
    return frames


def test_simulator_polled_round_trip() -> None:
    kind = get_kind("bswa_slm")
    assert kind.poll_request is not None
    with BswaSlmSimulator(seed=6, address=3) as sim, serial.serial_for_url(sim.port, 9600, timeout=0.2) as ser:
        assert ser.read(16) == b""
        for _ in range(3):
            ser.write(kind.poll_request({"address": 3}))
            (frame,) = _read_blocks(ser, 1)
            readings = kind.decode(frame, DecodeContext(options={"address": 3}))
            assert {r.quantity: r.value for r in readings} == sim.last_values
        ser.write(bswa_slm.request(bswa_slm.POLL_TEXT, 4))  # another meter's address: no answer
        assert ser.read(16) == b""
        ser.write(bswa_slm.request("XYZ", 3))
        (nak,) = _read_blocks(ser, 1)
        assert nak[2] == bswa_slm.TYPE_NAK


def test_simulator_continuous_return_and_max_mode() -> None:
    with BswaSlmSimulator(seed=2, period_s=0.05, mode=3) as sim, serial.serial_for_url(
        sim.port, 9600, timeout=0.2
    ) as ser:
        ser.write(bswa_slm.request("DMA2 ?"))
        frames = _read_blocks(ser, 4)
        assert len(frames) >= 4
        history = list(sim.history)
        for frame in frames:
            (r,) = bswa_slm.decode(frame, CTX)
            assert r.quantity == "noise_lamax" and {r.quantity: r.value} in history
        ser.write(bswa_slm.request("DMA0 ?"))
        time.sleep(0.3)
        assert sim.streaming is False


def test_simulator_unplug_and_replug() -> None:
    plan = FaultPlan(reconnect_after_s=0.3)
    with BswaSlmSimulator(seed=1, period_s=0.05, faults=plan) as sim:
        stable = sim.stable_port
        first_port = sim.port
        with serial.serial_for_url(stable, 9600, timeout=0.2) as ser:
            ser.write(bswa_slm.poll_request({}))
            assert len(_read_blocks(ser, 1)) == 1
            sim.faults.force("disconnect")
            deadline = time.monotonic() + 2.0
            with pytest.raises(serial.SerialException):  # the adapter is pulled out
                while time.monotonic() < deadline:
                    ser.write(bswa_slm.poll_request({}))
                    ser.read(32)
        deadline = time.monotonic() + 2.0
        while sim.port == first_port and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sim.faults.counts["disconnect"] == 1
        time.sleep(0.1)
        with serial.serial_for_url(stable, 9600, timeout=0.2) as ser:  # the stable link follows the new pty
            ser.write(bswa_slm.poll_request({}))
            (frame,) = _read_blocks(ser, 1)
            assert bswa_slm.decode(frame, CTX)[0].value == sim.last_values["noise_laeq"]


def test_simulator_on_the_spl_screen_gives_noise_spl() -> None:
    kind = get_kind("bswa_slm")
    assert kind.poll_request is not None
    with BswaSlmSimulator(seed=4, mode=0, detector=1) as sim, serial.serial_for_url(sim.port, 9600,
                                                                                    timeout=0.2) as ser:
        ser.write(kind.poll_request({}))
        (frame,) = _read_blocks(ser, 1)
        (reading,) = kind.decode(frame, CTX)
        assert {reading.quantity: reading.value} == sim.last_values
        assert (reading.quantity, reading.tags["detector"]) == ("noise_spl", "slow")
