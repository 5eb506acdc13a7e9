"""Simulated Modbus RTU slaves on one RS-485 line, served by a real pymodbus serial server.

The gateway opens `ModbusSimulator.port` (a symlink to a pty slave, like /dev/serial/by-id/… links) with
pyserial. The pymodbus `ModbusSerialServer` opens the slave side of a second pty; the simulator's thread runs
one asyncio loop that hosts the server and copies bytes between the two pty masters — a null-modem cable, as
socat would make. Several slave addresses share the line (multi-drop); addresses nobody has stay silent.
With `transport="tcp"` the same slaves are served RTU-over-TCP by a pymodbus TCP server instead (like an
RS-485-to-Ethernet converter), and `port` is a `socket://127.0.0.1:N` URL.

Each slave's registers come from its device kind's field table and are refreshed on every request from
seeded signal models: a building's load curve for the Eastron meters (energy totals integrate the power),
office-hours CO2, slowly drifting water quality, noise following traffic. Faults per address: `silence()` (no
reply at all), `slow()` (reply after a delay), `out_of_range()` (implausible values), `exception()` (exception
replies with a given code). `unplug()`/`plug()` pull and re-insert the USB adapter (the symlink then points to
a new pty). Everything stops in `close()`: the loop, the server, the pty fds, the temp directory.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import os
import random
import shutil
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from devices import noise_modbus, sdm120, sdm630, senseair_s8, water_probes
from devices.kind import ModbusRead
from devices.modbus_common import Field, encode_fields
from devices.registry import get_kind
from devices.vocabulary import QUANTITIES
from simulators.signals import DiurnalSignal

__all__ = ["ModbusSimulator", "SimSlave", "kind_fields"]

_HOUR = 3600.0


def kind_fields(kind: str, options: Mapping[str, Any]) -> tuple[Field, ...]:
    """The register field table of a Modbus device kind (what the simulator must serve)."""
    if kind == "sdm120":
        return sdm120.fields(options)
    if kind == "sdm630":
        return sdm630.fields(options)
    if kind == "senseair_s8":
        return senseair_s8.fields(options)
    if kind == "noise_modbus":
        return noise_modbus.fields(options)
    if kind in water_probes.PRESETS:
        return water_probes.fields(kind, options)
    raise ValueError(f"no Modbus simulation for kind {kind!r}")


@dataclass(frozen=True, slots=True)
class SimSlave:
    """One simulated slave: its kind, address, kind options (the register layout) and signal seed."""

    address: int
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0


# ----------------------------------------------------------------------------------------- signal models


class _Model(abc.ABC):
    """Values of one slave's fields (by field name) at time t; `dt` is the time since the previous call."""

    @abc.abstractmethod
    def values(self, t: float, dt: float) -> dict[str, float]:
        """The slave's field values at `t`."""


class _LoadCurve:
    """A building's electrical load: night base load, office-hours plateau, noise; seeded."""

    def __init__(self, seed: int, base_w: float, peak_w: float) -> None:
        self._signal = DiurnalSignal(base_w, peak_w, peak_w * 0.03, seed, shape="sine", peak_hour=13.5, floor=20)

    def power(self, t: float) -> float:
        return self._signal.value_at(t)


class _Sdm120Model(_Model):
    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self._load = _LoadCurve(seed, base_w=rng.uniform(150, 400), peak_w=rng.uniform(1500, 3500))
        self._volt = DiurnalSignal(229.0, 3.0, 0.4, seed + 1, shape="sine", peak_hour=3.0)
        self._rng = rng
        self._import = rng.uniform(500, 20000)

    def values(self, t: float, dt: float) -> dict[str, float]:
        p = self._load.power(t)
        v = self._volt.value_at(t)
        pf = max(0.5, min(1.0, 0.9 + self._rng.gauss(0, 0.02)))
        self._import += p * dt / _HOUR / 1000.0
        return {
            "voltage": v,
            "current": p / (v * pf),
            "active_power": p,
            "power_factor": pf,
            "frequency": 50.0 + self._rng.gauss(0, 0.015),
            "energy_import": self._import,
            "energy_export": 0.0,
        }


