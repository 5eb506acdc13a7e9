"""Nova Fitness SDS011 (also SDS018/SDS021) particulate sensor: 10-byte frames, UART 9600 8N1, little-endian.

Device → host: `AA C0 PM25lo PM25hi PM10lo PM10hi ID1 ID2 CS AB` (µg/m³ = raw / 10) and the command reply
`AA C5 CMD d1 d2 d3 ID1 ID2 CS AB`; CS = (sum of bytes 2..7) & 0xFF. Host → device: 19-byte commands
`AA B4 CMD D1..D12 ID1 ID2 CS AB`, CS = (sum of bytes 2..16) & 0xFF (see `command`). Reference §2.

The sensor's own 2-byte ID is not put in tags (it would only duplicate the configured device id); it names
the device (`sds011-a160`) only when no device id is configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from devices.framing import StreamFramer
from devices.kind import DeviceKind, register
from devices.reading import DecodeContext, DecodeError, Reading

__all__ = ["FIELDS", "KIND", "Sds011Reply", "command", "decode", "encode", "frame_error", "make_framer"]

HEADER = 0xAA
TAIL = 0xAB
DATA = 0xC0
REPLY = 0xC5
FRAME_LEN = 10
COMMAND_LEN = 19
BROADCAST = 0xFFFF

FIELDS: tuple[tuple[str, str], ...] = (("pm2_5", "ug/m3"), ("pm10", "ug/m3"))

# Command byte of each command family (reference §2; Laser Dust Sensor Control Protocol V1.3).
CMD_REPORTING_MODE = 0x02
CMD_QUERY = 0x04
CMD_SET_ID = 0x05
CMD_SLEEP_WORK = 0x06
CMD_FIRMWARE = 0x07
CMD_WORKING_PERIOD = 0x08

# name → (command, data bytes D1.. (the rest are zero))
_SIMPLE: dict[str, tuple[int, bytes]] = {
    "query": (CMD_QUERY, b""),
    "get_mode": (CMD_REPORTING_MODE, b"\x00"),
    "mode_active": (CMD_REPORTING_MODE, b"\x01\x00"),
    "mode_query": (CMD_REPORTING_MODE, b"\x01\x01"),
    "get_sleep": (CMD_SLEEP_WORK, b"\x00"),
    "sleep": (CMD_SLEEP_WORK, b"\x01\x00"),
    "work": (CMD_SLEEP_WORK, b"\x01\x01"),
    "get_working_period": (CMD_WORKING_PERIOD, b"\x00"),
    "firmware": (CMD_FIRMWARE, b""),
}
COMMAND_NAMES = (*_SIMPLE, "working_period", "set_device_id")


def checksum(data: bytes) -> int:
    """SDS011 checksum: the sum of the bytes, modulo 256."""
    return sum(data) & 0xFF


def command(name: str, value: int = 0, device_id: int = BROADCAST) -> bytes:
    """The 19-byte command `name` for sensor `device_id` (0xFFFF = any).

    Names: query, get_mode, mode_active, mode_query, get_sleep, sleep, work, get_working_period, firmware,
    working_period (value = minutes 0-30, 0 = continuous), set_device_id (value = the new 16-bit id).
    """
    if not 0 <= device_id <= 0xFFFF:
        raise ValueError(f"device id {device_id} out of 0..0xFFFF")
    data = bytearray(12)
    if name in _SIMPLE:
        cmd, head = _SIMPLE[name]
        data[: len(head)] = head
    elif name == "working_period":
        if not 0 <= value <= 30:
            raise ValueError(f"working period {value} min out of 0..30")
        cmd = CMD_WORKING_PERIOD
        data[0], data[1] = 1, value
    elif name == "set_device_id":
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"new device id {value} out of 0..0xFFFF")
        cmd = CMD_SET_ID
        data[10:12] = value.to_bytes(2, "big")
    else:
        raise ValueError(f"unknown SDS011 command {name!r}; known: {', '.join(COMMAND_NAMES)}")
    body = bytes((cmd,)) + bytes(data) + device_id.to_bytes(2, "big")
    return bytes((HEADER, 0xB4)) + body + bytes((checksum(body), TAIL))


def command_error(frame: bytes) -> str | None:
    """None when `frame` is a well-formed 19-byte host command, else which check failed (for simulators)."""
    if len(frame) != COMMAND_LEN:
        return f"command is {len(frame)} bytes, expected {COMMAND_LEN}"
    if frame[0] != HEADER or frame[1] != 0xB4 or frame[18] != TAIL:
        return "command is not framed AA B4 … AB"
    if checksum(frame[2:17]) != frame[17]:
        return f"command checksum mismatch: frame says {frame[17]:02x}, expected {checksum(frame[2:17]):02x}"
    return None


def frame_error(frame: bytes) -> str | None:
    """None when `frame` is a well-formed 10-byte data frame or reply, else which check failed."""
    if len(frame) != FRAME_LEN:
        return f"frame is {len(frame)} bytes, expected {FRAME_LEN}"
    if frame[0] != HEADER:
        return f"frame starts with {frame[0]:02x}, expected aa"
    if frame[1] not in (DATA, REPLY):
        return f"frame type {frame[1]:02x} is neither c0 (data) nor c5 (reply)"
    if frame[9] != TAIL:
        return f"frame ends with {frame[9]:02x}, expected ab"
    expected = checksum(frame[2:8])
    if frame[8] != expected:
        return f"checksum mismatch: frame says {frame[8]:02x}, bytes sum to {expected:02x}"
    return None


@dataclass(frozen=True, slots=True)
class Sds011Reply:
    """A decoded C5 reply: which command it answers, whether it answers a set, the value and the sensor id."""

    command: int
    is_set: bool
    value: int  # mode (0 active, 1 query), state (0 sleep, 1 work), period in minutes, or new id
    device_id: int
    firmware: tuple[int, int, int] | None = None  # (year, month, day) for the firmware reply


def parse_reply(frame: bytes) -> Sds011Reply:
    """Decode a C5 reply frame; raises DecodeError when it is not a valid reply."""
    reason = frame_error(frame)
    if reason is not None:
        raise DecodeError(reason, frame)
    if frame[1] != REPLY:
        raise DecodeError("not a c5 reply frame", frame)
    cmd = frame[2]
    sensor = int.from_bytes(frame[6:8], "big")
    if cmd == CMD_FIRMWARE:
        return Sds011Reply(cmd, False, 0, sensor, (frame[3], frame[4], frame[5]))
    if cmd == CMD_SET_ID:
        return Sds011Reply(cmd, True, sensor, sensor)
    if cmd in (CMD_REPORTING_MODE, CMD_SLEEP_WORK, CMD_WORKING_PERIOD):
        return Sds011Reply(cmd, frame[3] == 1, frame[4], sensor)
    raise DecodeError(f"reply to unknown command {cmd:02x}", frame)


def decode(frame: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode a C0 data frame into pm2_5 and pm10 (µg/m³); a valid C5 reply gives no readings."""
    reason = frame_error(frame)
    if reason is not None:
        raise DecodeError(reason, frame)
    if frame[1] == REPLY:
        parse_reply(frame)
        return []
    pm25 = int.from_bytes(frame[2:4], "little") / 10.0
    pm10 = int.from_bytes(frame[4:6], "little") / 10.0
    device_id = ctx.device_id or f"sds011-{frame[6:8].hex()}"
    return [
        Reading(device_id, "pm2_5", pm25, "ug/m3", ctx.received_ns, ctx.tags),
        Reading(device_id, "pm10", pm10, "ug/m3", ctx.received_ns, ctx.tags),
    ]


