"""The slaves of one Modbus bus: their configuration, counters, poll schedule and quarantine.

`SlaveSchedule` decides, for every slave of a `ModbusBus`, when it is polled next and whether it is
available: a fixed-rate schedule (missed slots skipped and counted as overruns), quarantine after
`quarantine_after` polls in a row without an answer — then only probed, one attempt at a time, at a capped
exponentially growing interval — and the end of quarantine at the first answer. State changes are reported
through the `report_state` callback and logged once each. The bus owns the port and the requests; this module
owns no I/O.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from devices.kind import DeviceKind, ModbusRead
from devices.modbus_common import READ_FUNCTIONS
from devices.registry import get_kind
from ingest.backoff import Backoff

__all__ = ["DeviceStats", "ModbusDevice", "Slave", "SlaveSchedule", "prepare_slaves"]

log = logging.getLogger("citygw.modbus")


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

    def copy(self) -> DeviceStats:
        """A snapshot of these counters."""
        return DeviceStats(**{k: getattr(self, k) for k in DeviceStats.__slots__})


@dataclass(slots=True)
class Slave:
    """One device on the bus with its kind, its reads and its schedule state."""

    device: ModbusDevice
    kind: DeviceKind
    reads: list[ModbusRead]
    next_due: float = 0.0
    consecutive_failures: int = 0
    probes: Backoff | None = None  # the probe interval while quarantined
    stats: DeviceStats = field(default_factory=DeviceStats)


def _prepare(device: ModbusDevice) -> Slave:
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
    return Slave(device, kind, reads)


def prepare_slaves(devices: Iterable[ModbusDevice]) -> list[Slave]:
    """The slaves of one bus, checked: Modbus kinds, addresses 1..255, unique ids and addresses."""
    slaves = [_prepare(d) for d in devices]
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
    return slaves


class SlaveSchedule:
    """When each slave is polled next, its quarantine and its availability (reported on change)."""

    def __init__(
        self,
        slaves: list[Slave],
        port: str,
        report_state: Callable[[Slave, bool, str], None],
        *,
        quarantine_after: int,
        probe_interval_max: float,
    ) -> None:
        self.slaves = slaves
        self._port = port
        self._report_state = report_state
        self._quarantine_after = quarantine_after
        self._probe_max = probe_interval_max

    def start(self, now: float) -> None:
        """Every slave due at once."""
        for s in self.slaves:
            s.next_due = now

    def next_slave(self) -> Slave | None:
        """The slave due soonest (None for a bus without slaves)."""
        return min(self.slaves, key=lambda s: s.next_due, default=None)

    def port_reopened(self, now: float) -> None:
        """Polls that fell due while the port was away happen now (quarantined slaves keep their probe time)."""
        for s in self.slaves:
            s.next_due = max(s.next_due, now) if not s.stats.quarantined else s.next_due

    def all_unavailable(self, reason: str) -> None:
        """The port is gone: every slave is unavailable (reported once), failure streaks start again."""
        for s in self.slaves:
            s.consecutive_failures = 0
            if s.stats.available is not False:
                s.stats.available = False
                self._report_state(s, False, reason)

    def succeeded(self, slave: Slave, now: float) -> None:
        """The slave answered: out of quarantine, available, next poll on its fixed-rate schedule."""
        s = slave.stats
        slave.consecutive_failures = 0
        if s.quarantined:
            s.quarantined = False
            log.info(
                "Modbus device %s (address %d on %s) answers again",
                slave.device.device_id,
                slave.device.address,
                self._port,
            )
        if s.available is not True:
            s.available = True
            self._report_state(slave, True, "answering")
        self.reschedule(slave, now)

    def failed(self, slave: Slave, reason: str, now: float) -> None:
        """The slave did not answer a poll: count it, quarantine it after enough, or probe it later."""
        s = slave.stats
        s.no_reply += 1
        slave.consecutive_failures += 1
        if s.quarantined:
            assert slave.probes is not None
            slave.next_due = now + slave.probes.next_delay()
            return
        if slave.consecutive_failures >= self._quarantine_after:
            s.quarantined = True
            slave.probes = Backoff(slave.device.poll_interval, max_s=self._probe_max)
            slave.next_due = now + slave.probes.next_delay()
            log.warning(
                "Modbus device %s (address %d on %s) quarantined after %d polls without answer: %s",
                slave.device.device_id,
                slave.device.address,
                self._port,
                slave.consecutive_failures,
                reason,
            )
            if s.available is not False:
                s.available = False
                self._report_state(slave, False, f"no answer to {slave.consecutive_failures} polls: {reason}")
            return
        self.reschedule(slave, now)

    def reschedule(self, slave: Slave, now: float) -> None:
        """The next slot of the slave's fixed-rate schedule after `now` (missed slots counted as overruns)."""
        interval = slave.device.poll_interval
        nxt = slave.next_due + interval
        if nxt <= now:
            # Fixed-rate schedule fell behind (slow bus): skip the missed slots, keep the phase, count them.
            missed = math.floor((now - nxt) / interval) + 1
            slave.stats.overruns += missed
            nxt += missed * interval
        slave.next_due = nxt