class _Sdm630Model(_Model):
    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self._rng = rng
        self._loads = [_LoadCurve(seed + i, rng.uniform(500, 1500), rng.uniform(4000, 9000)) for i in range(3)]
        self._volts = [DiurnalSignal(230.0, 3.0, 0.5, seed + 10 + i, shape="sine", peak_hour=3.0) for i in range(3)]
        self._import = rng.uniform(10000, 300000)
        self._export = rng.uniform(0, 50)

    def values(self, t: float, dt: float) -> dict[str, float]:
        out: dict[str, float] = {}
        total = 0.0
        for i, phase in enumerate(("l1", "l2", "l3")):
            p = self._loads[i].power(t)
            v = self._volts[i].value_at(t)
            pf = max(0.5, min(1.0, 0.92 + self._rng.gauss(0, 0.02)))
            out[f"voltage_{phase}"] = v
            out[f"current_{phase}"] = p / (v * pf)
            out[f"active_power_{phase}"] = p
            out[f"power_factor_{phase}"] = pf
            total += p
        self._import += total * dt / _HOUR / 1000.0
        out.update(
            active_power_total=total,
            frequency=50.0 + self._rng.gauss(0, 0.015),
            energy_import=self._import,
            energy_export=self._export,
        )
        return out


class _Co2Model(_Model):
    """Office CO2: outdoor ~420 ppm at night, rising with occupancy during the day."""

    def __init__(self, seed: int) -> None:
        self._signal = DiurnalSignal(420.0, 650.0, 15.0, seed, shape="sine", peak_hour=15.0, floor=380)

    def values(self, t: float, dt: float) -> dict[str, float]:
        return {"co2": self._signal.value_at(t)}


class _DriftModel(_Model):
    """A slowly drifting water-quality value (bounded random walk) with the water temperature."""

    def __init__(self, seed: int, quantity: str, centre: float, spread: float, step: float) -> None:
        self._rng = random.Random(seed)
        self._quantity = quantity
        self._centre = centre
        self._spread = spread
        self._step = step
        self._value = centre + self._rng.uniform(-spread, spread) / 2
        self._temp = DiurnalSignal(14.0, 4.0, 0.05, seed + 1, shape="sine", peak_hour=16.0, floor=0.5)

    def values(self, t: float, dt: float) -> dict[str, float]:
        pull = (self._centre - self._value) * 0.05  # mean reversion keeps the walk within a realistic band
        self._value += pull + self._rng.gauss(0, self._step)
        self._value = min(self._centre + self._spread, max(self._centre - self._spread, self._value))
        return {self._quantity: self._value, "temperature": self._temp.value_at(t)}


class _NoiseModel(_Model):
    """Street noise: about 45 dB at night, 65-70 dB in rush hours."""

    def __init__(self, seed: int, quantity: str) -> None:
        self._signal = DiurnalSignal(44.0, 25.0, 2.0, seed, shape="rush", floor=30)
        self._quantity = quantity

    def values(self, t: float, dt: float) -> dict[str, float]:
        return {self._quantity: self._signal.value_at(t)}


def _model_for(slave: SimSlave, fields: tuple[Field, ...]) -> _Model:
    seed = slave.seed * 1000 + slave.address
    if slave.kind == "sdm120":
        return _Sdm120Model(seed)
    if slave.kind == "sdm630":
        return _Sdm630Model(seed)
    if slave.kind == "senseair_s8":
        return _Co2Model(seed)
    if slave.kind == "ph_probe":
        return _DriftModel(seed, "ph", 7.3, 0.6, 0.01)
    if slave.kind == "turbidity_probe":
        return _DriftModel(seed, "turbidity", 3.0, 2.5, 0.05)
    if slave.kind == "conductivity_probe":
        return _DriftModel(seed, "conductivity", 650.0, 150.0, 2.0)
    if slave.kind == "noise_modbus":
        return _NoiseModel(seed, fields[0].quantity)
    raise ValueError(f"no Modbus simulation for kind {slave.kind!r}")


