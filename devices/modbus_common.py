"""Shared Modbus RTU machinery for device kinds: CRC, a declarative register field table, read planning,
the pure decoder of a raw RTU reply frame checked against its request, and the `modbus_kind` factory.

A kind describes its registers as `Field`s (address, type, word order, scale, quantity, unit); the bus polls
the `ModbusRead`s planned from them and hands the register values to `decode_fields`. `citygw decode` feeds a
raw reply frame plus the request frame to `decode_reply`, which checks both CRCs, exception replies and that
the reply answers the request, then decodes the same way. A device module is its field table (a `Layout` of
its options) plus one `modbus_kind(...)` call that builds and registers the kind. Nothing here does I/O.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from devices.kind import DeviceKind, ModbusRead, register
from devices.reading import EMPTY_TAGS, DecodeContext, DecodeError, Reading
from devices.vocabulary import QUANTITIES

__all__ = [
    "EXCEPTION_NAMES",
    "READ_FUNCTIONS",
    "REGISTER_TYPES",
    "WORD_ORDERS",
    "Field",
    "Layout",
    "crc16",
    "decode_fields",
    "decode_reply",
    "encode_fields",
    "exception_reply",
    "from_options",
    "modbus_kind",
    "parse_read_request",
    "plan_reads",
    "read_reply",
    "read_request",
]

T = TypeVar("T")

READ_FUNCTIONS = {3: "read holding registers", 4: "read input registers"}
MAX_READ_COUNT = 125  # Modbus limit for one register read (the reply must fit 256 bytes)

# Exception codes (reference §0; Eastron's table lists 05 for device failure).
EXCEPTION_NAMES: dict[int, str] = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge (Eastron: slave device failure)",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}

# Register types and how many 16-bit registers each takes.
REGISTER_TYPES: dict[str, int] = {"u16": 1, "s16": 1, "u32": 2, "s32": 2, "float32": 2}
_STRUCT = {"u32": ">I", "s32": ">i", "float32": ">f"}
# Word orders of 32-bit values: the letter at wire position i names which byte of the big-endian value
# (A = most significant) is transmitted there. ABCD = high word first (Eastron), CDAB = low word first
# (DPH7-style probes), BADC = bytes swapped in each word, DCBA = fully little-endian.
WORD_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def _crc16_table() -> tuple[int, ...]:
    """CRC-16/MODBUS (reflected polynomial 0xA001) of every single byte, for the byte-at-a-time loop."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16_TABLE = _crc16_table()


def crc16(data: bytes) -> bytes:
    """CRC-16/MODBUS of `data` as the two bytes transmitted (low byte first)."""
    # Computed here rather than through pymodbus: devices/ stays free of the Modbus library, whose API moves
    # between minor releases (ingest/modbus_client.py is the one module that talks to it).
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC16_TABLE[(crc ^ byte) & 0xFF]
    return crc.to_bytes(2, "little")


def exception_name(code: int) -> str:
    """Human name of a Modbus exception code."""
    return EXCEPTION_NAMES.get(code, "unknown exception code")


