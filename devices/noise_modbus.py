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

from devices.modbus_common import Field, modbus_kind, option_choice, option_float, option_int

DEFAULT_ADDRESS = 1
QUANTITIES = ("noise_laeq", "noise_lamax", "noise_lamin")


def layout(options: Mapping[str, Any]) -> tuple[int, tuple[Field, ...]]:
    """(function, one-field table) for these options; ValueError names a bad option."""
    function = option_int(options, "function", 3, 3, 4)
    quantity = option_choice(options, "quantity", "noise_laeq", QUANTITIES)
    register = option_int(options, "register", 0, 0, 0xFFFF)
    return function, (Field(register, "u16", quantity, "dBA", scale=option_float(options, "scale", 0.1)),)


def fields(options: Mapping[str, Any]) -> tuple[Field, ...]:
    """The one-field table for these options."""
    return layout(options)[1]


KIND = modbus_kind(
    "noise_modbus",
    "RS-485 noise sensor (SONBEST SM7901 family), Modbus RTU, register 0 = dB × 10",
    layout,
    DEFAULT_ADDRESS,
    tuple((q, "dBA") for q in QUANTITIES),
    max_gap=False,  # one register per poll: nothing to merge, and the option was never accepted
)
