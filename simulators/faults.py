"""Fault injection shared by the serial simulators, and the pty-backed base they are built on.

A `FaultPlan` says how often each fault happens (probabilities per frame, seeded, so a scenario replays
identically); `FaultInjector.force()` makes the next frames faulty on demand for deterministic tests.

Faults: bad checksum, cut frame, garbage bytes before a frame, stuck value (the sensor repeats its last
values), out-of-range value, silence (a frame or reply is not sent), slow reply (delay before answering),
and disconnect/reconnect (the pty is closed, as when a USB adapter is pulled, then a new one is opened;
`stable_port` is a symlink that follows it, as udev's by-id links do: gone while unplugged).
"""

from __future__ import annotations

import abc
import collections
import contextlib
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Self

from simulators.pty_device import PtyDevice

__all__ = ["FAULTS", "FaultInjector", "FaultPlan", "SerialSimulator"]

FAULTS = (
    "bad_checksum", "cut_frame", "garbage", "stuck", "out_of_range", "silence", "slow_reply", "disconnect",
)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """How often each fault happens. Probabilities are per frame (or per reply); 0 disables the fault."""

    bad_checksum: float = 0.0
    cut_frame: float = 0.0
    garbage: float = 0.0
    garbage_len: tuple[int, int] = (1, 24)
    out_of_range: float = 0.0
    silence: float = 0.0
    stuck_after: int | None = None  # after this many frames the values freeze for good
    slow_reply_s: float = 0.0  # delay before every reply to a request
    disconnect_after: int | None = None  # unplug after this many frames ...
    reconnect_after_s: float = 1.0  # ... and plug a new pty in after this long


