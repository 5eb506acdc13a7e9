"""Plantower PMS5003 / PMS7003 particulate sensor: the 32-byte data frame (UART 9600 8N1, big-endian words).

Frame: `42 4D`, length u16be = 28, 13 data words, checksum u16be = sum of bytes 0..29 modulo 65536.
Words 1-3 are CF=1 mass, 4-6 atmospheric mass (what we report as pm1_0/pm2_5/pm10), 7-12 particle counts
per 0.1 L, word 13 reserved (PMS7003: version, error code).

Host commands are 7 bytes (`42 4D CMD DATAH DATAL CS16`, see `command`). The 8-byte acknowledgements some
commands get (`42 4D 00 04 CMD DATA CS16`) are not in the datasheet; they are accepted by the framer and
decode to no readings (see `parse_ack`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from devices.framing import StreamFramer
from devices.kind import DeviceKind, register
from devices.reading import DecodeContext, DecodeError, Reading

HEADER = b"\x42\x4d"
FRAME_LEN = 32
ACK_LEN = 8

# Command name → (command byte, data word). Reference §1 and PyPMS `pmsx003.py`.
COMMANDS: dict[str, tuple[int, int]] = {
    "read": (0xE2, 0x0000),  # read one frame in passive mode
    "mode_passive": (0xE1, 0x0000),
    "mode_active": (0xE1, 0x0001),
    "sleep": (0xE4, 0x0000),
    "wake": (0xE4, 0x0001),
}
_WORDS = struct.Struct(">2sH13HH")

# Data words 1..12 in frame order: (quantity, unit).
FIELDS: tuple[tuple[str, str], ...] = (
    ("pm1_0_cf1", "ug/m3"),
    ("pm2_5_cf1", "ug/m3"),
    ("pm10_cf1", "ug/m3"),
    ("pm1_0", "ug/m3"),
    ("pm2_5", "ug/m3"),
    ("pm10", "ug/m3"),
    ("particles_0_3um", "1/0.1L"),
    ("particles_0_5um", "1/0.1L"),
    ("particles_1_0um", "1/0.1L"),
    ("particles_2_5um", "1/0.1L"),
    ("particles_5_0um", "1/0.1L"),
    ("particles_10um", "1/0.1L"),
)


def checksum(data: bytes) -> int:
    """Plantower checksum: the sum of all bytes, modulo 65536."""
    return sum(data) & 0xFFFF


def frame_error(frame: bytes) -> str | None:
    """None when `frame` is a well-formed data frame, else which check failed."""
    if len(frame) != FRAME_LEN:
        return f"frame is {len(frame)} bytes, expected {FRAME_LEN}"
    if frame[:2] != HEADER:
        return "frame does not start with 42 4D"
    if frame[2:4] != b"\x00\x1c":
        return f"length field is {frame[2:4].hex(' ')}, expected 00 1c"
    expected = checksum(frame[:30])
    got = int.from_bytes(frame[30:32], "big")
    if got != expected:
        return f"checksum mismatch: frame says {got:04x}, bytes sum to {expected:04x}"
    return None


def ack_error(frame: bytes) -> str | None:
    """None when `frame` is a well-formed 8-byte command acknowledgement, else which check failed."""
    if len(frame) != ACK_LEN:
        return f"ack is {len(frame)} bytes, expected {ACK_LEN}"
    if frame[:4] != b"\x42\x4d\x00\x04":
        return "ack does not start with 42 4D 00 04"
    expected = checksum(frame[:6])
    got = int.from_bytes(frame[6:8], "big")
    if got != expected:
        return f"ack checksum mismatch: frame says {got:04x}, bytes sum to {expected:04x}"
    return None


def parse_ack(frame: bytes) -> tuple[int, int]:
    """(command byte, data byte) echoed by an 8-byte ack; raises DecodeError when it is not a valid ack."""
    reason = ack_error(frame)
    if reason is not None:
        raise DecodeError(reason, frame)
    return frame[4], frame[5]


def command(name: str) -> bytes:
    """The 7-byte host command `name` (one of COMMANDS: read, mode_passive, mode_active, sleep, wake)."""
    try:
        cmd, data = COMMANDS[name]
    except KeyError:
        raise ValueError(f"unknown PMS command {name!r}; known: {', '.join(COMMANDS)}") from None
    body = HEADER + bytes((cmd,)) + data.to_bytes(2, "big")
    return body + checksum(body).to_bytes(2, "big")


def any_frame_error(frame: bytes) -> str | None:
    """Check a data frame or an ack, chosen by its length field."""
    if frame[2:4] == b"\x00\x04":
        return ack_error(frame)
    return frame_error(frame)


def decode(frame: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode one 32-byte data frame into 12 readings (mass, particle counts); an 8-byte ack gives []."""
    if len(frame) == ACK_LEN:
        parse_ack(frame)
        return []
    reason = frame_error(frame)
    if reason is not None:
        raise DecodeError(reason, frame)
    words = _WORDS.unpack(frame)[2:14]
    return [
        Reading(ctx.device_id, quantity, float(value), unit, ctx.received_ns, ctx.tags)
        for (quantity, unit), value in zip(FIELDS, words, strict=True)
    ]


def encode(values: Mapping[str, float], reserved: int = 0x9700) -> bytes:
    """Build a data frame from {quantity: value}; missing quantities are 0 (used by the simulator)."""
    words = [max(0, min(0xFFFF, round(values.get(q, 0)))) for q, _ in FIELDS]
    body = struct.pack(">2sH13H", HEADER, 28, *words, reserved)
    return body + checksum(body).to_bytes(2, "big")


def _length_of(prefix: bytes) -> int | None:
    if prefix[2:4] == b"\x00\x1c":
        return FRAME_LEN
    if prefix[2:4] == b"\x00\x04":
        return ACK_LEN
    return None


def make_framer() -> StreamFramer:
    """A framer that finds data frames (and 8-byte acks) in the stream and resynchronises after bad bytes."""
    return StreamFramer(HEADER, 4, _length_of, any_frame_error)


KIND = register(
    DeviceKind(
        name="pms5003",
        link="serial",
        summary="Plantower PMS5003/PMS7003 particulate matter sensor, active-mode 32-byte frames",
        quantities=FIELDS,
        decode=decode,
        encode=encode,
        framer=make_framer,
        doc="pms5003.md",
    )
)
