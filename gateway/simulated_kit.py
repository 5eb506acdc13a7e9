"""Simulators for a citygw config: the gateway's settings turned into the plain `KitConfig` the simulators take.

Here, at the composition root, because the simulators never import the gateway: `kit_config` validates a
TOML file (ConfigError with every problem, as `citygw check-config`) or takes a `Settings`, resolves the MQTT
password, and hands `simulators.kit.SimulatedKit` plain data.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from gateway.settings import Settings, load_settings, read_secret
from simulators.kit import SimulatedKit
from simulators.kit_config import KitBroker, KitConfig, KitDevice, KitRoute

__all__ = ["kit_config", "simulated_kit"]


def kit_config(config: str | os.PathLike[str] | Settings) -> KitConfig:
    """The kit's devices, routes and broker as plain data, from a TOML path or a `Settings`."""
    if isinstance(config, Settings):
        source = "<settings>"
        data: dict[str, Any] = config.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        settings = config
    else:
        source = os.fspath(config)
        settings = load_settings(config)  # ConfigError with every problem, as `citygw check-config`
        data = tomllib.loads(Path(config).read_text(encoding="utf-8"))
    devices = tuple(
        KitDevice(d.id, d.kind, d.port, address=d.address, address_given="address" in d.model_fields_set,
                  baudrate=d.baudrate, poll_interval=d.poll_interval, options=dict(d.options))
        for d in settings.devices
    )
    m = settings.mqtt
    routes = tuple(KitRoute(r.topic, r.format, r.device_id, dict(r.options)) for r in m.routes)
    password = read_secret(m.password_env, m.password_file, "mqtt.password") if m.username and routes else None
    broker = KitBroker(m.host, m.port, m.username or None, password)
    return KitConfig(data, devices, routes, broker, source)


def simulated_kit(
    config: str | os.PathLike[str] | Settings,
    broker: tuple[str, int] | None = None,
    seed: int = 1,
    *,
    mqtt_period_s: float = 1.0,
    modbus_transport: Literal["pty", "tcp"] = "pty",
) -> SimulatedKit:
    """A `SimulatedKit` (not started) for a TOML path or a `Settings`."""
    return SimulatedKit(kit_config(config), broker, seed, mqtt_period_s=mqtt_period_s,
                        modbus_transport=modbus_transport)
