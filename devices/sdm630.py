"""Eastron SDM630 three-phase energy meter over Modbus RTU (input registers, function 04).

Float32 ABCD values like the SDM120 (reference §5). Per-phase voltage (L-N), current, active power and power
factor carry the tag `phase` = L1/L2/L3; total system power, frequency and import/export energy have no phase.

Options:
- `max_gap` (int, default 0): see the SDM120; 0 gives 4 requests per poll.
- `energy_unit` ("kWh" or "MWh", default "kWh"): the SDM630 energy registers are "kWh/MWh" depending on the
  meter's configuration; with "MWh" values are multiplied by 1000 so readings are always kWh.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from devices.kind import DeviceKind, ModbusRead, register
from devices.modbus_common import (
    Field,
    decode_fields,
    decode_reply,
    encode_fields,
    from_options,
    option_choice,
    option_int,
    plan_reads,
    read_reply,
)
from devices.reading import DecodeContext, Reading

FUNCTION = 4
DEFAULT_ADDRESS = 1
PHASES = ("L1", "L2", "L3")


def _phase_fields() -> list[Field]:
    out: list[Field] = []
    for base, quantity, unit in (
        (0x0000, "voltage", "V"),
        (0x0006, "current", "A"),
        (0x000C, "active_power", "W"),
        (0x001E, "power_factor", "1"),
    ):
        for i, phase in enumerate(PHASES):
            tags = MappingProxyType({"phase": phase})
            out.append(Field(base + 2 * i, "float32", quantity, unit, tags=tags, name=f"{quantity}_{phase.lower()}"))
    return out


def _make_fields(energy_scale: float) -> tuple[Field, ...]:
    return (
        *_phase_fields(),
        Field(0x0034, "float32", "active_power", "W", name="active_power_total"),
        Field(0x0046, "float32", "frequency", "Hz"),
        Field(0x0048, "float32", "energy_import", "kWh", scale=energy_scale),
        Field(0x004A, "float32", "energy_export", "kWh", scale=energy_scale),
    )


_KWH = _make_fields(1.0)
_MWH = _make_fields(1000.0)


def fields(options: Mapping[str, Any]) -> tuple[Field, ...]:
    """The SDM630 field table for these options (energy unit)."""
    return _MWH if option_choice(options, "energy_unit", "kWh", ("kWh", "MWh")) == "MWh" else _KWH


def modbus_reads(options: Mapping[str, Any]) -> list[ModbusRead]:
    """The input-register reads of one poll."""
    return plan_reads(fields(options), FUNCTION, option_int(options, "max_gap", 0, 0, 120))


def decode_registers(read: ModbusRead, registers: list[int], ctx: DecodeContext) -> list[Reading]:
    """Readings from the registers one read returned."""
    return decode_fields(from_options(fields, ctx), read, registers, ctx, FUNCTION)


def decode(frame: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode a raw RTU reply frame; `ctx.request` must hold the request frame."""
    return decode_reply(frame, ctx, decode_registers)


def encode(values: Mapping[str, float], read: ModbusRead | None = None, address: int = DEFAULT_ADDRESS) -> bytes:
    """The RTU reply frame a meter holding `values` (keyed by field name, e.g. `voltage_l2`) sends."""
    read = read or modbus_reads({})[0]
    return read_reply(address, read.function, encode_fields(_KWH, read, values))


KIND = register(
    DeviceKind(
        name="sdm630",
        link="modbus",
        summary="Eastron SDM630 three-phase energy meter, Modbus RTU float32 input registers, per-phase tags",
        quantities=tuple(dict.fromkeys((f.quantity, f.unit) for f in _KWH)),
        decode=decode,
        encode=encode,
        modbus_reads=modbus_reads,
        decode_registers=decode_registers,
        doc="sdm630.md",
    )
)