def _shortest_float32(packed: bytes) -> float:
    # The shortest decimal that is the same float32, so 230.2 reads 230.2, not 230.20001220703125.
    (value,) = struct.unpack(">f", packed)
    if not math.isfinite(value):
        return float(value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == packed:
            return candidate
    return float(value)


def _tidy(value: float) -> float:
    # Scaling by 0.1 or 0.01 leaves binary noise (12.340000000000002); 12 significant digits is far finer
    # than any sensor and removes it.
    return float(f"{value:.12g}") if math.isfinite(value) else value


@dataclass(frozen=True, slots=True)
class Field:
    """One value in a device's register map: where it is, how it is encoded, what it measures."""

    address: int  # protocol address (0-based), not the 3xxxx/4xxxx documentation number
    type: str  # one of REGISTER_TYPES
    quantity: str
    unit: str
    scale: float = 1.0  # engineering value = raw * scale + offset
    offset: float = 0.0
    word_order: str = "ABCD"
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    name: str = ""  # unique key for encode(); defaults to the quantity

    def __post_init__(self) -> None:
        if self.type not in REGISTER_TYPES:
            raise ValueError(f"register type {self.type!r} unknown; use one of {', '.join(REGISTER_TYPES)}")
        if self.word_order not in WORD_ORDERS:
            raise ValueError(f"word order {self.word_order!r} unknown; use one of {', '.join(WORD_ORDERS)}")
        if not 0 <= self.address <= 0xFFFF:
            raise ValueError(f"register address {self.address} outside 0..65535")
        if self.quantity not in QUANTITIES:
            raise ValueError(f"quantity {self.quantity!r} is not in the vocabulary")
        if not self.name:
            object.__setattr__(self, "name", self.quantity)

    @property
    def width(self) -> int:
        """Number of 16-bit registers the value occupies."""
        return REGISTER_TYPES[self.type]

    def raw_from_registers(self, regs: Sequence[int]) -> float:
        """The raw (unscaled) value from this field's registers."""
        if self.type == "u16":
            return float(regs[0])
        if self.type == "s16":
            return float(regs[0] - 0x10000 if regs[0] & 0x8000 else regs[0])
        wire = regs[0].to_bytes(2, "big") + regs[1].to_bytes(2, "big")
        value = bytearray(4)
        for pos, letter in enumerate(self.word_order):
            value[ord(letter) - 65] = wire[pos]
        if self.type == "float32":
            return _shortest_float32(bytes(value))
        return float(struct.unpack(_STRUCT[self.type], bytes(value))[0])

    def registers_from_value(self, value: float) -> list[int]:
        """The registers carrying engineering `value` (inverse of decoding; integers are clamped)."""
        raw = (value - self.offset) / self.scale
        if self.type in ("u16", "s16"):
            low, high = (0, 0xFFFF) if self.type == "u16" else (-0x8000, 0x7FFF)
            return [max(low, min(high, round(raw))) & 0xFFFF]
        if self.type == "float32":
            packed = struct.pack(">f", raw)
        else:
            low, high = (0, 0xFFFFFFFF) if self.type == "u32" else (-0x80000000, 0x7FFFFFFF)
            packed = struct.pack(_STRUCT[self.type], max(low, min(high, round(raw))))
        wire = bytes(packed[ord(letter) - 65] for letter in self.word_order)
        return [int.from_bytes(wire[0:2], "big"), int.from_bytes(wire[2:4], "big")]


def plan_reads(fields: Iterable[Field], function: int, max_gap: int = 0) -> list[ModbusRead]:
    """Group fields into as few reads as possible: registers closer than `max_gap` are read in one request.

    `max_gap` = 0 reads only contiguous registers; a larger gap also reads the undocumented registers between
    fields, which some meters refuse (exception 02), so it is opt-in.
    """
    spans = sorted((f.address, f.address + f.width) for f in fields)
    reads: list[ModbusRead] = []
    start = end = -1
    for lo, hi in spans:
        if start >= 0 and lo - end <= max_gap and max(end, hi) - start <= MAX_READ_COUNT:
            end = max(end, hi)
            continue
        if start >= 0:
            reads.append(ModbusRead(function, start, end - start))
        start, end = lo, hi
    if start >= 0:
        reads.append(ModbusRead(function, start, end - start))
    return reads


def decode_fields(
    fields: Iterable[Field],
    read: ModbusRead,
    registers: Sequence[int],
    ctx: DecodeContext,
    function: int | None = None,
) -> list[Reading]:
    """Readings of every field lying wholly inside `read`, from the register values it returned.

    `function` is the function code the fields are read with: holding and input registers at the same
    address are different values (an SDM meter's holding register 0 is not its voltage).
    """
    if function is not None and read.function != function:
        raise DecodeError(
            f"this device's values are {READ_FUNCTIONS.get(function, 'read')} (function {function:02x}), "
            f"not function {read.function:02x}"
        )
    if len(registers) != read.count:
        raise DecodeError(f"read of {read.count} registers returned {len(registers)}")
    out: list[Reading] = []
    for f in fields:
        offset = f.address - read.address
        if offset < 0 or offset + f.width > read.count:
            continue
        regs = registers[offset : offset + f.width]
        if any(not 0 <= r <= 0xFFFF for r in regs):
            raise DecodeError(f"register value out of 16-bit range at address {f.address}")
        raw = f.raw_from_registers(regs)
        # A meter reporting NaN/inf is passed on as-is: the validator rejects it with a counted reason.
        value = _tidy(raw * f.scale + f.offset) if math.isfinite(raw) else raw
        tags = {**ctx.tags, **f.tags} if f.tags else ctx.tags
        out.append(Reading(ctx.device_id, f.quantity, value, f.unit, ctx.received_ns, tags))
    if not out:
        raise DecodeError(
            f"registers 0x{read.address:04x}..0x{read.address + read.count - 1:04x} "
            f"(function {read.function:02x}) hold none of this device's fields"
        )
    return out


def encode_fields(fields: Iterable[Field], read: ModbusRead, values: Mapping[str, float]) -> list[int]:
    """Register values a device would return for `read`, holding `values` keyed by field name (simulators)."""
    regs = [0] * read.count
    for f in fields:
        offset = f.address - read.address
        if offset < 0 or offset + f.width > read.count or f.name not in values:
            continue
        regs[offset : offset + f.width] = f.registers_from_value(float(values[f.name]))
    return regs


def read_request(address: int, read: ModbusRead) -> bytes:
    """The RTU request frame for one register read (with CRC)."""
    body = struct.pack(">BBHH", address, read.function, read.address, read.count)
    return body + crc16(body)


def read_reply(address: int, function: int, registers: Sequence[int]) -> bytes:
    """The RTU reply frame carrying `registers` (with CRC)."""
    body = struct.pack(f">BBB{len(registers)}H", address, function, 2 * len(registers), *registers)
    return body + crc16(body)


def exception_reply(address: int, function: int, code: int) -> bytes:
    """The RTU exception reply frame (function | 0x80, code, CRC)."""
    body = bytes((address, function | 0x80, code))
    return body + crc16(body)


def _check_crc(frame: bytes, what: str) -> None:
    expected = crc16(frame[:-2])
    got = frame[-2:]
    if expected != got:
        raise DecodeError(f"{what} CRC mismatch: expected {expected.hex(' ')}, got {got.hex(' ')}", frame)


def parse_read_request(request: bytes) -> tuple[int, ModbusRead]:
    """(slave address, read) of a register-read request frame; DecodeError when it is not one."""
    if len(request) != 8:
        raise DecodeError(f"request is {len(request)} bytes; a register read request is 8", request)
    _check_crc(request, "request")
    address, function, start, count = struct.unpack(">BBHH", request[:6])
    if function not in READ_FUNCTIONS:
        raise DecodeError(f"request function 0x{function:02x} is not a register read (03 or 04)", request)
    if not 1 <= count <= MAX_READ_COUNT:
        raise DecodeError(f"request asks for {count} registers; a read carries 1..{MAX_READ_COUNT}", request)
    return address, ModbusRead(function, start, count)


def decode_reply(
    frame: bytes,
    ctx: DecodeContext,
    decode_registers: Callable[[ModbusRead, list[int], DecodeContext], list[Reading]],
) -> list[Reading]:
    """Decode a raw RTU reply frame given `ctx.request`: CRCs, exception replies, reply-matches-request."""
    if ctx.request is None:
        raise DecodeError("a Modbus reply can only be decoded with its request frame (give --request)", frame)
    address, read = parse_read_request(bytes(ctx.request))
    frame = bytes(frame)
    if len(frame) < 5:
        raise DecodeError(f"reply is {len(frame)} bytes; the shortest Modbus reply is 5", frame)
    _check_crc(frame, "reply")
    if frame[0] != address:
        raise DecodeError(f"reply comes from address {frame[0]}, the request went to {address}", frame)
    function = frame[1]
    if function == read.function | 0x80:
        code = frame[2]
        if len(frame) != 5:
            raise DecodeError(f"exception reply is {len(frame)} bytes, expected 5", frame)
        raise DecodeError(
            f"device answered exception {code:02x} ({exception_name(code)}) to function {read.function:02x}",
            frame,
        )
    if function != read.function:
        raise DecodeError(f"reply function {function:02x} does not match request function {read.function:02x}", frame)
    byte_count = frame[2]
    if byte_count != 2 * read.count:
        raise DecodeError(f"reply byte count is {byte_count}, the request asked for {2 * read.count}", frame)
    if len(frame) != 5 + byte_count:
        raise DecodeError(f"reply is {len(frame)} bytes, byte count {byte_count} needs {5 + byte_count}", frame)
    registers = list(struct.unpack(f">{read.count}H", frame[3 : 3 + byte_count]))
    try:
        return decode_registers(read, registers, ctx)
    except DecodeError as exc:
        if exc.data is not None:
            raise
        raise DecodeError(exc.reason, frame) from None  # the technician gets the frame with the reason


def option_int(options: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    """An integer option within [low, high] (accepts 0x-prefixed strings); ValueError names the key."""
    value = options.get(key, default)
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise ValueError(f"option {key!r} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"option {key!r} must be an integer in {low}..{high}, got {value!r}")
    return value


def option_float(options: Mapping[str, Any], key: str, default: float) -> float:
    """A finite number option; ValueError names the key."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"option {key!r} must be a finite number, got {value!r}")
    return float(value)


def option_choice(options: Mapping[str, Any], key: str, default: str, choices: Iterable[str]) -> str:
    """A string option among `choices`; ValueError lists them."""
    allowed = tuple(choices)
    value = options.get(key, default)
    if value not in allowed:
        raise ValueError(f"option {key!r} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def from_options(make: Callable[[Mapping[str, Any]], T], ctx: DecodeContext) -> T:
    """`make(ctx.options)` (a field table or layout); a bad option becomes a DecodeError."""
    try:
        return make(ctx.options)
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"bad device options: {exc}") from None


# A kind's register layout for its options: (read function, field table); ValueError names a bad option.
Layout = Callable[[Mapping[str, Any]], tuple[int, tuple[Field, ...]]]


def modbus_kind(
    name: str,
    summary: str,
    layout: Layout,
    default_address: int,
    quantities: tuple[tuple[str, str], ...] | None = None,
    *,
    max_gap: bool = True,
    reads: Callable[[Mapping[str, Any]], list[ModbusRead]] | None = None,
    check: Callable[[ModbusRead, list[int], DecodeContext], None] | None = None,
    encode: Callable[..., bytes] | None = None,
    doc: str = "",
) -> DeviceKind:
    """Build and register a Modbus kind whose only device-specific part is `layout` (plus optional hooks).

    - `quantities`: the (quantity, unit) pairs it can produce; default: those of `layout({})`.
    - `max_gap`: accept the `max_gap` option (read fields up to that many registers apart in one request);
      False plans contiguous reads only and ignores the option.
    - `reads`: a fixed read plan replacing the one planned from the fields (it validates its own options).
    - `check`: called with each read's registers before decoding; raises DecodeError to reject the reply.
    - `encode`: a kind-specific simulator encoder replacing the generic `encode(values, read, address, options)`.
    - `doc`: its doc page under docs/devices/; default `<name>.md`.
    """

    def planned_reads(options: Mapping[str, Any]) -> list[ModbusRead]:
        """The register reads of one poll for these options."""
        function, fields = layout(options)
        return plan_reads(fields, function, option_int(options, "max_gap", 0, 0, 120) if max_gap else 0)

    modbus_reads = reads or planned_reads

    def decode_registers(read: ModbusRead, registers: list[int], ctx: DecodeContext) -> list[Reading]:
        """Readings from the registers one read returned."""
        function, fields = from_options(layout, ctx)
        if check is not None:
            check(read, registers, ctx)
        return decode_fields(fields, read, registers, ctx, function)

    def decode(frame: bytes, ctx: DecodeContext) -> list[Reading]:
        """Decode a raw RTU reply frame; `ctx.request` must hold the request frame."""
        return decode_reply(frame, ctx, decode_registers)

    def encode_reply(
        values: Mapping[str, float],
        read: ModbusRead | None = None,
        address: int = default_address,
        options: Mapping[str, Any] | None = None,
    ) -> bytes:
        """The RTU reply frame a device holding `values` (by field name) sends to `read` (default: a poll's first)."""
        opts = options or {}
        read = read or modbus_reads(opts)[0]
        return read_reply(address, read.function, encode_fields(layout(opts)[1], read, values))

    if quantities is None:
        quantities = tuple(dict.fromkeys((f.quantity, f.unit) for f in layout({})[1]))
    return register(
        DeviceKind(
            name=name,
            link="modbus",
            summary=summary,
            quantities=quantities,
            decode=decode,
            encode=encode or encode_reply,
            modbus_reads=modbus_reads,
            decode_registers=decode_registers,
            doc=doc or f"{name}.md",
        )
    )
