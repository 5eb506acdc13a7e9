"""Simulated Modbus RTU slaves on one RS-485 line, served by a real pymodbus serial server.

The gateway opens `ModbusSimulator.port` (a symlink to a pty slave, like /dev/serial/by-id/… links) with
pyserial. The pymodbus serial server (behind `simulators.modbus_server`, the simulators' one pymodbus module)
opens the slave side of a second pty; the simulator's thread runs one asyncio loop that hosts the server and
copies bytes between the two pty masters — a null-modem cable, as socat would make. Several slave addresses
share the line (multi-drop); addresses nobody has stay silent. With `transport="tcp"` the same slaves are
served RTU-over-TCP by a pymodbus TCP server instead (like an RS-485-to-Ethernet converter), and `port` is a
`socket://127.0.0.1:N` URL.

Each slave's registers come from its device kind's field table and are refreshed on every request from the
kind's seeded signal model (`simulators.registry` names both; the models are in `simulators.modbus_models`).
Faults per address: `silence()` (no reply at all), `slow()` (reply after a delay), `out_of_range()`
(implausible values), `exception()` (exception replies with a given code). `unplug()`/`plug()` pull and
re-insert the USB adapter (the symlink then points to a new pty). Everything stops in `close()`: the loop,
the server, the pty fds, the temp directory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from devices.kind import ModbusRead
from devices.modbus_common import Field, encode_fields
from devices.registry import get_kind
from devices.vocabulary import QUANTITIES
from simulators.modbus_server import ILLEGAL_FUNCTION, RtuSlaveServer
from simulators.registry import modbus_sim

__all__ = ["ModbusSimulator", "SimSlave", "kind_fields"]

_HOUR = 3600.0


def kind_fields(kind: str, options: Mapping[str, Any]) -> tuple[Field, ...]:
    """The register field table of a Modbus device kind (what the simulator must serve)."""
    return modbus_sim(kind).fields(options)


@dataclass(frozen=True, slots=True)
class SimSlave:
    """One simulated slave: its kind, address, kind options (the register layout) and signal seed."""

    address: int
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0


# ----------------------------------------------------------------------------------------- slaves


class _SlaveRuntime:
    """State of one simulated slave: its model, last served values and fault switches."""

    def __init__(self, slave: SimSlave, clock: Callable[[], float]) -> None:
        self.slave = slave
        self.sim = modbus_sim(slave.kind)
        self.fields = self.sim.fields(slave.options)
        self.model = self.sim.model(slave.seed * 1000 + slave.address, self.fields)
        kind = get_kind(slave.kind)
        assert kind.modbus_reads is not None
        self.reads: list[ModbusRead] = kind.modbus_reads(slave.options)
        self.clock = clock
        self.last_t: float | None = None
        self.values: dict[str, float] = {}
        self.history: collections.deque[dict[str, float]] = collections.deque(maxlen=512)  # served, bounded
        self.status = 0  # the status word of kinds that serve one (Senseair S8 IR1)
        self.served = 0
        self.silent = False
        self.delay_s = 0.0
        self.out_of_range = False
        self.exception_code: int | None = None

    def blocks(self) -> list[tuple[int, int]]:
        """(first register, count) of each read: only these registers exist (strict meters answer others 02)."""
        return [(r.address, r.count) for r in sorted(self.reads, key=lambda r: r.address)]

    def refresh(self, registers: list[int], start_address: int) -> None:
        """Advance the signals to now and write the values into the register block."""
        t = self.clock()
        dt = 0.0 if self.last_t is None else max(0.0, t - self.last_t)
        self.last_t = t
        values = self.model.values(t, dt)
        self.status = 0
        status_register = self.sim.status_register
        if self.out_of_range:
            values = {name: _implausible(self._field(name), v) for name, v in values.items()}
            self.status = self.sim.out_of_range_status  # e.g. the Senseair S8's own "out of range" flag
        self.values = values
        for read in self.reads:
            regs = encode_fields(self.fields, read, values)
            if status_register is not None and read.address <= status_register < read.address + read.count:
                regs[status_register - read.address] = self.status
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

    def _answers(self, address: int) -> bool:
        # An address nobody has, or a silenced slave, stays silent (RS-485: no reply at all).
        with self._lock:
            rt = self._runtimes.get(address)
            return rt is not None and not rt.silent

    async def _action(self, address: int, start_address: int, registers: list[int], write: bool) -> int | None:
        with self._lock:
            rt = self._runtimes[address]
            delay, code = rt.delay_s, rt.exception_code
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            rt.served += 1
            if code is not None:
                return code
            if write:
                return ILLEGAL_FUNCTION  # the simulated devices are read-only
            rt.refresh(registers, start_address)
            rt.history.append(dict(rt.values))
        return None

    def _server(self) -> RtuSlaveServer:
        blocks = {address: rt.blocks() for address, rt in self._runtimes.items()}
        return RtuSlaveServer(blocks, self._action, self._answers)

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
        server = self._server()
        port = await server.serve_tcp()
        self.port = f"socket://127.0.0.1:{port}"
        self._ready.set()
        try:
            await stop.wait()
        finally:
            await server.shutdown()

    async def _serve_pty(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        server = self._server()
        await server.serve_serial(os.ttyname(self._srv_slave), self._baudrate)
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
