"""Device registry: every kind by name and link. A new device is one module plus one line here.

A kind's module is imported when the kind is first used, not when the registry is: a kit runs the few kinds its
config names, and importing all eighteen decoder modules cost a running gateway 0.3 MB at start for nothing
(docs/performance.md). Checking a config needs only names and links, which the lines below give without an import.
`tests/devices/test_registry.py` checks that each line matches what its module registers.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from devices.kind import KINDS as _REGISTERED
from devices.kind import DeviceKind, Link

__all__ = ["KINDS", "get_kind", "kind_names"]

# kind name: (module that registers it, link)
_WHERE: dict[str, tuple[str, Link]] = {
    "pms5003": ("devices.pms5003", "serial"),
    "pms5003t": ("devices.pms5003t", "serial"),
    "sds011": ("devices.sds011", "serial"),
    "mhz19b": ("devices.mhz19b", "serial"),
    "wmbus_water": ("devices.wmbus_water", "serial"),
    "bswa_slm": ("devices.bswa_slm", "serial"),
    "json": ("devices.json_mapping", "mqtt"),
    "ttn_v3": ("devices.ttn_v3", "mqtt"),
    "tasmota": ("devices.tasmota", "mqtt"),
    "zigbee2mqtt": ("devices.zigbee2mqtt", "mqtt"),
    "airrohr": ("devices.airrohr", "mqtt"),
    "telraam": ("devices.telraam", "mqtt"),
    "line_protocol": ("devices.line_protocol", "mqtt"),
    "senseair_s8": ("devices.senseair_s8", "modbus"),
    "sdm120": ("devices.sdm120", "modbus"),
    "sdm630": ("devices.sdm630", "modbus"),
    "ph_probe": ("devices.water_probes", "modbus"),
    "turbidity_probe": ("devices.water_probes", "modbus"),
    "conductivity_probe": ("devices.water_probes", "modbus"),
    "noise_modbus": ("devices.noise_modbus", "modbus"),
}


class _Kinds(Mapping[str, DeviceKind]):
    """Every kind by name; looking one up imports its module (once)."""

    def __getitem__(self, name: str) -> DeviceKind:
        kind = _REGISTERED.get(name)
        if kind is None:
            module, _ = _WHERE[name]
            importlib.import_module(module)
            kind = _REGISTERED[name]
        return kind

    def __iter__(self) -> Iterator[str]:
        return iter(_WHERE)

    def __len__(self) -> int:
        return len(_WHERE)


KINDS: Mapping[str, DeviceKind] = _Kinds()


def get_kind(name: str) -> DeviceKind:
    """The registered kind called `name`; KeyError lists the known kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown device kind {name!r}; known kinds: {', '.join(sorted(KINDS))}") from None


def kind_names(*links: Link) -> list[str]:
    """The names of the kinds on these links (all links when none is given), sorted, without importing them."""
    return sorted(name for name, (_, link) in _WHERE.items() if not links or link in links)
