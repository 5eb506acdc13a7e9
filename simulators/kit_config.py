"""A kit's devices and routes as plain data: what `SimulatedKit` needs to know, without the gateway's settings.

The gateway (the composition root, `gateway/simulated_kit.py`) validates a config file and builds a
`KitConfig`; the simulators never import the gateway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KitBroker", "KitConfig", "KitDevice", "KitRoute"]


@dataclass(frozen=True, slots=True)
class KitDevice:
    """A serial or Modbus `[[devices]]` entry of the kit (defaults applied)."""

    id: str
    kind: str
    port: str
    address: int = 1
    address_given: bool = False  # whether the config names `address` (serial kinds fall back to options)
    baudrate: int = 9600
    poll_interval: float = 10.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KitRoute:
    """An `[[mqtt.routes]]` entry of the kit."""

    topic: str
    format: str
    device_id: str = ""  # template: {N} is topic level N; empty = the format's own device id
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KitBroker:
    """The broker the config names, and the credentials the publishers use on it."""

    host: str = ""
    port: int = 1883
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class KitConfig:
    """A validated kit config: its devices and routes, and the data as written (rewritten for the simulators)."""

    data: Mapping[str, Any]
    devices: tuple[KitDevice, ...] = ()
    routes: tuple[KitRoute, ...] = ()
    mqtt: KitBroker = KitBroker()
    source: str = "<settings>"