# ----------------------------------------------------------------------------------------- slaves


class _SlaveRuntime:
    """State of one simulated slave: its model, last served values and fault switches."""

    def __init__(self, slave: SimSlave, clock: Callable[[], float]) -> None:
        self.slave = slave
        self.fields = kind_fields(slave.kind, slave.options)
        self.model = _model_for(slave, self.fields)
        kind = get_kind(slave.kind)
        assert kind.modbus_reads is not None
        self.reads: list[ModbusRead] = kind.modbus_reads(slave.options)
        self.clock = clock
        self.last_t: float | None = None
        self.values: dict[str, float] = {}
        self.history: collections.deque[dict[str, float]] = collections.deque(maxlen=512)  # served, bounded
        self.status = 0  # Senseair S8 IR1 status word
        self.served = 0
        self.silent = False
        self.delay_s = 0.0
        self.out_of_range = False
        self.exception_code: int | None = None

    def simdata(self) -> list[SimData]:
        # Only the registers the kind reads exist: reads spanning others get exception 02 (strict meters).
        return [
            SimData(r.address, count=r.count, values=0, datatype=DataType.REGISTERS)
            for r in sorted(self.reads, key=lambda r: r.address)
        ]

    def refresh(self, registers: list[int], start_address: int) -> None:
        """Advance the signals to now and write the values into the register block."""
        t = self.clock()
        dt = 0.0 if self.last_t is None else max(0.0, t - self.last_t)
        self.last_t = t
        values = self.model.values(t, dt)
        self.status = 0
        if self.out_of_range:
            values = {name: _implausible(self._field(name), v) for name, v in values.items()}
            if self.slave.kind == "senseair_s8":
                self.status = 0x20  # the sensor's own "out of range" flag
        self.values = values
        for read in self.reads:
            regs = encode_fields(self.fields, read, values)
            if (
                self.slave.kind == "senseair_s8"
                and read.address <= senseair_s8.STATUS_REGISTER < read.address + read.count
            ):
                regs[senseair_s8.STATUS_REGISTER - read.address] = self.status
            offset = read.address - start_address
            registers[offset : offset + read.count] = regs

    def _field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


def _implausible(f: Field | None, value: float) -> float:
    """A value above the quantity's plausible range, when the register type can carry one (else unchanged)."""
    if f is None:
        return value
    bad = QUANTITIES[f.quantity].high * 1.5 + 1
    if f.type in ("u16", "s16"):
        top = (0xFFFF if f.type == "u16" else 0x7FFF) * f.scale + f.offset
        if bad > top:  # e.g. CO2 in a u16: the register cannot exceed the range
            return value
    return bad


# ----------------------------------------------------------------------------------------- simulator


