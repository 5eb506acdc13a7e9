"""A whole kit of simulators started from a citygw config: one simulator per device, one publisher per route.

`SimulatedKit(config)` takes a validated config as plain data (`simulators.kit_config.KitConfig`; the gateway's
`gateway.simulated_kit.kit_config` builds it from a TOML path or a `Settings`), starts

- a serial simulator on a pty for every serial `[[devices]]` entry (the kind's class in
  `simulators.registry.SIMULATORS`),
- ONE `simulators.modbus.ModbusSimulator` per Modbus `port`, serving every slave configured on that port at
  its configured `address` (multi-drop, exactly as configured),
- a publisher thread per `[[mqtt.routes]]` entry (`simulators.kit_mqtt`), publishing
  `simulators.mqtt_publishers` payloads of the route's format on a topic that matches the route's filter,
  with the device id in the topic level the route's `device_id` template reads,

and rewrites the config so every device's `port` points to its simulator (and `[mqtt]` to the broker the
publishers use). `config_dict()` is the rewritten config, `toml()` the rewritten file text; run the gateway on
it (`citygw run --config OUT`) and it reads every simulated device through the real pyserial / pymodbus /
MQTT path. Signals are seeded per device id, so a kit replays the same values for the same seed.

Streaming serial simulators send one frame per device `poll_interval` (their real period is fixed by the
sensor; a short interval keeps demos and tests quick). MQTT routes publish every `mqtt_period_s`.

Each simulated device reports what it sent, in vocabulary terms: `SimulatedDevice.sent(quantity)` lists the
values of the recent frames, replies or messages (bounded), `quantities()` what it emits. A new simulated
kind is its simulator module (a serial simulator, or a Modbus signal model) plus one line in
`simulators.registry`; a new MQTT format adds its payload to `simulators.mqtt_publishers` and one line there.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from devices.kind import DeviceKind
from devices.modbus_common import Field
from devices.registry import get_kind
from simulators.faults import SerialSimulator
from simulators.kit_config import KitConfig, KitDevice
from simulators.kit_mqtt import RoutePublisher, payload_values, plan_route
from simulators.modbus import ModbusSimulator, SimSlave
from simulators.registry import SIMULATORS, ModbusSim, SerialSim

__all__ = ["SimulatedDevice", "SimulatedKit", "payload_values", "plan_route", "to_toml"]


def _snapshot(items: collections.deque[dict[str, float]]) -> list[dict[str, float]]:
    """A copy of a deque another thread appends to (a copy racing an append is retried)."""
    for _ in range(100):
        try:
            return list(items)
        except RuntimeError:  # "deque mutated during iteration"
            continue
    return []


def _seed(seed: int, *parts: object) -> int:
    """A stable per-device seed (crc32: hash() is salted per process)."""
    return zlib.crc32("\x1f".join(str(p) for p in (seed, *parts)).encode()) & 0x7FFFFFFF


# ------------------------------------------------------------------------------------------ simulated devices


@dataclass(eq=False)
class SimulatedDevice:
    """One simulated device as the gateway will name it: where it is, what it emits and what it sent."""

    device_id: str
    kind: str
    link: str  # serial | modbus | mqtt
    port: str  # the serial port / Modbus port the gateway opens, or the MQTT topic published on
    _history: Callable[[], list[dict[str, float]]] = field(repr=False)
    _resolution: Mapping[str, float] = field(default_factory=dict, repr=False)
    _static: Mapping[str, str] = field(default_factory=dict, repr=False)
    _tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)

    def history(self) -> list[dict[str, float]]:
        """The recent frames / replies / messages, oldest first, as {quantity (or field name): value}."""
        return self._history()

    def quantities(self) -> set[str]:
        """The quantities this simulator emits (serial: as seen in the frames it sent so far)."""
        names = set(self._static.values()) if self._static else set()
        for item in self.history():
            names.update(self._static.get(k, k) for k in item)
        return names

    def series(self) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        """(quantity, tags) of every series the simulator feeds: per-phase registers carry a `phase` tag."""
        if self._tags:
            return {(self._static.get(n, n), tuple(sorted(t.items()))) for n, t in self._tags.items()}
        return {(q, ()) for q in self.quantities()}

    def sent(self, quantity: str) -> list[float]:
        """Every recent value of `quantity` the simulator sent (all phases / fields carrying it)."""
        out: list[float] = []
        for item in self.history():
            out.extend(v for k, v in item.items() if self._static.get(k, k) == quantity)
        return out

    def resolution(self, quantity: str) -> float:
        """The wire resolution of `quantity` (a register's scale; 0 when the value travels exactly)."""
        return self._resolution.get(quantity, 0.0)


# ------------------------------------------------------------------------------------------ Modbus


def _field_resolution(fields: Sequence[Field]) -> dict[str, float]:
    out: dict[str, float] = {}
    for f in fields:
        res = 0.0 if f.type.startswith("float") else abs(f.scale)
        out[f.quantity] = max(out.get(f.quantity, 0.0), res)
    return out


# ------------------------------------------------------------------------------------------ TOML output


def _without_none(value: Any) -> Any:
    """The value with every None entry of its tables left out (TOML has no null)."""
    if isinstance(value, Mapping):
        return {str(k): _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


def to_toml(data: Mapping[str, Any], header: str = "") -> str:
    """Write a config dict (plain values, tables, arrays of tables) as TOML that tomllib reads back equal."""
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    body = tomli_w.dumps(_without_none(data))
    return f"{comment}\n{body}" if comment else body


# ------------------------------------------------------------------------------------------ the kit


class SimulatedKit:
    """Simulators for every device and route of a kit config; `settings` / `toml()` point the gateway at them."""

    def __init__(
        self,
        config: KitConfig,
        broker: tuple[str, int] | None = None,
        seed: int = 1,
        *,
        mqtt_period_s: float = 1.0,
        modbus_transport: Literal["pty", "tcp"] = "pty",
    ) -> None:
        self.config = config
        self.source = config.source
        self._data = config.data
        self.seed = seed
        self.broker = broker
        self.mqtt_period_s = mqtt_period_s
        self.modbus_transport = modbus_transport
        missing = sorted({d.kind for d in config.devices} - set(SIMULATORS)
                         | {r.format for r in config.routes} - set(SIMULATORS))
        if missing:
            raise ValueError(f"no simulator for kind(s) {', '.join(missing)}: add them to simulators.registry")
        self.devices: dict[str, SimulatedDevice] = {}
        self.serial: dict[str, SerialSimulator] = {}
        self.modbus: dict[str, ModbusSimulator] = {}  # by the port written in the original config
        self._publishers: list[RoutePublisher] = []
        self._started = False
        self._stopped = False

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> SimulatedKit:
        """Start every simulator and publisher; build the rewritten config. Stops what started on failure."""
        if self._started:
            return self
        self._started = True
        try:
            self._start_serial()
            self._start_modbus()
            self._start_mqtt()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every publisher and simulator and join their threads (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        for pub in self._publishers:
            with contextlib.suppress(Exception):
                pub.stop()
        for sim in self.serial.values():
            with contextlib.suppress(Exception):
                sim.close()
        for bus in self.modbus.values():
            with contextlib.suppress(Exception):
                bus.close()

    def __enter__(self) -> SimulatedKit:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- starting ---------------------------------------------------------------------------------------------

    def _start_serial(self) -> None:
        for d in self.config.devices:
            spec = SIMULATORS[d.kind]
            if not isinstance(spec, SerialSim):
                continue
            sim = spec.cls(seed=_seed(self.seed, d.id), period_s=max(0.05, d.poll_interval), **spec.kwargs(d))
            self.serial[d.id] = sim

            def history(sim: SerialSimulator = sim) -> list[dict[str, float]]:
                return _snapshot(sim.history)

            self.devices[d.id] = SimulatedDevice(d.id, d.kind, "serial", sim.stable_port, _history=history)

    def _start_modbus(self) -> None:
        by_port: dict[str, list[KitDevice]] = {}
        for d in self.config.devices:
            if isinstance(SIMULATORS[d.kind], ModbusSim):
                by_port.setdefault(d.port, []).append(d)
        for port, devices in by_port.items():
            slaves = [SimSlave(d.address, d.kind, dict(d.options), seed=_seed(self.seed, d.id)) for d in devices]
            bus = ModbusSimulator(slaves, baudrate=devices[0].baudrate, transport=self.modbus_transport)
            self.modbus[port] = bus
            for d in devices:
                sim = SIMULATORS[d.kind]
                assert isinstance(sim, ModbusSim)
                fields = sim.fields(d.options)
                names = {f.name: f.quantity for f in fields}

                def history(bus: ModbusSimulator = bus, a: int = d.address,
                            names: Mapping[str, str] = names) -> list[dict[str, float]]:
                    # The signal model may compute more than the registers of this layout carry.
                    return [{k: v for k, v in h.items() if k in names} for h in bus.history(a)]

                self.devices[d.id] = SimulatedDevice(
                    d.id, d.kind, "modbus", bus.port, _history=history,
                    _resolution=_field_resolution(fields), _static=names,
                    _tags={f.name: dict(f.tags) for f in fields},
                )

    def _start_mqtt(self) -> None:
        routes = self.config.routes
        if not routes:
            return
        m = self.config.mqtt
        host, port = self.broker if self.broker is not None else (m.host, m.port)
        if not host:
            raise ValueError("the kit has MQTT routes but no broker: give broker=(host, port) or set mqtt.host")
        for i, route in enumerate(routes):
            plan = plan_route(route, i)
            pub = RoutePublisher(route, plan, host, port, _seed(self.seed, "route", i, route.topic),
                                  self.mqtt_period_s, m.username, m.password)
            if plan.device_id in self.devices:
                raise ValueError(f"route {route.topic!r} would publish as {plan.device_id!r}, which is already a "
                                 "device of the kit: give the route another device_id")
            self._publishers.append(pub)
            pub.start()
            self.devices[plan.device_id] = SimulatedDevice(
                plan.device_id, route.format, "mqtt", plan.topic, _history=pub.recent,
            )

    # -- the rewritten config -----------------------------------------------------------------------------------

    def config_dict(self) -> dict[str, Any]:
        """The config with every device's port on its simulator and [mqtt] on the publishers' broker."""
        data = json.loads(json.dumps(self._data))  # a deep copy of plain TOML values
        for d in data.get("devices", []):
            sim = self.devices.get(d.get("id", ""))
            if sim is not None:
                d["port"] = sim.port
        if self.broker is not None and self.config.routes:
            mqtt = data.setdefault("mqtt", {})
            mqtt["host"], mqtt["port"] = self.broker
        return data

    def toml(self) -> str:
        """The rewritten config as TOML text (`citygw run --config` reads it)."""
        header = (f"Generated by `citygw simulators` from {self.source} (seed {self.seed}): every device's port\n"
                  "points to its simulator; valid while the simulators run.")
        return to_toml(self.config_dict(), header)

    def write_config(self, path: str | os.PathLike[str]) -> Path:
        """Write the rewritten config to `path` (atomically) and return it."""
        out = Path(path)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(self.toml(), encoding="utf-8")
        os.replace(tmp, out)
        return out

    # -- reporting ----------------------------------------------------------------------------------------------

    def describe(self) -> list[str]:
        """One line per simulated device: id, kind, and where the gateway reads it."""
        lines = []
        for dev in self.devices.values():
            where = {"serial": "pty", "modbus": "Modbus RTU", "mqtt": "MQTT topic"}[dev.link]
            extra = ""
            if dev.link == "modbus":
                address = next(d.address for d in self.config.devices if d.id == dev.device_id)
                extra = f" (slave {address})"
            lines.append(f"{dev.device_id:<24} {dev.kind:<20} {where} {dev.port}{extra}")
        return lines

    def kind(self, device_id: str) -> DeviceKind:
        """The registered kind of a simulated device."""
        return get_kind(self.devices[device_id].kind)

    @property
    def publishers_refused(self) -> int:
        """MQTT messages the publishers' bounded client queues refused."""
        return sum(p.refused for p in self._publishers)