def _frame(kind: int, body: bytes) -> bytes:
    return bytes((HEADER, kind)) + body + bytes((checksum(body), TAIL))


def encode(values: Mapping[str, float], device_id: int = 0xA160) -> bytes:
    """Build a C0 data frame from {"pm2_5": µg/m³, "pm10": µg/m³} (used by the simulator)."""
    pm25 = max(0, min(0xFFFF, round(values.get("pm2_5", 0) * 10)))
    pm10 = max(0, min(0xFFFF, round(values.get("pm10", 0) * 10)))
    body = pm25.to_bytes(2, "little") + pm10.to_bytes(2, "little") + device_id.to_bytes(2, "big")
    return _frame(DATA, body)


def encode_reply(cmd: int, d1: int = 0, d2: int = 0, d3: int = 0, device_id: int = 0xA160) -> bytes:
    """Build a C5 reply `AA C5 CMD d1 d2 d3 ID1 ID2 CS AB` (used by the simulator)."""
    return _frame(REPLY, bytes((cmd, d1 & 0xFF, d2 & 0xFF, d3 & 0xFF)) + device_id.to_bytes(2, "big"))


def _length_of(prefix: bytes) -> int | None:
    return FRAME_LEN if prefix[1] in (DATA, REPLY) else None


def make_framer() -> StreamFramer:
    """A framer that finds AA C0/C5 … AB frames and resynchronises on header, tail and checksum."""
    return StreamFramer(bytes((HEADER,)), 2, _length_of, frame_error)


KIND = register(
    DeviceKind(
        name="sds011",
        link="serial",
        summary="Nova Fitness SDS011/SDS018/SDS021 particulate matter sensor, active-mode 10-byte frames",
        quantities=FIELDS,
        decode=decode,
        encode=encode,
        framer=make_framer,
        doc="sds011.md",
    )
)