class FaultInjector:
    """Applies a FaultPlan to values and frames; counts every fault it injects (`counts`). Thread-safe."""

    def __init__(self, plan: FaultPlan | None = None, seed: int = 0) -> None:
        self.plan = plan or FaultPlan()
        self._rng = random.Random(seed ^ 0x5EED)
        self._lock = threading.Lock()
        self._forced: collections.Counter[str] = collections.Counter()
        self.counts: collections.Counter[str] = collections.Counter()
        self._frames = 0
        self._stuck: dict[str, float] | None = None
        self._stuck_on = False
        self._disconnected = False

    def force(self, fault: str, count: int = 1) -> None:
        """Make the next `count` frames (or replies) carry `fault`; "stuck" freezes the values from now on."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            if fault == "stuck":
                self._stuck_on = True
            else:
                self._forced[fault] += count

    def _hit(self, fault: str, probability: float) -> bool:
        # Caller holds the lock.
        if self._forced[fault] > 0:
            self._forced[fault] -= 1
            self.counts[fault] += 1
            return True
        if probability > 0 and self._rng.random() < probability:
            self.counts[fault] += 1
            return True
        return False

    def values(self, values: dict[str, float], out_of_range: Mapping[str, float]) -> dict[str, float]:
        """The values to send: frozen when stuck, one replaced by an implausible value on out-of-range."""
        with self._lock:
            self._frames += 1
            stuck_after = self.plan.stuck_after
            if self._stuck_on or (stuck_after is not None and self._frames > stuck_after):
                if self._stuck is None:
                    self._stuck = dict(values)
                self.counts["stuck"] += 1
                values = dict(self._stuck)
            if out_of_range and self._hit("out_of_range", self.plan.out_of_range):
                key = self._rng.choice(sorted(out_of_range))
                values = {**values, key: out_of_range[key]}
            return values

    def frame(self, frame: bytes, checksum_at: int | None) -> bytes | None:
        """The bytes to write for `frame`: None (silence), or the frame with garbage / cut / bad checksum."""
        with self._lock:
            plan = self.plan
            if self._hit("silence", plan.silence):
                return None
            out = bytearray(frame)
            if checksum_at is not None and self._hit("bad_checksum", plan.bad_checksum):
                out[checksum_at] ^= 0x5A
            if len(out) > 1 and self._hit("cut_frame", plan.cut_frame):
                del out[self._rng.randrange(1, len(out)) :]
            if self._hit("garbage", plan.garbage):
                low, high = plan.garbage_len
                out[:0] = bytes(self._rng.randrange(256) for _ in range(self._rng.randint(low, high)))
            return bytes(out)

    def reply_delay(self) -> float:
        """Seconds to wait before answering a request (slow-reply fault)."""
        with self._lock:
            if self._hit("slow_reply", 0.0):
                return max(self.plan.slow_reply_s, 0.5)
            return self.plan.slow_reply_s

    def disconnect_due(self, frames_sent: int) -> bool:
        """True when the plan (once, after `disconnect_after` frames) or a forced fault says to unplug now."""
        with self._lock:
            after = self.plan.disconnect_after
            if after is not None and not self._disconnected and frames_sent >= after:
                self._disconnected = True
                self.counts["disconnect"] += 1
                return True
            return self._hit("disconnect", 0.0)


class SerialSimulator(abc.ABC):
    """Base of the serial device simulators: a PtyDevice, an optional streaming thread, faults, history.

    Subclasses implement `_next_values(now_s) -> dict` (the signal), `_encode(values) -> bytes` (a frame),
    `_on_bytes(data) -> list[bytes]` (replies to host bytes) and set `checksum_at` / `out_of_range`.
    `last_values` is what the most recent frame carried (after rounding to the wire resolution and after
    faults); `history` keeps the last 256 of them, newest last.
    """

    checksum_at: int | None = None  # index of a checksum byte in a frame, for the bad-checksum fault
    out_of_range: ClassVar[Mapping[str, float]] = MappingProxyType({})
    RX_MAX = 1024

    def __init__(
        self,
        seed: int = 1,
        period_s: float = 1.0,
        faults: FaultPlan | None = None,
        streaming: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.seed = seed
        self.period_s = period_s
        self.faults = FaultInjector(faults, seed)
        self.clock = clock or time.time
        self.streaming = streaming  # subclasses switch it off on sleep / passive mode
        self.frames_sent = 0
        self.last_values: dict[str, float] = {}
        self.history: collections.deque[dict[str, float]] = collections.deque(maxlen=256)
        self.requests: collections.deque[bytes] = collections.deque(maxlen=256)  # commands understood
        self._rx_buf = bytearray()
        self.rx_dropped = 0
        self._state = threading.RLock()
        self._stop = threading.Event()
        self._link_dir = tempfile.mkdtemp(prefix="citygw-sim-")
        self.stable_port = os.path.join(self._link_dir, "tty")
        self._dev = PtyDevice(on_request=self._handle, link=self.stable_port)
        self._after_plug()
        self._thread = threading.Thread(target=self._run, name=f"sim {type(self).__name__}", daemon=True)
        self._thread.start()

    # --- for subclasses -------------------------------------------------------------------------------
    @abc.abstractmethod
    def _next_values(self, now_s: float) -> dict[str, float]:
        """The device's values at `now_s` (advances its signal models)."""

    @abc.abstractmethod
    def _encode(self, values: Mapping[str, float]) -> bytes:
        """The data frame the device sends for `values`."""

    def _wire_values(self, values: Mapping[str, float]) -> dict[str, float]:
        """The values as the decoder will see them (rounded to the wire resolution)."""
        return dict(values)

    def _on_bytes(self, data: bytes) -> list[bytes]:
        """Replies to bytes from the host; the default device ignores them."""
        return []

    def _rx(self, data: bytes) -> bytearray:
        """Append host bytes to the bounded receive buffer (oldest dropped and counted); return it."""
        self._rx_buf += data
        if len(self._rx_buf) > self.RX_MAX:
            self.rx_dropped += len(self._rx_buf) - self.RX_MAX
            del self._rx_buf[: len(self._rx_buf) - self.RX_MAX]
        return self._rx_buf

    # --- machinery --------------------------------------------------------------------------------------
    @property
    def port(self) -> str:
        """The current pty path (changes after a reconnect; `stable_port` does not)."""
        return self._dev.port

    def _after_plug(self) -> None:
        with contextlib.suppress(OSError):
            # Non-blocking: with nobody reading, a UART drops bytes instead of blocking the simulator.
            os.set_blocking(self._dev._master, False)

    def make_frame(self, now_s: float | None = None) -> bytes:
        """Sample the signal, apply value faults, record the values and return the encoded frame."""
        with self._state:
            values = self._next_values(self.clock() if now_s is None else now_s)
            values = self.faults.values(values, self.out_of_range)
            frame = self._encode(values)
            wire = self._wire_values(values)
            self.last_values = wire
            self.history.append(wire)
            return frame

    def send(self, frame: bytes) -> bool:
        """Write one frame (or reply) through the frame faults; False when it was silenced."""
        out = self.faults.frame(frame, self.checksum_at)
        self.frames_sent += 1
        if out is None:
            return False
        self._dev.write(out)
        return True

    def _handle(self, data: bytes) -> bytes:
        # PtyDevice keeps every received byte in `received`; keep only a tail so long runs stay bounded.
        del self._dev.received[:-4096]
        with self._state:
            replies = self._on_bytes(data)
        if replies:
            delay = self.faults.reply_delay()
            if delay > 0:
                self._stop.wait(delay)
            for reply in replies:
                self.send(reply)
        return b""

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            if self.streaming:
                self.send(self.make_frame())
            if self.faults.disconnect_due(self.frames_sent):
                self.unplug()
                if self._stop.wait(self.faults.plan.reconnect_after_s):
                    return
                self.plug()
                next_t = time.monotonic()
            next_t += self.period_s
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def unplug(self) -> None:
        """Close the pty, as if the adapter were pulled out (the gateway sees an I/O error)."""
        self._dev.unplug()

    def plug(self) -> None:
        """Open a new pty (new `port`; `stable_port` follows it)."""
        if self._stop.is_set():
            return
        self._dev.plug()
        self._after_plug()

    def close(self) -> None:
        """Stop the simulator and close its pty."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._dev.unplug()
        with contextlib.suppress(OSError):
            os.unlink(self.stable_port)
        with contextlib.suppress(OSError):
            os.rmdir(self._link_dir)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
