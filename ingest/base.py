"""What every transport hands its results to (`Emitter`, the gateway's pipeline; thread-safe), and what the
gateway asks of every transport (`Transport`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from devices.reading import Reading

__all__ = ["Emitter", "ThreadStarter", "Transport", "plain_thread"]


class Emitter(Protocol):
    """The ingest side of the pipeline. Every method may be called from any thread."""

    def readings(self, readings: list[Reading], ack: Callable[[], None] | None = None) -> None:
        """Hand over decoded readings; `ack` is called once they are durable in the journal."""
        ...

    def rejected(self, device_id: str, reason: str, data: bytes | None = None) -> None:
        """Count and log one rejected frame or payload (the reason says which check failed)."""
        ...

    def device_state(self, device_id: str, available: bool, reason: str = "") -> None:
        """Report a device going unavailable (with why) or coming back."""
        ...


class Transport(Protocol):
    """An input the gateway starts and stops: the serial port owner, the Modbus bus, the MQTT inputs.

    Each owns its link (port, bus or broker connection) in its own thread, reopens it by itself with a
    `Backoff` when it fails, and hands readings to an `Emitter`.
    """

    def start(self) -> None:
        """Start the owning thread (opening the link happens there, not here)."""
        ...

    def stop(self) -> None:
        """Stop the thread and close the link."""
        ...


class ThreadStarter(Protocol):
    """Starts an owning thread: `body` is its whole loop and returns once `stop` is set.

    The gateway passes its supervisor's `start` (gateway/supervisor.py: a crash is logged, counted and
    restarted); a transport used on its own gets `plain_thread`.
    """

    def __call__(self, name: str, body: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Start the thread and return it (for joining)."""
        ...


def plain_thread(name: str, body: Callable[[], None], stop: threading.Event) -> threading.Thread:
    """An unsupervised daemon thread: for a transport used without a gateway (tests, tools)."""
    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    return thread
