"""The one owner of a Modbus RTU serial port (RS-485 multi-drop): a thread that serialises every request.

`ModbusBus` runs a dedicated thread holding pymodbus's synchronous `ModbusSerialClient` for one port (a
device path, a pty, or any pyserial URL such as `socket://host:port` — pymodbus opens it with
`serial.serial_for_url`). Every device on the bus is polled from that thread only, so two slaves can never
talk over each other. Per device: its own poll interval (fixed-rate schedule), timeout and retries; between
any two requests the bus keeps an inter-request silence (≥ 3.5 character times by default).

Failures are contained per device: a device that does not answer `quarantine_after` polls in a row is
quarantined — reported unavailable through `Emitter.device_state(..., False, reason)` and logged once — and
is then only probed (one attempt, no retries) at an exponentially growing interval, capped, so it costs the
others little bus time. Its first answer ends the quarantine (reported and logged once). Exception replies
and undecodable data are counted as rejections (`Emitter.rejected`) but prove the device is alive.

A port that fails (adapter unplugged, I/O error) is closed and reopened with capped exponential backoff; its
devices are reported unavailable meanwhile; the loss and the reopening are logged once each.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from devices.kind import DeviceKind, ModbusRead
from devices.modbus_common import READ_FUNCTIONS, exception_name, exception_reply, read_reply, read_request
from devices.reading import DecodeContext, DecodeError, Reading
from devices.registry import get_kind
from ingest.base import Emitter, ThreadStarter, plain_thread

__all__ = ["DeviceStats", "ModbusBus", "ModbusDevice", "default_inter_request_delay"]

log = logging.getLogger("citygw.modbus")


def default_inter_request_delay(baudrate: int) -> float:
    """3.5 character times of 11 bits (Modbus RTU), and the spec's fixed 1.75 ms above 19200 baud."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * 11 / baudrate


@dataclass(frozen=True, slots=True)
class ModbusDevice:
    """One slave on the bus: which kind it is, where, how often to poll, and its kind options."""

    device_id: str
    kind: str
    address: int
    poll_interval: float = 10.0
    options: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None  # None: the bus default
    retries: int | None = None  # None: the bus default


@dataclass(slots=True)
class DeviceStats:
    """Counters of one device (a snapshot is returned by `ModbusBus.stats()`)."""

    polls: int = 0
    polls_ok: int = 0
    no_reply: int = 0  # polls that got no answer after all attempts
    retries: int = 0  # extra attempts made
    exception_replies: int = 0
    rejected: int = 0  # decode errors and exception replies
    readings: int = 0
    overruns: int = 0  # scheduled polls skipped because the bus was busy
    available: bool | None = None  # None until the first poll settles it
    quarantined: bool = False


class _NoReplyError(Exception):
    """A request got no valid answer within its timeout and retries."""


class _PortError(Exception):
    """The port itself failed (closed, unplugged, cannot be opened)."""


@dataclass(slots=True)
class _Slave:
    device: ModbusDevice
    kind: DeviceKind
    reads: list[ModbusRead]
    next_due: float = 0.0
    consecutive_failures: int = 0
    probe_interval: float = 0.0
    stats: DeviceStats = field(default_factory=DeviceStats)


