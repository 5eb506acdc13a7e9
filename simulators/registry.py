"""Which simulator serves each device kind and MQTT payload format: one line per kind.

A serial kind names its simulator class (and the constructor arguments read from its config entry); a Modbus
kind names its register field table (from its device module) and the signal model its registers serve; an
MQTT format is published by `simulators.mqtt_publishers`. A new device kind with a simulator is its simulator
module plus one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from devices import noise_modbus, sdm120, sdm630, senseair_s8, water_probes
from devices.modbus_common import Field
from simulators.bswa_slm import BswaSlmSimulator
from simulators.faults import SerialSimulator
from simulators.kit_config import KitDevice
from simulators.mhz19b import Mhz19bSimulator
from simulators.modbus_models import Co2Model, DriftModel, NoiseModel, RegisterModel, Sdm120Model, Sdm630Model
from simulators.pms5003 import Pms5003Simulator, Pms5003tSimulator
from simulators.sds011 import Sds011Simulator
from simulators.wmbus_water import WmbusWaterSimulator

__all__ = ["MQTT", "SIMULATORS", "ModbusSim", "MqttSim", "SerialSim", "modbus_sim"]


@dataclass(frozen=True, slots=True)
class SerialSim:
    """A serial kind: its simulator class and the constructor arguments read from the device's config entry."""

    cls: type[SerialSimulator]
    kwargs: Callable[[KitDevice], dict[str, Any]] = lambda d: {}


@dataclass(frozen=True, slots=True)
class ModbusSim:
    """A Modbus kind: its register field table and the seeded model of the values its registers serve."""

    fields: Callable[[Mapping[str, Any]], tuple[Field, ...]]
    model: Callable[[int, tuple[Field, ...]], RegisterModel]  # (seed, fields) -> model
    status_register: int | None = None  # a status word the slave serves beside its fields
    out_of_range_status: int = 0  # that word while the slave reports implausible values


@dataclass(frozen=True, slots=True)
class MqttSim:
    """An MQTT payload format, published by `simulators.mqtt_publishers`."""


MQTT: Final = MqttSim()


def _bswa_kwargs(d: KitDevice) -> dict[str, Any]:
    # The gateway polls `options.address`, else `address` (gateway.app): the meter must answer to the same.
    address = d.options.get("address", d.address if d.address_given else 1)
    return {"address": int(address)}


def _wmbus_kwargs(d: KitDevice) -> dict[str, Any]:
    meter_ids = d.options.get("meter_ids") or []
    return {"meter_id": str(meter_ids[0])} if meter_ids else {}


def _water(kind: str, quantity: str, centre: float, spread: float, step: float) -> ModbusSim:
    def model(seed: int, fields: tuple[Field, ...]) -> RegisterModel:
        return DriftModel(seed, quantity, centre, spread, step)

    return ModbusSim(partial(water_probes.fields, kind), model)


SIMULATORS: dict[str, SerialSim | ModbusSim | MqttSim] = {
    "pms5003": SerialSim(Pms5003Simulator),
    "pms5003t": SerialSim(Pms5003tSimulator),
    "sds011": SerialSim(Sds011Simulator),
    "mhz19b": SerialSim(Mhz19bSimulator),
    "wmbus_water": SerialSim(WmbusWaterSimulator, _wmbus_kwargs),
    "bswa_slm": SerialSim(BswaSlmSimulator, _bswa_kwargs),
    "sdm120": ModbusSim(sdm120.fields, lambda seed, f: Sdm120Model(seed)),
    "sdm630": ModbusSim(sdm630.fields, lambda seed, f: Sdm630Model(seed)),
    "senseair_s8": ModbusSim(senseair_s8.fields, lambda seed, f: Co2Model(seed), senseair_s8.STATUS_REGISTER, 0x20),
    "ph_probe": _water("ph_probe", "ph", 7.3, 0.6, 0.01),
    "turbidity_probe": _water("turbidity_probe", "turbidity", 3.0, 2.5, 0.05),
    "conductivity_probe": _water("conductivity_probe", "conductivity", 650.0, 150.0, 2.0),
    "noise_modbus": ModbusSim(noise_modbus.fields, lambda seed, f: NoiseModel(seed, f[0].quantity)),
    "json": MQTT,
    "ttn_v3": MQTT,
    "tasmota": MQTT,
    "zigbee2mqtt": MQTT,
    "airrohr": MQTT,
    "telraam": MQTT,
    "line_protocol": MQTT,
}


def modbus_sim(kind: str) -> ModbusSim:
    """The Modbus simulation of `kind`; ValueError for a kind without one."""
    sim = SIMULATORS.get(kind)
    if not isinstance(sim, ModbusSim):
        raise ValueError(f"no Modbus simulation for kind {kind!r}")
    return sim
