"""The one owner of a Modbus RTU serial port (RS-485 multi-drop): a thread that serialises every request.

`ModbusBus` runs a dedicated thread holding a synchronous RTU master (`ingest.modbus_client.RtuMaster`, the
one module that talks to pymodbus) for one port (a device path, a pty, or any pyserial URL such as
`socket://host:port`). Every device on the bus is polled from that thread only, so two slaves can never
talk over each other. Per device: its own poll interval (fixed-rate schedule), timeout and retries; between
any two requests the bus keeps an inter-request silence (≥ 3.5 character times by default).

Failures are contained per device: a device that does not answer `quarantine_after` polls in a row is
quarantined — reported unavailable through `Emitter.device_state(..., False, reason)` and logged once — and
is then only probed (one attempt, no retries) at an exponentially growing interval, capped, so it costs the
others little bus time. Its first answer ends the quarantine (reported and logged once). Exception replies
and undecodable data are counted as rejections (`Emitter.rejected`) but prove the device is alive.

A port that fails (adapter unplugged, I/O error) is closed and reopened with capped exponential backoff; its
devices are reported unavailable meanwhile; the loss and the reopening are logged once each.

The slaves' configuration, counters, schedule and quarantine live in `ingest.modbus_slaves`; this module owns
the thread, the port and the requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from devices.kind import ModbusRead
from devices.modbus_common import READ_FUNCTIONS, exception_name, exception_reply, read_reply, read_request
from devices.reading import DecodeContext, DecodeError, Reading
from ingest.backoff import Backoff
from ingest.base import Emitter, ThreadStarter, plain_thread
from ingest.modbus_client import NoAnswerError, PortError, RtuMaster, quiet_library_logging
from ingest.modbus_slaves import DeviceStats, ModbusDevice, Slave, SlaveSchedule, prepare_slaves

__all__ = ["DeviceStats", "ModbusBus", "ModbusDevice", "default_inter_request_delay"]

log = logging.getLogger("citygw.modbus")


def default_inter_request_delay(baudrate: int) -> float:
    """3.5 character times of 11 bits (Modbus RTU), and the spec's fixed 1.75 ms above 19200 baud."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * 11 / baudrate


class _NoReplyError(Exception):
    """A request got no valid answer within its timeout and retries."""


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
        self._reconnect = Backoff(reconnect_delay, max_s=reconnect_delay_max)
        self._quiet_pymodbus = quiet_pymodbus
        self._schedule = SlaveSchedule(
            prepare_slaves(devices),
            port,
            self._emit_state,
            quarantine_after=quarantine_after,
            probe_interval_max=probe_interval_max,
        )
        self._client = RtuMaster(
            port,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            bytesize=bytesize,
            timeout=timeout,
            name=f"citygw {port}",
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port_ok: bool | None = None
        self._last_io = 0.0
        self.emitter_errors = 0
        self.port_failures = 0

    # ----------------------------------------------------------------------------------------- control

    def start(self) -> None:
        """Start the bus thread (polls begin at once, staggered by the inter-request delay)."""
        if self._thread is not None:
            raise RuntimeError("bus already started")
        if self._quiet_pymodbus:
            quiet_library_logging()
        self._schedule.start(time.monotonic())
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
        return {s.device.device_id: s.stats.copy() for s in self._schedule.slaves}

    @property
    def port_open(self) -> bool:
        """True while the port is open and working."""
        return bool(self._port_ok)

    # ----------------------------------------------------------------------------------------- loop

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._client.connected:
                if not self._open_port():
                    self._reconnect.wait(self._stop)
                    continue
                self._reconnect.reset()
            slave = self._schedule.next_slave()
            if slave is None:
                self._stop.wait(1.0)
                continue
            wait = slave.next_due - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, 1.0))
                continue
            try:
                self._poll(slave)
            except PortError as exc:
                self._port_lost(str(exc))
            except Exception:  # a bug must not silently end polling of the whole bus
                log.exception("unexpected error polling %s on %s", slave.device.device_id, self.port)
                self._schedule.reschedule(slave, time.monotonic())
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
            self._schedule.port_reopened(time.monotonic())
            return True
        if self._port_ok is not False:
            log.warning("Modbus port %s unavailable (%s); retrying with backoff", self.port, reason)
            self.port_failures += 1
            self._schedule.all_unavailable(f"port {self.port} unavailable: {reason}")
        self._port_ok = False
        return False

    def _port_lost(self, reason: str) -> None:
        self._client.close()
        if self._port_ok is not False:
            log.warning("Modbus port %s lost (%s); reopening with backoff", self.port, reason)
            self.port_failures += 1
            self._schedule.all_unavailable(f"port {self.port} lost: {reason}")
        self._port_ok = False

    # ----------------------------------------------------------------------------------------- polling

    def _poll(self, slave: Slave) -> None:
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
            self._schedule.failed(slave, str(exc), time.monotonic())
            return
        slave.stats.polls_ok += 1
        self._schedule.succeeded(slave, time.monotonic())
        if readings:
            slave.stats.readings += len(readings)
            try:
                self._emitter.readings(readings)
            except Exception:
                self.emitter_errors += 1
                log.exception("emitter refused readings of %s", d.device_id)

    def _request(self, slave: Slave, read: ModbusRead, attempts: int) -> list[int] | int:
        """Registers, or the exception code of an exception reply; raises _NoReplyError or PortError."""
        d = slave.device
        timeout = self._timeout if d.timeout is None else d.timeout
        last = "no reply"
        for attempt in range(attempts):
            if self._stop.is_set():
                raise _NoReplyError("bus stopping")
            if attempt:
                slave.stats.retries += 1
            self._keep_silence()
            try:
                return self._client.read_registers(read.function, read.address, read.count, d.address, timeout)
            except NoAnswerError as exc:
                last = str(exc)
            finally:
                self._last_io = time.monotonic()
        request = read_request(d.address, read).hex(" ")
        raise _NoReplyError(f"no valid reply to {request} after {attempts} attempt(s): {_short(last)}")

    def _keep_silence(self) -> None:
        remaining = self._last_io + self._delay - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

    # ----------------------------------------------------------------------------------------- reporting

    def _reject(self, slave: Slave, reason: str, data: bytes) -> None:
        slave.stats.rejected += 1
        try:
            self._emitter.rejected(slave.device.device_id, reason, data)
        except Exception:
            self.emitter_errors += 1
            log.exception("emitter refused a rejection of %s", slave.device.device_id)

    def _emit_state(self, slave: Slave, available: bool, reason: str) -> None:
        try:
            self._emitter.device_state(slave.device.device_id, available, reason)
        except Exception:
            self.emitter_errors += 1
            log.exception("emitter refused a state change of %s", slave.device.device_id)


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
