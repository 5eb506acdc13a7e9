"""Senseair S8 CO2 sensor over Modbus RTU: IR1 meter status and IR4 CO2 in one read (`FE 04 00 00 00 04`).

Registers are u16 big-endian, CO2 in ppm without scaling (reference §4). Default slave address 0xFE
("any address", one sensor per line); 9600 8N1.

Status policy: when IR1 has any of the error flags (bits 0-6, the mask Tasmota applies) set, the frame is
rejected with a DecodeError naming the flags — during warm-up or after a fault the CO2 value is not a
measurement, and a counted, explained rejection is better than a flagged number nobody filters. Higher bits
are not error flags and are ignored. A read that does not include IR1 (e.g. `FE 04 00 03 00 01`) is decoded
without the check.

Options:
- `ignore_status` (int mask, default 0): status flags to accept anyway, e.g. 0x20 to keep values the sensor
  marks "out of range" (it then reports its range limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devices.kind import ModbusRead
from devices.modbus_common import Field, encode_fields, from_options, modbus_kind, option_int, read_reply
from devices.reading import DecodeContext, DecodeError

FUNCTION = 4
DEFAULT_ADDRESS = 0xFE
STATUS_REGISTER = 0x0000
STATUS_MASK = 0x7F
# IR1 flag bits 0..6, as named by a public S8 library (reference §4).
STATUS_FLAGS = (
    "fatal error",
    "offset regulation error",
    "algorithm error",
    "output error",
    "self-diagnostics error",
    "out of range",
    "memory error",
)

FIELDS: tuple[Field, ...] = (Field(0x0003, "u16", "co2", "ppm"),)
POLL = ModbusRead(FUNCTION, 0x0000, 4)


def status_flags(status: int) -> list[str]:
    """Names of the error flags set in an IR1 status word."""
    return [name for bit, name in enumerate(STATUS_FLAGS) if status & (1 << bit)]


def fields(options: Mapping[str, Any]) -> tuple[Field, ...]:
    """The field table (CO2 only; the status word is a check, not a reading)."""
    return FIELDS


def _ignore_status(options: Mapping[str, Any]) -> int:
    return option_int(options, "ignore_status", 0, 0, 0xFFFF)


def modbus_reads(options: Mapping[str, Any]) -> list[ModbusRead]:
    """One read of IR1..IR4 (status and CO2)."""
    _ignore_status(options)  # validate early, at bus construction
    return [POLL]


def check_status(read: ModbusRead, registers: list[int], ctx: DecodeContext) -> None:
    """Reject a reply that is not input registers or whose status word has error flags."""
    if read.function != FUNCTION:
        raise DecodeError(f"S8 data are input registers (function 04), not function {read.function:02x}")
    offset = STATUS_REGISTER - read.address
    if 0 <= offset < read.count == len(registers):
        status = registers[offset] & STATUS_MASK & ~from_options(_ignore_status, ctx)
        if status:
            raise DecodeError(f"sensor status 0x{registers[offset]:04x}: {', '.join(status_flags(status))}")


def encode(
    values: Mapping[str, float],
    read: ModbusRead | None = None,
    address: int = DEFAULT_ADDRESS,
    status: int = 0,
) -> bytes:
    """The RTU reply frame a sensor holding `values` ({"co2": ppm}) and status word sends to `read`."""
    read = read or POLL
    regs = encode_fields(FIELDS, read, values)
    if 0 <= STATUS_REGISTER - read.address < read.count:
        regs[STATUS_REGISTER - read.address] = status
    return read_reply(address, read.function, regs)


KIND = modbus_kind(
    "senseair_s8",
    "Senseair S8 NDIR CO2 sensor, Modbus RTU (status IR1 + CO2 IR4)",
    lambda options: (FUNCTION, FIELDS),
    DEFAULT_ADDRESS,
    reads=modbus_reads,
    check=check_status,
    encode=encode,
)
