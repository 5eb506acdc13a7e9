"""Winsen MH-Z19B (also MH-Z19C, MH-Z14A) CO2 sensor: 9-byte request/response frames, UART 9600 8N1.

Request `FF 01 CMD a3 a4 a5 a6 a7 CS`; reply `FF CMD b2 b3 b4 b5 b6 b7 CS`; CS = two's complement of the
sum of bytes 1..7. The read-CO2 reply carries ppm = b2·256 + b3 (reference §3).

Byte 4 of the reply is an undocumented temperature + 40 °C. It follows the sensor's own electronics, not the
air around it, so it is never reported as the `temperature` quantity (it would pollute ambient temperature
series); `parse_reply` exposes it for diagnostics. An all-zero reply is the sensor warming up (3 minutes
after power-on) and is rejected with reason "warming up".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devices.framing import StreamFramer
from devices.kind import DeviceKind, register
from devices.reading import DecodeContext, DecodeError, Reading

__all__ = [
    "FIELDS",
    "KIND",
    "Mhz19Reply",
    "abc",
    "decode",
    "detection_range",
    "encode",
    "frame_error",
    "make_framer",
    "parse_reply",
    "poll_request",
    "read_co2",
    "span_calibration",
    "zero_calibration",
]

START = 0xFF
FRAME_LEN = 9
CMD_READ = 0x86
CMD_ABC = 0x79
CMD_ZERO = 0x87
CMD_SPAN = 0x88
CMD_RANGE = 0x99
# Configuration commands whose (optional) replies carry no measurement.
_CONFIG_CMDS = frozenset((CMD_ABC, CMD_ZERO, CMD_SPAN, CMD_RANGE))

FIELDS: tuple[tuple[str, str], ...] = (("co2", "ppm"),)


def checksum(frame: bytes) -> int:
    """MH-Z19 checksum of a 9-byte frame: two's complement of the sum of bytes 1..7."""
    return (0x100 - (sum(frame[1:8]) & 0xFF)) & 0xFF


def _request(cmd: int, args: bytes = b"") -> bytes:
    body = bytes((START, 0x01, cmd)) + args.ljust(5, b"\x00")
    return body + bytes((checksum(body + b"\x00"),))


def read_co2() -> bytes:
    """The read-CO2 request `FF 01 86 00 00 00 00 00 79`."""
    return _request(CMD_READ)


def abc(on: bool) -> bytes:
    """Automatic baseline correction on (`79 A0`) or off (`79 00`)."""
    return _request(CMD_ABC, b"\xa0" if on else b"\x00")


def zero_calibration() -> bytes:
    """Zero-point calibration: call only after 20 min in stable 400 ppm (outdoor) air."""
    return _request(CMD_ZERO)


def span_calibration(ppm: int) -> bytes:
    """Span calibration at `ppm` (value in bytes 3-4); do a zero calibration first."""
    if not 0 < ppm <= 0xFFFF:
        raise ValueError(f"span {ppm} ppm out of 1..65535")
    return _request(CMD_SPAN, ppm.to_bytes(2, "big"))


def detection_range(ppm: int) -> bytes:
    """Set the detection range (2000, 5000 or 10000 ppm; value in bytes 6-7)."""
    if not 0 < ppm <= 0xFFFF:
        raise ValueError(f"range {ppm} ppm out of 1..65535")
    return _request(CMD_RANGE, b"\x00\x00\x00" + ppm.to_bytes(2, "big"))


def poll_request(options: Mapping[str, Any]) -> bytes:
    """The request the gateway sends every poll interval: read CO2."""
    return read_co2()


def frame_error(frame: bytes) -> str | None:
    """None when `frame` is a well-formed 9-byte reply, else which check failed."""
    if len(frame) != FRAME_LEN:
        return f"frame is {len(frame)} bytes, expected {FRAME_LEN}"
    if frame[0] != START:
        return f"frame starts with {frame[0]:02x}, expected ff"
    expected = checksum(frame)
    if frame[8] != expected:
        return f"checksum mismatch: frame says {frame[8]:02x}, expected {expected:02x}"
    return None


@dataclass(frozen=True, slots=True)
class Mhz19Reply:
    """A read-CO2 reply: ppm, the undocumented internal temperature (°C) and status byte."""

    co2_ppm: int
    internal_temperature_c: int
    status: int


def parse_reply(frame: bytes) -> Mhz19Reply:
    """Decode a read-CO2 reply; raises DecodeError for bad frames, other commands and warm-up replies."""
    reason = frame_error(frame)
    if reason is not None:
        raise DecodeError(reason, frame)
    if frame[1] != CMD_READ:
        raise DecodeError(f"reply to command {frame[1]:02x}, not to read CO2 (86)", frame)
    if not any(frame[2:8]):
        raise DecodeError("warming up", frame)
    return Mhz19Reply(frame[2] * 256 + frame[3], frame[4] - 40, frame[5])


def decode(frame: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode a read-CO2 reply into one co2 reading (ppm); a configuration reply gives no readings."""
    reason = frame_error(frame)
    if reason is not None:
        raise DecodeError(reason, frame)
    if frame[1] in _CONFIG_CMDS:
        return []
    reply = parse_reply(frame)
    return [Reading(ctx.device_id, "co2", float(reply.co2_ppm), "ppm", ctx.received_ns, ctx.tags)]


def encode(values: Mapping[str, float], internal_temperature_c: float = 25.0, status: int = 0) -> bytes:
    """Build a read-CO2 reply from {"co2": ppm} (used by the simulator)."""
    ppm = max(0, min(0xFFFF, round(values.get("co2", 0))))
    temp = max(0, min(0xFF, round(internal_temperature_c) + 40))
    body = bytes((START, CMD_READ)) + ppm.to_bytes(2, "big") + bytes((temp, status & 0xFF, 0, 0))
    return body + bytes((checksum(body + b"\x00"),))


def _length_of(prefix: bytes) -> int | None:
    return FRAME_LEN


def make_framer() -> StreamFramer:
    """A framer for 9-byte replies starting with FF; resynchronises on the checksum."""
    return StreamFramer(bytes((START,)), 2, _length_of, frame_error)


KIND = register(
    DeviceKind(
        name="mhz19b",
        link="serial",
        summary="Winsen MH-Z19B/MH-Z19C/MH-Z14A NDIR CO2 sensor, polled 9-byte frames",
        quantities=FIELDS,
        decode=decode,
        encode=encode,
        framer=make_framer,
        poll_request=poll_request,
        doc="mhz19b.md",
    )
)
