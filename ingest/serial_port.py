"""One owner per serial port for framed devices (streamed or request/response): read, frame, decode, emit.

The owner opens the port through pyserial (a device path, a pty, or a `socket://` URL), polls when the kind
needs a request, reports garbage and bad frames as rejections, marks the device unavailable after a silence
or an I/O error (once), reopens the port with backoff, and marks it available again on the next good frame.
Modbus buses have their own owner (ingest/modbus_bus.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import serial

from devices.kind import DeviceKind
from devices.reading import EMPTY_TAGS, DecodeContext, DecodeError
from ingest.backoff import Backoff
from ingest.base import Emitter, ThreadStarter, plain_thread

__all__ = ["SerialDevice", "SerialPortOwner"]

log = logging.getLogger("citygw.serial")


@dataclass(frozen=True, slots=True)
class SerialDevice:
    """A framed serial device and how to talk to it."""

    device_id: str
    kind: DeviceKind
    port: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    poll_interval_s: float = 10.0
    timeout_s: float = 1.0
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    options: Mapping[str, Any] = field(default_factory=dict)


class SerialPortOwner:
    """The only thread that touches its port."""

    def __init__(self, device: SerialDevice, emitter: Emitter, clock_ns: Callable[[], int] = time.time_ns,
                 silence_s: float | None = None, reopen_max_s: float = 30.0,
                 start_thread: ThreadStarter = plain_thread) -> None:
        if device.kind.framer is None:
            raise ValueError(f"device kind {device.kind.name} has no framer; it cannot be read as a stream")
        self.device = device
        self.emitter = emitter
        self.clock_ns = clock_ns
        polled = device.kind.poll_request is not None
        self.silence_s = silence_s or (3 * (device.poll_interval_s + device.timeout_s) if polled
                                       else max(10.0, 5 * device.timeout_s))
        self.reopen_max_s = reopen_max_s
        self.start_thread = start_thread  # the gateway's supervisor restarts the owner after a decoder bug
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames = 0
        self.available: bool | None = None

    def start(self) -> None:
        """Start the owner thread."""
        self._thread = self.start_thread(f"citygw-serial-{self.device.device_id}", self._run, self._stop)

    def stop(self) -> None:
        """Stop and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _set_available(self, up: bool, reason: str = "") -> None:
        if self.available != up:
            self.available = up
            self.emitter.device_state(self.device.device_id, up, reason)

    def _run(self) -> None:
        backoff = Backoff(0.5, 2.0, self.reopen_max_s)
        while not self._stop.is_set():
            try:
                port = serial.serial_for_url(self.device.port, baudrate=self.device.baudrate,
                                             parity=self.device.parity, stopbits=self.device.stopbits,
                                             timeout=0.1)
            except (serial.SerialException, OSError, ValueError) as exc:
                self._set_available(False, f"cannot open {self.device.port}: {exc}")
                backoff.wait(self._stop)
                continue
            backoff.reset()
            try:
                self._read_loop(port)
            except (serial.SerialException, OSError) as exc:
                self._set_available(False, f"I/O error on {self.device.port}: {exc}")
            finally:
                with contextlib.suppress(Exception):
                    port.close()
            self._stop.wait(backoff.step)  # a pause of the first step before reopening; it grows if reopening fails

    def _read_loop(self, port: serial.SerialBase) -> None:
        dev = self.device
        kind = dev.kind
        assert kind.framer is not None
        framer = kind.framer()
        request = kind.poll_request(dev.options) if kind.poll_request is not None else None
        next_poll = 0.0
        last_good = time.monotonic()
        while not self._stop.is_set():
            now_mono = time.monotonic()
            if request is not None and now_mono >= next_poll:
                port.write(request)
                next_poll = now_mono + dev.poll_interval_s
            data = port.read(max(1, port.in_waiting or 1) if request is None else 256)
            if not data:
                if time.monotonic() - last_good > self.silence_s:
                    self._set_available(False, f"no valid frame for {self.silence_s:.0f} s")
                continue
            received = self.clock_ns()
            for item in framer.feed(data):
                if isinstance(item, DecodeError):
                    self.emitter.rejected(dev.device_id, item.reason, item.data)
                    continue
                ctx = DecodeContext(device_id=dev.device_id, received_ns=received, tags=dev.tags,
                                    options=dev.options)
                # Several frames in one read must not share a receipt time, or the validator would
                # take the second for a duplicate of the first and drop it.
                received += 1
                try:
                    readings = kind.decode(item, ctx)
                except DecodeError as exc:
                    self.emitter.rejected(dev.device_id, exc.reason, exc.data)
                    continue
                self.frames += 1
                last_good = time.monotonic()
                self._set_available(True)
                if readings:
                    self.emitter.readings(readings)
