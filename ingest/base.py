"""What every transport hands its results to. Implemented by the gateway's pipeline; thread-safe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from devices.reading import Reading

__all__ = ["Emitter"]


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
