"""The device-kind contract: a declarative description plus pure functions, registered by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from devices.reading import DecodeContext, DecodeError, Reading

__all__ = ["KINDS", "DeviceKind", "Framer", "ModbusRead", "register"]

Link = Literal["serial", "modbus", "mqtt"]


class Framer(Protocol):
    """Splits a serial byte stream into candidate frames; yields a DecodeError for skipped bytes."""

    def feed(self, data: bytes) -> Iterator[bytes | DecodeError]:
        """Consume `data`; yield every complete frame (or rejection) it completes."""
        ...


@dataclass(frozen=True, slots=True)
class ModbusRead:
    """One Modbus read a polled device needs: function 3 (holding) or 4 (input), start address, count."""

    function: int
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class DeviceKind:
    """Everything the core needs to know of one kind of device or payload format."""

    name: str
    link: Link
    summary: str
    quantities: tuple[tuple[str, str], ...]  # (quantity, unit) pairs it can produce
    decode: Callable[[bytes, DecodeContext], list[Reading]]  # pure; raises DecodeError
    encode: Callable[..., bytes] | None = None  # used by simulators and round-trip tests
    framer: Callable[[], Framer] | None = None  # serial: a fresh framer per port
    poll_request: Callable[[Mapping[str, Any]], bytes] | None = None  # serial request/response devices
    modbus_reads: Callable[[Mapping[str, Any]], list[ModbusRead]] | None = None
    decode_registers: Callable[[ModbusRead, list[int], DecodeContext], list[Reading]] | None = None
    doc: str = ""  # path of its doc page, relative to docs/devices/


KINDS: dict[str, DeviceKind] = {}


def register(kind: DeviceKind) -> DeviceKind:
    """Add a kind to the registry (called once at import of its module)."""
    if kind.name in KINDS:
        raise ValueError(f"device kind {kind.name!r} registered twice")
    KINDS[kind.name] = kind
    return kind
