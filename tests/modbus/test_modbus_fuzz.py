"""Hypothesis fuzz of every Modbus decoder: random and mutated reply frames, with and without requests.

Properties: a decoder either returns readings or raises DecodeError, nothing else; a frame whose CRC is
wrong never yields a reading; a valid frame's readings carry only vocabulary quantities with their units.
"""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.kind import DeviceKind, ModbusRead
from devices.modbus_common import read_request
from devices.reading import DecodeContext, DecodeError
from devices.registry import KINDS
from devices.vocabulary import unit_ok

MODBUS_KINDS: list[DeviceKind] = sorted((k for k in KINDS.values() if k.link == "modbus"), key=lambda k: k.name)
OPTIONS: list[dict[str, Any]] = [
    {},
    {"max_gap": 80},
    {"preset": "dph7"},
    {"preset": "float_cdab"},
    {"temperature_register": 1, "max_gap": 4},
    {"type": "s32", "word_order": "DCBA"},
    {"energy_unit": "MWh"},
    {"ignore_status": 0x7F},
    {"type": "f64"},  # invalid on purpose: must still only raise DecodeError
]


def crc_bitwise(data: bytes) -> bytes:
    """Textbook CRC-16/MODBUS (reference §0), independent of the decoder's CRC."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def decode(kind: DeviceKind, frame: bytes, request: bytes | None, options: dict[str, Any]) -> list[Any] | None:
    """Decoded readings, or None on DecodeError; any other exception fails the test."""
    try:
        return kind.decode(frame, DecodeContext(device_id="fuzz", received_ns=1, request=request, options=options))
    except DecodeError:
        return None


@st.composite
def request_and_reply(draw: st.DrawFn) -> tuple[DeviceKind, bytes, bytes, dict[str, Any]]:
    """A kind, a valid read request for it, a CRC-valid reply with random register contents, and options."""
    kind = draw(st.sampled_from(MODBUS_KINDS))
    options = draw(st.sampled_from(OPTIONS))
    address = draw(st.integers(1, 255))
    reads: list[ModbusRead] = []
    if kind.modbus_reads is not None:
        try:
            reads = kind.modbus_reads(options)
        except ValueError:
            reads = []
    use_planned: bool = draw(st.booleans())
    if reads and use_planned:
        read = draw(st.sampled_from(reads))
    else:
        read = ModbusRead(draw(st.sampled_from([3, 4])), draw(st.integers(0, 0x60)), draw(st.integers(1, 40)))
    registers = draw(st.lists(st.integers(0, 0xFFFF), min_size=read.count, max_size=read.count))
    body = struct.pack(f">BBB{read.count}H", address, read.function, 2 * read.count, *registers)
    return kind, read_request(address, read), body + crc_bitwise(body), options


@settings(max_examples=400, deadline=None)
@given(case=request_and_reply())
def test_valid_frames_decode_to_vocabulary_readings_or_decode_error(
    case: tuple[DeviceKind, bytes, bytes, dict[str, Any]],
) -> None:
    kind, request, reply, options = case
    readings = decode(kind, reply, request, options)
    for r in readings or []:
        assert unit_ok(r.quantity, r.unit), (r.quantity, r.unit)
        assert isinstance(r.value, float)
        assert r.device_id == "fuzz"
        assert not math.isfinite(r.value) or abs(r.value) < 1e40


@settings(max_examples=400, deadline=None)
@given(case=request_and_reply(), data=st.data())
def test_any_corruption_of_a_valid_frame_never_yields_readings_with_a_bad_crc(
    case: tuple[DeviceKind, bytes, bytes, dict[str, Any]], data: st.DataObject
) -> None:
    kind, request, reply, options = case
    frame = bytearray(reply)
    position = data.draw(st.integers(0, len(frame) - 1))
    frame[position] ^= data.draw(st.integers(1, 255))  # flip at least one bit somewhere
    if crc_bitwise(bytes(frame[:-2])) == bytes(frame[-2:]):
        return  # cannot happen for a single-byte change (CRC-16 detects all burst errors ≤ 16 bits)
    assert decode(kind, bytes(frame), request, options) is None


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(MODBUS_KINDS),
    frame=st.binary(max_size=300),
    request=st.one_of(st.none(), st.binary(max_size=12)),
    options=st.sampled_from(OPTIONS),
)
def test_random_bytes_only_raise_decode_error(
    kind: DeviceKind, frame: bytes, request: bytes | None, options: dict[str, Any]
) -> None:
    readings = decode(kind, frame, request, options)
    if readings:  # only possible when both frames carry valid CRCs
        assert request is not None
        assert crc_bitwise(frame[:-2]) == frame[-2:]
        assert crc_bitwise(request[:-2]) == request[-2:]


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(MODBUS_KINDS), registers=st.lists(st.integers(-5, 0x1_0005), max_size=130))
def test_decode_registers_only_raises_decode_error(kind: DeviceKind, registers: list[int]) -> None:
    assert kind.decode_registers is not None and kind.modbus_reads is not None
    for read in kind.modbus_reads({}):
        with contextlib.suppress(DecodeError):
            kind.decode_registers(read, registers, DecodeContext(device_id="fuzz"))


def test_every_planned_read_of_every_kind_decodes_a_valid_reply() -> None:
    # Guards the fuzz above against vacuity: valid replies to the planned reads do produce readings.
    assert {k.name for k in MODBUS_KINDS} >= {
        "sdm120",
        "sdm630",
        "senseair_s8",
        "ph_probe",
        "turbidity_probe",
        "conductivity_probe",
        "noise_modbus",
    }
    for kind in MODBUS_KINDS:
        assert kind.modbus_reads is not None
        for read in kind.modbus_reads({}):
            body = struct.pack(f">BBB{read.count}H", 9, read.function, 2 * read.count, *([0] * read.count))
            readings = decode(kind, body + crc_bitwise(body), read_request(9, read), {})
            assert readings, (kind.name, read)
