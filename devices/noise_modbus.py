"""Low-cost RS-485 noise sensors (SONBEST SM7901 / TRANBALL QM7903 family) over Modbus RTU.

Register 0x0000 (40001), holding, u16 = sound level × 10 in dB (reference §8a); read with
`01 03 00 00 00 01 84 0A`. Default slave address 1, 9600 8N1.

The sensor gives a short-time level (fast 500 ms / slow 1.5 s by jumper on similar modules), no LAeq
register. It is reported as `noise_laeq` in dBA: each poll's sample stands for the level over its poll
interval, and the noise aggregator averages samples energetically (kpis.md §5). The family's tables do not
state the frequency weighting; these modules are sold as A-weighted. Use `quantity` to report it otherwise.

Options:
- `register` (default 0), `function` (default 3), `scale` (default 0.1): for family members with another map.
- `quantity` (default "noise_laeq"): one of noise_laeq, noise_lamax, noise_lamin.
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
    option_choice,
    option_float,
    option_int,
    read_reply,
)
from devices.reading import DecodeContext, Reading

DEFAULT_ADDRESS = 1
QUANTITIES = ("noise_laeq", "noise_lamax", "noise_lamin")


def layout(options: Mapping[str, Any]) -> tuple[int, Field]:
    """(function, field) for these options; ValueError names a bad option."""
    function = option_int(options, "function", 3, 3, 4)
    quantity = option_choice(options, "quantity", "noise_laeq", QUANTITIES)
    return function, Field(
        option_int(options, "register", 0, 0, 0xFFFF),
        "u16",
        quantity,
        "dBA",
        scale=option_float(options, "scale", 0.1),
    )


def fields(options: Mapping[str, Any]) -> tuple[Field, ...]:
    """The one-field table for these options."""
    return (layout(options)[1],)


def modbus_reads(options: Mapping[str, Any]) -> list[ModbusRead]:
    """One single-register read."""
    function, f = layout(options)
    return [ModbusRead(function, f.address, 1)]


def decode_registers(read: ModbusRead, registers: list[int], ctx: DecodeContext) -> list[Reading]:
    """The sound level from the register one read returned."""
    function, field = from_options(layout, ctx)
    return decode_fields((field,), read, registers, ctx, function)


def decode(frame: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode a raw RTU reply frame; `ctx.request` must hold the request frame."""
    return decode_reply(frame, ctx, decode_registers)


def encode(values: Mapping[str, float], read: ModbusRead | None = None, address: int = DEFAULT_ADDRESS) -> bytes:
    """The RTU reply frame a sensor reading `values` ({"noise_laeq": dB}) sends to `read`."""
    read = read or modbus_reads({})[0]
    return read_reply(address, read.function, encode_fields(fields({}), read, values))


KIND = register(
    DeviceKind(
        name="noise_modbus",
        link="modbus",
        summary="RS-485 noise sensor (SONBEST SM7901 family), Modbus RTU, register 0 = dB × 10",
        quantities=(("noise_laeq", "dBA"), ("noise_lamax", "dBA"), ("noise_lamin", "dBA")),
        decode=decode,
        encode=encode,
        modbus_reads=modbus_reads,
        decode_registers=decode_registers,
        doc="noise_modbus.md",
    )
)