class ModbusBus:
    """Owns one serial port and polls every Modbus device on it from a single thread."""

    def __init__(
        self,
        port: str,
        devices: Iterable[ModbusDevice],
        emitter: Emitter,
        *,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        bytesize: int = 8,
        timeout: float = 1.0,
        retries: int = 1,
        inter_request_delay: float | None = None,
        quarantine_after: int = 3,
        probe_interval_max: float = 300.0,
        reconnect_delay: float = 0.5,
        reconnect_delay_max: float = 30.0,
        clock: Callable[[], int] = time.time_ns,
        quiet_pymodbus: bool = True,
        start_thread: ThreadStarter = plain_thread,
    ) -> None:
        if timeout <= 0 or retries < 0 or quarantine_after < 1:
            raise ValueError("timeout must be > 0, retries >= 0 and quarantine_after >= 1")
        self.port = port
        self._emitter = emitter
        self._start_thread = start_thread  # the gateway's supervisor restarts the bus thread after a crash
        self._clock = clock
        self._timeout = timeout
        self._retries = retries
        self._delay = default_inter_request_delay(baudrate) if inter_request_delay is None else inter_request_delay
        self._quarantine_after = quarantine_after
        self._probe_max = probe_interval_max
        self._reconnect_delay = reconnect_delay
        self._reconnect_max = reconnect_delay_max
        self._quiet_pymodbus = quiet_pymodbus
        self._slaves = [self._prepare(d) for d in devices]
        self._check_unique(self._slaves)
        # retries=0: the bus retries itself, keeping the inter-request silence and not retrying probes.
        self._client = ModbusSerialClient(
            port,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            bytesize=bytesize,
            timeout=timeout,
            retries=0,
            name=f"citygw {port}",
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port_ok: bool | None = None
        self._last_io = 0.0
        self.emitter_errors = 0
        self.port_failures = 0

    # ----------------------------------------------------------------------------------------- setup

    @staticmethod
    def _prepare(device: ModbusDevice) -> _Slave:
        kind = get_kind(device.kind)
        if kind.link != "modbus" or kind.modbus_reads is None or kind.decode_registers is None:
            raise ValueError(f"device {device.device_id!r}: kind {device.kind!r} is not a Modbus device kind")
        if not 1 <= device.address <= 255:
            raise ValueError(f"device {device.device_id!r}: Modbus address {device.address} outside 1..255")
        if not device.poll_interval > 0 or not math.isfinite(device.poll_interval):
            raise ValueError(f"device {device.device_id!r}: poll interval must be a positive number of seconds")
        try:
            reads = kind.modbus_reads(device.options)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"device {device.device_id!r} ({device.kind}): {exc}") from None
        for read in reads:
            if read.function not in READ_FUNCTIONS:
                raise ValueError(f"device {device.device_id!r}: read function {read.function} is not 3 or 4")
        return _Slave(device, kind, reads)

    @staticmethod
    def _check_unique(slaves: list[_Slave]) -> None:
        ids: set[str] = set()
        addresses: dict[int, str] = {}
        for s in slaves:
            d = s.device
            if d.device_id in ids:
                raise ValueError(f"device id {d.device_id!r} appears twice on one bus")
            ids.add(d.device_id)
            if d.address in addresses:
                raise ValueError(
                    f"devices {addresses[d.address]!r} and {d.device_id!r} share Modbus address {d.address} "
                    "on one bus; give each slave its own address"
                )
            addresses[d.address] = d.device_id

    # ----------------------------------------------------------------------------------------- control

    def start(self) -> None:
        """Start the bus thread (polls begin at once, staggered by the inter-request delay)."""
        if self._thread is not None:
            raise RuntimeError("bus already started")
        if self._quiet_pymodbus:
            # pymodbus logs every timeout at ERROR with a frame dump; this bus reports the same events once.
            logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)
        now = time.monotonic()
        for s in self._slaves:
            s.next_due = now
        self._stop.clear()
        self._thread = self._start_thread(f"modbus-bus {self.port}", self._run, self._stop)

    def stop(self, timeout: float | None = None) -> None:
        """Stop polling, join the thread and close the port (waits at most one request timeout)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        self._client.close()

    def __enter__(self) -> ModbusBus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, DeviceStats]:
        """A copy of every device's counters and state, keyed by device id."""
        return {
            s.device.device_id: DeviceStats(**{k: getattr(s.stats, k) for k in DeviceStats.__slots__})
            for s in self._slaves
        }

    @property
    def port_open(self) -> bool:
        """True while the port is open and working."""
        return bool(self._port_ok)

    # ----------------------------------------------------------------------------------------- loop

    def _run(self) -> None:
        reconnect_delay = self._reconnect_delay
        while not self._stop.is_set():
            if not self._client.connected:
                if not self._open_port():
                    self._stop.wait(reconnect_delay)
                    reconnect_delay = min(reconnect_delay * 2, self._reconnect_max)
                    continue
                reconnect_delay = self._reconnect_delay
            slave = min(self._slaves, key=lambda s: s.next_due, default=None)
            if slave is None:
                self._stop.wait(1.0)
                continue
            wait = slave.next_due - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, 1.0))
                continue
            try:
                self._poll(slave)
            except _PortError as exc:
                self._port_lost(str(exc))
            except Exception:  # a bug must not silently end polling of the whole bus
                log.exception("unexpected error polling %s on %s", slave.device.device_id, self.port)
                self._reschedule(slave, time.monotonic())
        self._client.close()

    def _open_port(self) -> bool:
        try:
            ok = self._client.connect()
        except Exception as exc:  # pyserial raises several undocumented types here
            ok = False
            reason = str(exc)
        else:
            reason = "cannot open port"
        if ok:
            if self._port_ok is False:
                log.info("Modbus port %s reopened", self.port)
            self._port_ok = True
            now = time.monotonic()
            for s in self._slaves:
                s.next_due = max(s.next_due, now) if not s.stats.quarantined else s.next_due
            return True
        if self._port_ok is not False:
            log.warning("Modbus port %s unavailable (%s); retrying with backoff", self.port, reason)
            self.port_failures += 1
            self._mark_all_unavailable(f"port {self.port} unavailable: {reason}")
        self._port_ok = False
        return False

    def _port_lost(self, reason: str) -> None:
        self._client.close()
        if self._port_ok is not False:
            log.warning("Modbus port %s lost (%s); reopening with backoff", self.port, reason)
            self.port_failures += 1
            self._mark_all_unavailable(f"port {self.port} lost: {reason}")
        self._port_ok = False

    def _mark_all_unavailable(self, reason: str) -> None:
        for s in self._slaves:
            s.consecutive_failures = 0
            if s.stats.available is not False:
                s.stats.available = False
                self._emit_state(s, False, reason)

    # ----------------------------------------------------------------------------------------- polling

    def _poll(self, slave: _Slave) -> None:
        d = slave.device
        probing = slave.stats.quarantined
        attempts = 1 if probing else 1 + (self._retries if d.retries is None else d.retries)
        slave.stats.polls += 1
        ts = self._clock()
        ctx = DecodeContext(device_id=d.device_id, received_ns=ts, tags=d.tags, options=d.options)
        readings: list[Reading] = []
        try:
            for read in slave.reads:
                result = self._request(slave, read, attempts)
                if isinstance(result, int):
                    slave.stats.exception_replies += 1
                    self._reject(
                        slave,
                        f"exception {result:02x} ({exception_name(result)}) to "
                        f"{READ_FUNCTIONS[read.function]} 0x{read.address:04x}+{read.count}",
                        exception_reply(d.address, read.function, result),
                    )
                    continue
                try:
                    assert slave.kind.decode_registers is not None
                    readings.extend(slave.kind.decode_registers(read, result, ctx))
                except DecodeError as exc:
                    self._reject(slave, exc.reason, read_reply(d.address, read.function, result))
        except _NoReplyError as exc:
            if self._stop.is_set():  # interrupted by stop(): not the device's fault
                slave.stats.polls -= 1
                return
            # Readings of earlier reads in this poll are dropped with it: a poll is all-or-nothing.
            self._failed(slave, str(exc))
            return
        slave.stats.polls_ok += 1
        self._succeeded(slave)
        if readings:
            slave.stats.readings += len(readings)
            try:
                self._emitter.readings(readings)
            except Exception:
                self.emitter_errors += 1
                log.exception("emitter refused readings of %s", d.device_id)

    def _request(self, slave: _Slave, read: ModbusRead, attempts: int) -> list[int] | int:
        """Registers, or the exception code of an exception reply; raises _NoReplyError or _PortError."""
        d = slave.device
        # pymodbus reads its timeout from comm_params on each receive: this gives per-device timeouts.
        timeout = self._timeout if d.timeout is None else d.timeout
        self._client.comm_params.timeout_connect = timeout
        call = self._client.read_input_registers if read.function == 4 else self._client.read_holding_registers
        last = "no reply"
        for attempt in range(attempts):
            if self._stop.is_set():
                raise _NoReplyError("bus stopping")
            if attempt:
                slave.stats.retries += 1
            self._keep_silence()
            try:
                pdu = call(read.address, count=read.count, device_id=d.address)
            except ConnectionException as exc:
                raise _PortError(str(exc) or "connection lost") from None
            except ModbusIOException:
                last = f"no answer within {timeout:g} s"
                continue
            except ModbusException as exc:
                last = str(exc)
                continue
            except OSError as exc:
                raise _PortError(str(exc)) from None
            finally:
                self._last_io = time.monotonic()
            if not self._client.connected:
                raise _PortError("port closed after an I/O error")
            if pdu.isError():
                code = getattr(pdu, "exception_code", None)
                if isinstance(code, int):
                    return code
                last = "unrecognised error reply"
                continue
            registers = list(getattr(pdu, "registers", []) or [])
            if len(registers) != read.count:
                last = f"reply carried {len(registers)} registers, {read.count} were asked for"
                continue
            return registers
        request = read_request(d.address, read).hex(" ")
        raise _NoReplyError(f"no valid reply to {request} after {attempts} attempt(s): {_short(last)}")

    def _keep_silence(self) -> None:
        remaining = self._last_io + self._delay - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    def _succeeded(self, slave: _Slave) -> None:
        s = slave.stats
        slave.consecutive_failures = 0
        if s.quarantined:
            s.quarantined = False
            log.info(
                "Modbus device %s (address %d on %s) answers again",
                slave.device.device_id,
                slave.device.address,
                self.port,
            )
        if s.available is not True:
            s.available = True
            self._emit_state(slave, True, "answering")
        self._reschedule(slave, time.monotonic())

    def _failed(self, slave: _Slave, reason: str) -> None:
        s = slave.stats
        s.no_reply += 1
        slave.consecutive_failures += 1
        now = time.monotonic()
        if s.quarantined:
            slave.probe_interval = min(slave.probe_interval * 2, self._probe_max)
            slave.next_due = now + slave.probe_interval
            return
        if slave.consecutive_failures >= self._quarantine_after:
            s.quarantined = True
            slave.probe_interval = min(slave.device.poll_interval, self._probe_max)
            slave.next_due = now + slave.probe_interval
            log.warning(
                "Modbus device %s (address %d on %s) quarantined after %d polls without answer: %s",
                slave.device.device_id,
                slave.device.address,
                self.port,
                slave.consecutive_failures,
                reason,
            )
            if s.available is not False:
                s.available = False
                self._emit_state(slave, False, f"no answer to {slave.consecutive_failures} polls: {reason}")
            return
        self._reschedule(slave, now)

    def _reschedule(self, slave: _Slave, now: float) -> None:
        interval = slave.device.poll_interval
        nxt = slave.next_due + interval
        if nxt <= now:
            # Fixed-rate schedule fell behind (slow bus): skip the missed slots, keep the phase, count them.
            missed = math.floor((now - nxt) / interval) + 1
            slave.stats.overruns += missed
            nxt += missed * interval
        slave.next_due = nxt

    # ----------------------------------------------------------------------------------------- reporting

    def _reject(self, slave: _Slave, reason: str, data: bytes) -> None:
        slave.stats.rejected += 1
        try:
            self._emitter.rejected(slave.device.device_id, reason, data)
        except Exception:
            self.emitter_errors += 1
            log.exception("emitter refused a rejection of %s", slave.device.device_id)

    def _emit_state(self, slave: _Slave, available: bool, reason: str) -> None:
        try:
            self._emitter.device_state(slave.device.device_id, available, reason)
        except Exception:
            self.emitter_errors += 1
            log.exception("emitter refused a state change of %s", slave.device.device_id)


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
