"""Listen on a serial port and tell what speaks there: `citygw probe PORT` and the serial part of
`check-config --connect`.

A one-shot diagnostic, not a transport: it opens the port through pyserial (so `/dev/serial/by-id/…`,
`/dev/ttyAMA0` and `socket://host:port` all work), sends a kind's poll request when the kind is polled, and
runs the kind's own framer and pure decoder over what arrives. Nothing is journaled.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import serial

from devices.kind import DeviceKind
from devices.reading import DecodeContext, DecodeError, Reading
from devices.registry import KINDS

__all__ = ["USUAL_BAUDRATES", "Heard", "listen", "probe_port", "serial_kinds"]

# The rates sensor UARTs use, most common first (9600 covers PMS5003, SDS011, MH-Z19B; wM-Bus sticks 9600+).
USUAL_BAUDRATES = (9600, 115200, 19200, 38400, 57600, 4800, 2400)


@dataclass(slots=True)
class Heard:
    """What one kind's framing made of a port's bytes at one line setting."""

    kind: str
    baudrate: int
    byte_count: int = 0
    frames: int = 0  # frames that framed and decoded
    rejected: list[str] = field(default_factory=list)  # reasons of frames that did not
    readings: list[Reading] = field(default_factory=list)
    polled: bool = False

    @property
    def speaks(self) -> bool:
        """At least one frame of this kind arrived intact."""
        return self.frames > 0

    def describe(self) -> str:
        """One line for a technician."""
        how = " (answers polls)" if self.polled else ""
        if self.speaks:
            latest = {r.quantity: r for r in self.readings}  # the last value of each quantity
            sample = ", ".join(f"{q}={r.value:g} {r.unit}" for q, r in list(latest.items())[:8])
            bad = f", {len(self.rejected)} bad" if self.rejected else ""
            return f"{self.kind} at {self.baudrate} baud{how}: {self.frames} frame(s){bad} — {sample}"
        if self.rejected:
            return (f"{self.kind} at {self.baudrate} baud: no valid frame in {self.byte_count} byte(s), "
                    f"{len(self.rejected)} rejection(s) — first: {self.rejected[0]}")
        if self.byte_count:
            return (f"{self.kind} at {self.baudrate} baud: {self.byte_count} byte(s) arrived but no "
                    f"{self.kind} frame (wrong kind, baud rate or wiring — TX/RX swapped?)")
        return f"{self.kind} at {self.baudrate} baud: nothing arrived"


def serial_kinds() -> list[DeviceKind]:
    """Every kind that speaks on a serial port with a framer (Modbus kinds answer only when addressed)."""
    return [k for k in KINDS.values() if k.link == "serial" and k.framer is not None]


def _open(port: str, baudrate: int, parity: str, stopbits: int) -> serial.SerialBase:
    return serial.serial_for_url(port, baudrate=baudrate, parity=parity, stopbits=stopbits, timeout=0.1)


def _feed(kind: DeviceKind, data: bytes, heard: Heard, device_id: str, options: Mapping[str, Any],
          framer: Any) -> None:
    for item in framer.feed(data):
        if isinstance(item, DecodeError):
            heard.rejected.append(item.reason)
            continue
        ctx = DecodeContext(device_id=device_id, received_ns=time.time_ns(), options=options)
        try:
            readings = kind.decode(item, ctx)
        except DecodeError as exc:
            heard.rejected.append(exc.reason)
            continue
        heard.frames += 1
        heard.readings.extend(readings)


def listen(port: str, kind: DeviceKind, baudrate: int = 9600, parity: str = "N", stopbits: int = 1,
           options: Mapping[str, Any] | None = None, seconds: float = 3.0, device_id: str = "probe") -> Heard:
    """Open `port`, poll when the kind is polled, and frame/decode what arrives for `seconds`.

    Raises serial.SerialException / OSError when the port cannot be opened (the caller says how to fix it).
    """
    options = options or {}
    assert kind.framer is not None, f"{kind.name} has no serial framing"
    heard = Heard(kind.name, baudrate, polled=kind.poll_request is not None)
    request = kind.poll_request(options) if kind.poll_request is not None else None
    framer = kind.framer()
    with _open(port, baudrate, parity, stopbits) as ser:
        ser.reset_input_buffer()
        deadline = time.monotonic() + seconds
        next_poll = 0.0
        while time.monotonic() < deadline:
            if request is not None and time.monotonic() >= next_poll:
                ser.write(request)
                next_poll = time.monotonic() + 1.0
            data = ser.read(256)
            if data:
                heard.byte_count += len(data)
                _feed(kind, data, heard, device_id, options, framer)
            if heard.frames >= 3:
                break
    return heard


def probe_port(port: str, baudrates: Sequence[int] = USUAL_BAUDRATES, seconds: float = 2.5,
               stop_at_first: bool = True) -> tuple[list[Heard], list[str]]:
    """Try every serial kind's framing at each baud rate; return (what was heard per kind and rate, notes).

    Streaming kinds share one listen per rate (their framers all see the same bytes); each polled kind gets
    its own request. Stops after the first rate at which some kind speaks, unless `stop_at_first` is false.
    """
    heard_all: list[Heard] = []
    notes: list[str] = []
    streaming = [k for k in serial_kinds() if k.poll_request is None]
    polled = [k for k in serial_kinds() if k.poll_request is not None]
    for baud in baudrates:
        at_rate = [Heard(k.name, baud) for k in streaming]
        framers = [k.framer() for k in streaming if k.framer is not None]
        with _open(port, baud, "N", 1) as ser:
            ser.reset_input_buffer()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                data = ser.read(256)
                if not data:
                    continue
                for kind, heard, framer in zip(streaming, at_rate, framers, strict=True):
                    heard.byte_count += len(data)
                    _feed(kind, data, heard, "probe", {}, framer)
                if any(h.frames >= 3 for h in at_rate):  # enough evidence; the others had the same bytes
                    break
        # A port where a sensor streams is not polled: another kind's request could change that sensor's mode.
        for kind in polled if not any(h.speaks for h in at_rate) else ():
            try:
                at_rate.append(listen(port, kind, baud, seconds=min(seconds, 1.5)))
            except ValueError as exc:  # a poll request that needs options (an address) we do not know
                notes.append(f"{kind.name}: not polled ({exc}); configure it and use check-config --connect")
        heard_all.extend(at_rate)
        if stop_at_first and any(h.speaks for h in at_rate):
            break
    if port.startswith("/dev/pts/") or port.startswith("socket://"):
        notes.append("a pty or socket:// carries bytes at any baud rate: the rate reported is the first tried")
    notes.append("Modbus devices answer only when addressed: configure them and run check-config --connect")
    return heard_all, notes


def run_probe(port: str, baudrates: Sequence[int] = USUAL_BAUDRATES, seconds: float = 2.5,
              all_rates: bool = False) -> int:
    """`citygw probe PORT`: print what speaks on the port; 0 when some kind was recognised."""
    print(f"probing {port}: every serial kind's framing at {', '.join(map(str, baudrates))} baud …", flush=True)
    try:
        heard, notes = probe_port(port, baudrates, seconds, stop_at_first=not all_rates)
    except (serial.SerialException, OSError) as exc:
        print(f"cannot open {port}: {exc} — check the name (`ls -l /dev/serial/by-id/`), that this user is in "
              "the dialout group, and that no serial console or other program holds the port")
        return 2
    speaking = [h for h in heard if h.speaks]
    for h in speaking:
        print(f"SPEAKS  {h.describe()}")
    silent_rates = sorted({h.baudrate for h in heard if not h.byte_count})
    for h in heard:
        if not h.speaks and h.byte_count:
            print(f"no      {h.describe()}")
    if silent_rates:
        print(f"silent  nothing at all arrived at {', '.join(map(str, silent_rates))} baud for some kinds "
              "(a polled device that did not answer, or nothing connected)")
    for note in notes:
        print(f"note    {note}")
    if not speaking:
        print("nothing recognisable: check wiring (sensor TX → Pi RX), power, and the UART setup in "
              "docs/deploy.md")
    return 0 if speaking else 1
