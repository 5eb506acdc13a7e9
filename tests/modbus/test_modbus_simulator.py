"""The Modbus simulator through a real pymodbus client: round trips over the pty line, faults, clean stop."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusIOException

from devices.kind import ModbusRead
from devices.modbus_common import read_request
from devices.reading import DecodeContext, DecodeError, Reading
from devices.registry import get_kind
from devices.vocabulary import QUANTITIES
from simulators.modbus import ModbusSimulator, SimSlave, kind_fields

SLAVES = [
    SimSlave(1, "sdm120", seed=3),
    SimSlave(2, "sdm630", seed=3),
    SimSlave(0xFE, "senseair_s8", seed=3),
    SimSlave(4, "ph_probe", {"temperature_register": 1, "max_gap": 1}, seed=3),
    SimSlave(5, "turbidity_probe", {"preset": "float_cdab"}, seed=3),
    SimSlave(6, "conductivity_probe", seed=3),
    SimSlave(7, "noise_modbus", seed=3),
]
BAUD = 115200  # a pty ignores the rate; a high one keeps pymodbus's receive polling short


def _sim_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "modbus-simulator"]


@pytest.fixture
def sim() -> Iterator[ModbusSimulator]:
    with ModbusSimulator(SLAVES, baudrate=BAUD) as s:
        yield s
    assert _sim_threads() == []


@pytest.fixture
def client(sim: ModbusSimulator) -> Iterator[ModbusSerialClient]:
    frames: list[tuple[bool, bytes]] = []

    def trace(sending: bool, data: bytes) -> bytes:
        frames.append((sending, bytes(data)))
        return data

    c = ModbusSerialClient(sim.port, baudrate=BAUD, timeout=0.3, retries=0, trace_packet=trace)
    c.frames = frames  # type: ignore[attr-defined]
    assert c.connect()
    yield c
    c.close()


def _read(c: ModbusSerialClient, address: int, read: ModbusRead) -> list[int]:
    fn = c.read_input_registers if read.function == 4 else c.read_holding_registers
    pdu = fn(read.address, count=read.count, device_id=address)
    assert not pdu.isError(), pdu
    return list(pdu.registers)


def _resolution(slave: SimSlave, name: str) -> float:
    field = next(f for f in kind_fields(slave.kind, slave.options) if f.name == name)
    return abs(field.scale) / 2 + 1e-9 if field.type != "float32" else 1e-6 * max(1.0, abs(field.scale))


@pytest.mark.parametrize("slave", SLAVES, ids=lambda s: s.kind)
def test_round_trip_registers_match_simulated_values(
    sim: ModbusSimulator, client: ModbusSerialClient, slave: SimSlave
) -> None:
    kind = get_kind(slave.kind)
    assert kind.modbus_reads is not None and kind.decode_registers is not None
    ctx = DecodeContext(device_id="x", options=slave.options)
    for read in kind.modbus_reads(slave.options):
        registers = _read(client, slave.address, read)
        served = sim.values(slave.address)
        readings = kind.decode_registers(read, registers, ctx)
        assert readings
        fields = {f.address: f for f in kind_fields(slave.kind, slave.options)}
        for r in readings:
            # map each reading back to its field by quantity+tags, then compare with what the server held
            name = next(
                f.name
                for f in fields.values()
                if f.quantity == r.quantity
                and dict(f.tags) == {k: v for k, v in r.tags.items() if k == "phase"}
                and read.address <= f.address < read.address + read.count
            )
            expected = served[name]
            tolerance = max(_resolution(slave, name), abs(expected) * 1e-6)
            assert r.value == pytest.approx(expected, abs=tolerance), (slave.kind, name)
            assert QUANTITIES[r.quantity].low <= r.value <= QUANTITIES[r.quantity].high


def test_raw_wire_frames_decode_with_the_full_frame_decoder(sim: ModbusSimulator, client: ModbusSerialClient) -> None:
    # The frames pymodbus actually put on the line go through decode(frame, ctx) with CRC and matching checks.
    kind = get_kind("sdm120")
    read = ModbusRead(4, 0x46, 6)
    _read(client, 1, read)
    frames: list[tuple[bool, bytes]] = client.frames  # type: ignore[attr-defined]
    sent = [d for s, d in frames if s][-1]
    received = [d for s, d in frames if not s][-1]
    assert sent == read_request(1, read)
    readings = kind.decode(received, DecodeContext(device_id="m", request=sent))
    served = sim.values(1)
    assert {r.quantity: r.value for r in readings} == pytest.approx(
        {q: served[q] for q in ("frequency", "energy_import", "energy_export")}, rel=1e-6
    )


def test_energy_total_increases_with_power(sim: ModbusSimulator, client: ModbusSerialClient) -> None:
    read = ModbusRead(4, 0x48, 2)
    first = _read(client, 1, read)
    e1 = sim.values(1)["energy_import"]
    threading.Event().wait(0.2)
    _read(client, 1, read)
    e2 = sim.values(1)["energy_import"]
    assert e2 > e1  # the meter integrates a positive load
    assert first != [0, 0]


def test_silent_slave_and_absent_address_do_not_answer(sim: ModbusSimulator, client: ModbusSerialClient) -> None:
    read = ModbusRead(3, 0, 1)
    before = sim.served(7)
    sim.silence(7)
    with pytest.raises(ModbusIOException):
        _read(client, 7, read)
    assert sim.served(7) == before
    with pytest.raises(ModbusIOException):
        _read(client, 77, read)  # nobody has address 77: RS-485 silence, not an exception reply
    sim.silence(7, False)
    assert _read(client, 7, read)
    assert sim.served(7) == before + 1


def test_exception_reply_fault(sim: ModbusSimulator, client: ModbusSerialClient) -> None:
    sim.exception(6, 0x04)
    pdu = client.read_holding_registers(1, count=1, device_id=6)
    assert pdu.isError() and pdu.exception_code == 0x04
    sim.exception(6, None)
    assert _read(client, 6, ModbusRead(3, 1, 1))
    # a read of registers the probe does not have: exception 02 like a strict device
    pdu = client.read_holding_registers(40, count=2, device_id=6)
    assert pdu.isError() and pdu.exception_code == 0x02


def test_slow_reply_fault_times_out_without_disturbing_the_next_slave(
    sim: ModbusSimulator, client: ModbusSerialClient
) -> None:
    sim.slow(7, 0.5)
    with pytest.raises(ModbusIOException):
        _read(client, 7, ModbusRead(3, 0, 1))  # timeout 0.3 s < 0.5 s delay
    # the late reply from address 7 arrives while address 6 is asked: it must not be taken for 6's answer
    registers = _read(client, 6, ModbusRead(3, 1, 1))
    threading.Event().wait(0.3)
    assert registers == [round(sim.values(6)["conductivity"])]
    sim.slow(7, 0)
    assert _read(client, 7, ModbusRead(3, 0, 1))


def test_out_of_range_fault(sim: ModbusSimulator, client: ModbusSerialClient) -> None:
    sim.out_of_range(4)
    kind = get_kind("ph_probe")
    assert kind.decode_registers is not None
    read = ModbusRead(3, 0, 2)
    [ph, temp] = kind.decode_registers(read, _read(client, 4, read), DecodeContext(options=SLAVES[3].options))
    assert ph.value > QUANTITIES["ph"].high
    assert temp.value > QUANTITIES["temperature"].high
    # the S8 cannot put more than 65535 ppm in a u16: it raises its own "out of range" status flag instead
    sim.out_of_range(0xFE)
    s8 = get_kind("senseair_s8")
    assert s8.decode_registers is not None
    with pytest.raises(DecodeError, match="out of range"):
        s8.decode_registers(ModbusRead(4, 0, 4), _read(client, 0xFE, ModbusRead(4, 0, 4)), DecodeContext())
    sim.out_of_range(0xFE, False)
    [co2] = s8.decode_registers(ModbusRead(4, 0, 4), _read(client, 0xFE, ModbusRead(4, 0, 4)), DecodeContext())
    assert 380 <= co2.value <= 2000


def test_seeded_signals_are_reproducible() -> None:
    def values() -> list[dict[str, float]]:
        out = []
        with ModbusSimulator([SimSlave(1, "sdm630", seed=11)], baudrate=BAUD, clock=lambda: 1_700_000_000.0) as s:
            c = ModbusSerialClient(s.port, baudrate=BAUD, timeout=0.3, retries=0)
            assert c.connect()
            try:
                for _ in range(3):
                    _read(c, 1, ModbusRead(4, 0, 18))
                    out.append(s.values(1))
            finally:
                c.close()
        return out

    first, second = values(), values()
    assert first == second
    assert first[0] != first[1]  # noise advances between requests


def test_unplug_and_plug_the_adapter(sim: ModbusSimulator, client: ModbusSerialClient) -> None:
    target = os.readlink(sim.port)
    sim.unplug()
    assert not os.path.exists(sim.port)
    with pytest.raises(Exception):  # noqa: B017 - pymodbus raises ConnectionException or ModbusIOException
        _read(client, 7, ModbusRead(3, 0, 1))
    sim.plug()
    client.close()
    assert client.connect()
    assert _read(client, 7, ModbusRead(3, 0, 1))
    assert os.path.exists(os.readlink(sim.port))  # the link points at the new, live pty
    assert target  # the old pty path was a real link target before the unplug


def test_tcp_transport_serves_rtu_over_socket_url() -> None:
    with ModbusSimulator([SimSlave(1, "noise_modbus")], transport="tcp") as s:
        assert s.port.startswith("socket://127.0.0.1:")
        c = ModbusSerialClient(s.port, timeout=0.5, retries=0)
        assert c.connect()
        try:
            [raw] = _read(c, 1, ModbusRead(3, 0, 1))
        finally:
            c.close()
        assert raw / 10 == pytest.approx(s.values(1)["noise_laeq"], abs=0.05)
    assert _sim_threads() == []


def test_close_removes_the_port_and_stops_the_thread() -> None:
    s = ModbusSimulator([SimSlave(1, "sdm120")])
    port = s.port
    assert os.path.islink(port)
    assert _sim_threads() == ["modbus-simulator"]
    s.close()
    assert not os.path.exists(port)
    assert _sim_threads() == []
    s.close()  # idempotent


def test_readings_are_plain_reading_objects(sim: ModbusSimulator, client: ModbusSerialClient) -> None:
    kind = get_kind("sdm630")
    assert kind.decode_registers is not None
    read = ModbusRead(4, 0, 18)
    readings = kind.decode_registers(read, _read(client, 2, read), DecodeContext(device_id="m3", tags={"site": "a"}))
    assert all(isinstance(r, Reading) for r in readings)
    assert {r.tags["phase"] for r in readings} == {"L1", "L2", "L3"}
    assert all(r.tags["site"] == "a" for r in readings)
