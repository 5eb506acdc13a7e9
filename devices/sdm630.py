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

from devices.modbus_common import Field, modbus_kind, option_choice

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


KIND = modbus_kind(
    "sdm630",
    "Eastron SDM630 three-phase energy meter, Modbus RTU float32 input registers, per-phase tags",
    lambda options: (FUNCTION, fields(options)),
    DEFAULT_ADDRESS,
)
