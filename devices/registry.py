"""Device registry: importing this module registers every kind. A new device is one module plus one line here."""

from __future__ import annotations

import importlib

from devices.kind import KINDS, DeviceKind

__all__ = ["KINDS", "get_kind"]

_MODULES = [
    "devices.pms5003",
    "devices.pms5003t",
    "devices.sds011",
    "devices.mhz19b",
    "devices.wmbus_water",
    "devices.bswa_slm",
    "devices.json_mapping",
    "devices.ttn_v3",
    "devices.tasmota",
    "devices.zigbee2mqtt",
    "devices.airrohr",
    "devices.telraam",
    "devices.line_protocol",
    "devices.senseair_s8",
    "devices.sdm120",
    "devices.sdm630",
    "devices.water_probes",
    "devices.noise_modbus",
]

for _name in _MODULES:
    importlib.import_module(_name)


def get_kind(name: str) -> DeviceKind:
    """The registered kind called `name`; KeyError lists the known kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown device kind {name!r}; known kinds: {', '.join(sorted(KINDS))}") from None
