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

from devices.modbus_common import Field, modbus_kind

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


KIND = modbus_kind(
    "sdm120",
    "Eastron SDM120 single-phase energy meter, Modbus RTU float32 input registers",
    lambda options: (FUNCTION, FIELDS),
    DEFAULT_ADDRESS,
)
