"""The simulators registry: every registered kind exists, and every Modbus simulation serves all its fields."""

from __future__ import annotations

import pytest

from devices.registry import KINDS
from simulators.registry import SIMULATORS, ModbusSim, MqttSim, SerialSim, modbus_sim


@pytest.mark.parametrize("kind", sorted(SIMULATORS))
def test_each_entry_matches_its_kind_link(kind: str) -> None:
    link = {SerialSim: "serial", ModbusSim: "modbus", MqttSim: "mqtt"}[type(SIMULATORS[kind])]
    assert KINDS[kind].link == link


@pytest.mark.parametrize("kind", sorted(k for k, v in SIMULATORS.items() if isinstance(v, ModbusSim)))
def test_a_modbus_model_gives_a_value_for_every_register_field(kind: str) -> None:
    sim = modbus_sim(kind)
    fields = sim.fields({})
    values = sim.model(1, fields).values(1_700_000_000.0, 0.0)
    assert {f.name for f in fields} <= set(values)


def test_a_kind_without_a_modbus_simulation_is_refused() -> None:
    with pytest.raises(ValueError, match="no Modbus simulation"):
        modbus_sim("pms5003")
