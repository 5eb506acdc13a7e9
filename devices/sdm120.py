"""Eastron SDM120 single-phase energy meter over Modbus RTU (input registers, function 04).

Every value is an IEEE-754 float32 in two registers, high word first (ABCD), engineering units, no scaling
(reference §5). Default slave address 1; 9600 or 2400 baud 8N1 depending on the meter's version.

Options:
- `max_gap` (int, default 0): read registers up to this far apart in one request. 0 = only contiguous
  registers (5 requests per poll, safe on every firmware); e.g. 80 = one request for everything, fewer bus
  round trips, if your meter answers reads spanning undocumented registers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devices.kind import DeviceKind, ModbusRead, register
from devices.modbus_common import (
    Field,
    decode_fields,
    decode_reply,
    encode_fields,
    from_options,
    option_int,
    plan_reads,
    read_reply,
)
from devices.reading import DecodeContext, Reading

FUNCTION = 4
DEFAULT_ADDRESS = 1

FIELDS: tuple[Field, ...] = (
    Field(0x0000, "float32", "voltage", "V"),
    Field(0x0006, "float32", "current", "A"),
    Field(0x000C, "float32", "active_power", "W"),
    Field(0x001E, "float32", "power_factor", "1"),
    Field(0x0046, "float32", "frequency", "Hz"),
    Field(0x0048, "float32", "energy_import", "kWh"),
    Field(0x004A, "float32", "energy_export", "kWh"),
)


def fields(options: Mapping[str, Any]) -> tuple[Field, ...]:
    """The SDM120 field table (the same for every option set)."""
    return FIELDS


def modbus_reads(options: Mapping[str, Any]) -> list[ModbusRead]:
    """The input-register reads of one poll."""
    return plan_reads(FIELDS, FUNCTION, option_int(options, "max_gap", 0, 0, 120))


def decode_registers(read: ModbusRead, registers: list[int], ctx: DecodeContext) -> list[Reading]:
    """Readings from the registers one read returned."""
    return decode_fields(from_options(fields, ctx), read, registers, ctx, FUNCTION)


def decode(frame: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode a raw RTU reply frame; `ctx.request` must hold the request frame."""
    return decode_reply(frame, ctx, decode_registers)


def encode(values: Mapping[str, float], read: ModbusRead | None = None, address: int = DEFAULT_ADDRESS) -> bytes:
    """The RTU reply frame a meter holding `values` sends to `read` (default: the first read of a poll)."""
    read = read or modbus_reads({})[0]
    return read_reply(address, read.function, encode_fields(FIELDS, read, values))


KIND = register(
    DeviceKind(
        name="sdm120",
        link="modbus",
        summary="Eastron SDM120 single-phase energy meter, Modbus RTU float32 input registers",
        quantities=tuple(dict.fromkeys((f.quantity, f.unit) for f in FIELDS)),
        decode=decode,
        encode=encode,
        modbus_reads=modbus_reads,
        decode_registers=decode_registers,
        doc="sdm120.md",
    )
)