class ModbusSimulator:
    """Simulated Modbus RTU slaves on one pty line, answered by a real pymodbus serial server."""

    def __init__(
        self,
        slaves: list[SimSlave],
        *,
        baudrate: int = 9600,
        clock: Callable[[], float] = time.time,
        transport: str = "pty",
        start_timeout: float = 5.0,
    ) -> None:
        if not slaves:
            raise ValueError("a simulated bus needs at least one slave")
        addresses = [s.address for s in slaves]
        if len(set(addresses)) != len(addresses):
            raise ValueError("two simulated slaves share an address")
        self._lock = threading.Lock()
        self._runtimes = {s.address: _SlaveRuntime(s, clock) for s in slaves}
        if transport not in ("pty", "tcp"):
            raise ValueError("transport must be 'pty' or 'tcp'")
        self._baudrate = baudrate
        self._tcp = transport == "tcp"
        self._dir = tempfile.mkdtemp(prefix="citygw-modbus-")
        self.port = os.path.join(self._dir, "ttyRS485")  # replaced by socket://… for transport="tcp"
        self._gw_master = self._gw_slave = -1  # gateway side pty (A)
        self._srv_master = self._srv_slave = -1  # server side pty (B)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.bytes_to_server = 0
        self.bytes_to_gateway = 0
        self._thread = threading.Thread(target=self._run, name="modbus-simulator", daemon=True)
        try:
            if not self._tcp:
                self._srv_master, self._srv_slave = _open_raw_pty()
                self._open_gateway_side()
            self._thread.start()
            if not self._ready.wait(start_timeout) or self._error is not None:
                raise RuntimeError(f"Modbus simulator did not start: {self._error!r}")
        except BaseException:
            self.close()
            raise

    # --------------------------------------------------------------------------------- public surface

    def values(self, address: int) -> dict[str, float]:
        """The values (by field name) the slave at `address` served in its latest reply."""
        with self._lock:
            return dict(self._runtimes[address].values)

    def history(self, address: int) -> list[dict[str, float]]:
        """The values the slave at `address` served, oldest first (the last 512 replies)."""
        with self._lock:
            return list(self._runtimes[address].history)

    def served(self, address: int) -> int:
        """How many requests the slave at `address` has answered (normal or exception replies)."""
        with self._lock:
            return self._runtimes[address].served

    def silence(self, address: int, silent: bool = True) -> None:
        """Make a slave stop answering (as if unpowered), or answer again."""
        with self._lock:
            self._runtimes[address].silent = silent

    def slow(self, address: int, delay_s: float) -> None:
        """Delay every reply of a slave by `delay_s` seconds (0 = normal)."""
        with self._lock:
            self._runtimes[address].delay_s = max(0.0, delay_s)

    def out_of_range(self, address: int, enabled: bool = True) -> None:
        """Make a slave report implausible values (S8: also its out-of-range status flag)."""
        with self._lock:
            self._runtimes[address].out_of_range = enabled

    def exception(self, address: int, code: int | None = 0x04) -> None:
        """Make a slave answer every read with exception `code` (None = normal replies)."""
        with self._lock:
            self._runtimes[address].exception_code = code

    def unplug(self) -> None:
        """Pull the gateway-side adapter: its pty closes (I/O errors), the port path vanishes."""
        self._call_in_loop(self._close_gateway_side)

    def plug(self) -> None:
        """Re-insert the adapter: a new pty behind the same `port` path."""
        self._call_in_loop(self._open_gateway_side_in_loop)

    def close(self) -> None:
        """Stop the server and the loop, join the thread, close every fd and remove the port path."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for name in ("_gw_master", "_gw_slave", "_srv_master", "_srv_slave"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> ModbusSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------- pty plumbing

    def _open_gateway_side(self) -> None:
        master, slave = _open_raw_pty()
        self._gw_master, self._gw_slave = master, slave
        tmp = self.port + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.port)  # atomic: the gateway never sees a half-made link

    def _open_gateway_side_in_loop(self) -> None:
        if self._gw_master >= 0:
            return
        self._open_gateway_side()
        assert self._loop is not None
        self._loop.add_reader(self._gw_master, self._to_server)

    def _close_gateway_side(self) -> None:
        if self._gw_master < 0:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._gw_master)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port)
        for fd in (self._gw_master, self._gw_slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._gw_master = self._gw_slave = -1

    def _call_in_loop(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if self._tcp:
            raise RuntimeError("unplug/plug need the pty transport")
        if loop is None or not self._thread.is_alive():
            raise RuntimeError("simulator is not running")
        done = threading.Event()

        def call() -> None:
            try:
                fn()
            finally:
                done.set()

        loop.call_soon_threadsafe(call)
        if not done.wait(5):
            raise RuntimeError("simulator loop did not respond")

    def _to_server(self) -> None:
        data = _read_master(self._gw_master)
        if data and self._srv_master >= 0:
            self.bytes_to_server += len(data)
            _write_all(self._srv_master, data)

    def _to_gateway(self) -> None:
        data = _read_master(self._srv_master)
        if data and self._gw_master >= 0:
            self.bytes_to_gateway += len(data)
            _write_all(self._gw_master, data)

    # --------------------------------------------------------------------------------- server

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        # An incoming request for an address nobody has, or a silenced slave, gets no reply at all:
        # returning None makes the pymodbus request handler skip the request (RS-485 silence).
        if sending:
            return pdu
        with self._lock:
            rt = self._runtimes.get(pdu.dev_id)
            if rt is None or rt.silent:
                return None  # type: ignore[return-value]
        return pdu

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
        *,
        slave_address: int,
    ) -> ExcCodes | None:
        with self._lock:
            rt = self._runtimes[slave_address]
            delay, code = rt.delay_s, rt.exception_code
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            rt.served += 1
            if code is not None:
                return ExcCodes(code)
            if set_values is not None:
                return ExcCodes.ILLEGAL_FUNCTION  # the simulated devices are read-only
            rt.refresh(registers, start_address)
            rt.history.append(dict(rt.values))
        return None

    def _devices(self) -> list[SimDevice]:
        devices = []
        for address, rt in self._runtimes.items():

            async def action(
                fc: int,
                start: int,
                addr: int,
                count: int,
                regs: list[int],
                values: list[int] | list[bool] | None,
                _address: int = address,
            ) -> ExcCodes | None:
                return await self._action(fc, start, addr, count, regs, values, slave_address=_address)

            devices.append(SimDevice(id=address, simdata=rt.simdata(), action=action))
        return devices

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the constructor / kept for diagnosis
            self._error = exc
            self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        if self._tcp:
            await self._serve_tcp(self._stop)
        else:
            await self._serve_pty(self._stop)

    async def _serve_tcp(self, stop: asyncio.Event) -> None:
        server = ModbusTcpServer(
            self._devices(),
            framer=FramerType.RTU,
            address=("127.0.0.1", 0),
            ignore_missing_devices=True,
            trace_pdu=self._trace_pdu,
        )
        await server.serve_forever(background=True)
        listener = server.transport
        sockets = getattr(listener, "sockets", None)
        if not sockets:
            await server.shutdown()
            raise RuntimeError("pymodbus TCP server has no listening socket")
        self.port = f"socket://127.0.0.1:{sockets[0].getsockname()[1]}"
        self._ready.set()
        try:
            await stop.wait()
        finally:
            await server.shutdown()

    async def _serve_pty(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        server = ModbusSerialServer(
            self._devices(),
            port=os.ttyname(self._srv_slave),
            baudrate=self._baudrate,
            ignore_missing_devices=True,
            reconnect_delay=0,
            trace_pdu=self._trace_pdu,
        )
        await server.serve_forever(background=True)
        loop.add_reader(self._gw_master, self._to_server)
        loop.add_reader(self._srv_master, self._to_gateway)
        self._ready.set()
        try:
            await stop.wait()
        finally:
            if self._gw_master >= 0:
                loop.remove_reader(self._gw_master)
            loop.remove_reader(self._srv_master)
            await server.shutdown()


def _open_raw_pty() -> tuple[int, int]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave


def _read_master(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except (BlockingIOError, InterruptedError):
        return b""
    except OSError:  # the other side closed: nothing to forward
        return b""


def _write_all(fd: int, data: bytes) -> None:
    # Frames are a few hundred bytes at most and the pty buffer holds 4 KiB; a full buffer means the other
    # side is not reading (port closed), and the frame is lost like on a real line.
    with contextlib.suppress(OSError):
        view = memoryview(data)
        deadline = time.monotonic() + 0.5
        while view and time.monotonic() < deadline:
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            view = view[n:]
