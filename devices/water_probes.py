"""RS-485 water-quality probes (pH, turbidity, conductivity) over Modbus RTU, vendor register maps by option.

There is no common register map (reference §6a): every vendor picks its own register, type, word order and
scaling. Each kind has presets for layouts seen in vendor manuals, and every preset value can be overridden:

- `preset`: a named layout (see PRESETS; the kind's default when absent).
- `function` (3 holding / 4 input), `register` (0-based address), `type` (u16, s16, u32, s32, float32),
  `word_order` (ABCD, CDAB, BADC, DCBA; 32-bit types only), `scale`, `offset`: value = raw * scale + offset.
- `temperature_register` (optional): also read the probe's water temperature (degC) from this register, with
  `temperature_type` (default u16), `temperature_word_order`, `temperature_scale` (default 0.1),
  `temperature_offset`.
- `max_gap` (default 0): read the value and temperature in one request when they are this close.

Verified examples (reference §6a): Supmea EC8.0 `01 03 00 01 00 01` → `01 03 02 02 BC` = 700 (preset
`supmea_ec8`); the DPH7 manual's float reply `01 04 04 CC CD 41 48` is CDAB = 12.55 (preset `dph7`; its
register address is not in the manual excerpt, 0 is assumed — set `register` from your manual).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from devices.kind import DeviceKind
from devices.modbus_common import (
    REGISTER_TYPES,
    WORD_ORDERS,
    Field,
    modbus_kind,
    option_choice,
    option_float,
    option_int,
)

DEFAULT_ADDRESS = 1

# name -> layout; keys as the options. Generic presets are the common cheap-probe layouts; check the manual.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "ph_probe": {
        "u16_x100": {"function": 3, "register": 0, "type": "u16", "scale": 0.01},
        "dph7": {"function": 4, "register": 0, "type": "float32", "word_order": "CDAB", "scale": 1.0},
        "float_abcd": {"function": 3, "register": 0, "type": "float32", "word_order": "ABCD", "scale": 1.0},
    },
    "turbidity_probe": {
        "u16_x10": {"function": 3, "register": 0, "type": "u16", "scale": 0.1},
        "float_abcd": {"function": 3, "register": 0, "type": "float32", "word_order": "ABCD", "scale": 1.0},
        "float_cdab": {"function": 3, "register": 0, "type": "float32", "word_order": "CDAB", "scale": 1.0},
    },
    "conductivity_probe": {
        "supmea_ec8": {"function": 3, "register": 1, "type": "u16", "scale": 1.0},
        "float_abcd": {"function": 3, "register": 0, "type": "float32", "word_order": "ABCD", "scale": 1.0},
        "float_cdab": {"function": 3, "register": 0, "type": "float32", "word_order": "CDAB", "scale": 1.0},
    },
}
DEFAULT_PRESET = {"ph_probe": "u16_x100", "turbidity_probe": "u16_x10", "conductivity_probe": "supmea_ec8"}
MEASURAND = {
    "ph_probe": ("ph", "pH"),
    "turbidity_probe": ("turbidity", "NTU"),
    "conductivity_probe": ("conductivity", "uS/cm"),
}


def layout(kind: str, options: Mapping[str, Any]) -> tuple[int, tuple[Field, ...]]:
    """(function, fields) of a probe kind for these options; ValueError names a bad option."""
    presets = PRESETS[kind]
    preset = option_choice(options, "preset", DEFAULT_PRESET[kind], presets)
    merged = {**presets[preset], **options}
    function = option_int(merged, "function", 3, 3, 4)
    quantity, unit = MEASURAND[kind]
    main = Field(
        option_int(merged, "register", 0, 0, 0xFFFF),
        option_choice(merged, "type", "u16", REGISTER_TYPES),
        quantity,
        unit,
        scale=option_float(merged, "scale", 1.0),
        offset=option_float(merged, "offset", 0.0),
        word_order=option_choice(merged, "word_order", "ABCD", WORD_ORDERS),
    )
    fields = [main]
    if merged.get("temperature_register") is not None:
        fields.append(
            Field(
                option_int(merged, "temperature_register", 0, 0, 0xFFFF),
                option_choice(merged, "temperature_type", "u16", REGISTER_TYPES),
                "temperature",
                "degC",
                scale=option_float(merged, "temperature_scale", 0.1),
                offset=option_float(merged, "temperature_offset", 0.0),
                word_order=option_choice(merged, "temperature_word_order", "ABCD", WORD_ORDERS),
            )
        )
        first, second = sorted((fields[0], fields[1]), key=lambda f: f.address)
        if first.address + first.width > second.address:
            raise ValueError("temperature_register overlaps the measured value's registers")
    return function, tuple(fields)


def fields(kind: str, options: Mapping[str, Any]) -> tuple[Field, ...]:
    """The field table of a probe kind for these options (value, and temperature when configured)."""
    return layout(kind, options)[1]


def _make(kind: str, summary: str) -> DeviceKind:
    """Build and register one probe kind: its layout is `layout` bound to the kind name."""
    return modbus_kind(
        kind, summary, partial(layout, kind), DEFAULT_ADDRESS, (MEASURAND[kind], ("temperature", "degC"))
    )


PH_PROBE = _make("ph_probe", "RS-485 pH probe, Modbus RTU, vendor register layout by option (u16 ×0.01, float32 …)")
TURBIDITY_PROBE = _make("turbidity_probe", "RS-485 turbidity probe (NTU), Modbus RTU, vendor layout by option")
CONDUCTIVITY_PROBE = _make(
    "conductivity_probe",
    "RS-485 conductivity probe (uS/cm), Modbus RTU, vendor layout by option (Supmea EC8.0 …)",
)
