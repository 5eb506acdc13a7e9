"""What the gateway knows about each device: last heard, latest value per quantity, last rejection, state.

Fed by the pipeline's observer calls (`accepted` from the ingest thread, `rejected` and `device_state` from
any transport thread); read by the status page and the health checks. Serial and Modbus devices have their
state decided by their port owner; a device heard over MQTT has no owner that could notice its silence, so
`check_stale` (called every second from `Gateway.tick`) marks it unavailable after `stale_after` without a
reading — by default 3x the longest of its last 8 intervals — and `accepted` marks it available again when it
is heard.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from devices.reading import Reading

__all__ = ["MAX_DEVICES", "DeviceBook"]

# Device ids of MQTT devices come from topics, so the book is bounded; the least recently heard goes first.
MAX_DEVICES = 5000
INTERVALS_KEPT = 8
# Until a device has shown its interval (two messages), it counts as gone after this long unheard.
FIRST_INTERVAL_STALE_S = 900.0
MIN_STALE_S = 5.0
# Readings of one device closer together than this are one burst (one message), not an interval.
BURST_S = 0.2

StateReport = Callable[[str, bool, str], None]


@dataclass(slots=True)
class DeviceRecord:
    """One device as the status page shows it."""

    device_id: str
    kind: str
    owned: bool  # a serial/Modbus port owner decides its state; False for devices heard over MQTT
    available: bool | None = None  # None: not heard from yet
    reason: str = ""  # why it is unavailable
    last_seen_mono: float | None = None
    last_seen_wall: float | None = None
    intervals: list[float] = field(default_factory=list)  # the last INTERVALS_KEPT (a list: a deque costs 600 B)
    latest: dict[str, Reading] = field(default_factory=dict)  # quantity -> its latest accepted reading
    last_rejection: str = ""
    last_rejection_wall: float | None = None
    stale: bool = False  # unavailable because unheard (set by check_stale, cleared when heard)


class DeviceBook:
    """Per-device state for the status page and health; thread-safe, bounded."""

    def __init__(self, configured: Iterable[tuple[str, str]] = (), stale_after_s: float | None = None,
                 kind_of: Callable[[str], str | None] = lambda device_id: None,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self.stale_after_s = stale_after_s
        self.kind_of = kind_of
        self.wall = wall
        self.mono = mono
        self.report: StateReport = lambda device_id, available, reason: None
        self.evicted = 0
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceRecord] = {}
        # Devices heard over MQTT, least recently heard (or added) first: eviction takes the first, in O(1).
        self._unowned: OrderedDict[str, None] = OrderedDict()
        for device_id, kind in configured:
            self._devices[device_id] = DeviceRecord(device_id, kind, owned=True)

    # -- observer calls ------------------------------------------------------------------------------------

    def accepted(self, readings: Sequence[Reading]) -> None:
        """Readings were journaled: note when each device was heard and its latest value per quantity."""
        now_mono, now_wall = self.mono(), self.wall()
        back: list[str] = []
        with self._lock:
            devices = self._devices
            heard: dict[str, DeviceRecord] = {}
            device: str | None = None
            latest: dict[str, Reading] = {}
            # On the ingest thread's path: one dict store per reading; the readings of one message share
            # their device, so the record is looked up once per run of readings.
            for r in readings:
                if r.device_id != device:
                    device = r.device_id
                    rec = heard.get(device) or devices.get(device) or self._add(device)
                    heard[device] = rec
                    if not rec.owned:
                        self._unowned.move_to_end(device)
                    latest = rec.latest
                latest[r.quantity] = r
            for device_id, rec in heard.items():
                # A silence that made the device unavailable is an outage, not its reporting interval.
                if rec.last_seen_mono is not None and now_mono - rec.last_seen_mono >= BURST_S and not rec.stale:
                    rec.intervals.append(now_mono - rec.last_seen_mono)
                    if len(rec.intervals) > INTERVALS_KEPT:
                        del rec.intervals[0]
                rec.last_seen_mono, rec.last_seen_wall = now_mono, now_wall
                if not rec.owned and rec.available is not True:
                    back.append(device_id)  # first heard (metric 1) or heard again (logged once)
                    rec.available, rec.stale, rec.reason = True, False, ""
        for device_id in back:
            self.report(device_id, True, "")

    def rejected(self, device_id: str, reason: str) -> None:
        """A frame, payload or reading of the device was rejected."""
        with self._lock:
            rec = self._devices.get(device_id) or self._add(device_id)
            rec.last_rejection, rec.last_rejection_wall = reason, self.wall()

    def device_state(self, device_id: str, available: bool, reason: str) -> None:
        """A port owner (or check_stale) reported the device's state."""
        with self._lock:
            rec = self._devices.get(device_id) or self._add(device_id)
            rec.available, rec.reason = available, ("" if available else reason)

    def _add(self, device_id: str) -> DeviceRecord:
        if len(self._devices) >= MAX_DEVICES and self._unowned:
            oldest, _ = self._unowned.popitem(last=False)
            del self._devices[oldest]
            self.evicted += 1
        rec = DeviceRecord(device_id, self.kind_of(device_id) or "mqtt", owned=False)
        self._devices[device_id] = rec
        self._unowned[device_id] = None
        return rec

    # -- staleness -----------------------------------------------------------------------------------------

    def stale_limit(self, rec: DeviceRecord) -> float:
        """How long the device may stay unheard before it counts as unavailable."""
        if self.stale_after_s:
            return self.stale_after_s
        if not rec.intervals:
            return FIRST_INTERVAL_STALE_S
        # The longest recent gap, not the median: a device that uploads in bursts (a logger, a LoRaWAN
        # network server catching up) must not flap between bursts.
        return max(MIN_STALE_S, 3 * max(rec.intervals))

    def check_stale(self) -> list[str]:
        """Mark MQTT devices unheard for longer than their limit unavailable (reported once); return their ids."""
        now = self.mono()
        gone: list[tuple[str, str]] = []
        with self._lock:
            for rec in self._devices.values():
                if rec.owned or rec.available is not True or rec.last_seen_mono is None:
                    continue
                limit = self.stale_limit(rec)
                silent = now - rec.last_seen_mono
                if silent > limit:
                    how = ("stale_after" if self.stale_after_s else
                           "3x its longest recent interval" if rec.intervals else "no interval seen yet")
                    reason = f"not heard for {silent:.0f} s (limit {limit:.0f} s: {how})"
                    rec.available, rec.stale, rec.reason = False, True, reason
                    gone.append((rec.device_id, reason))
        for device_id, reason in gone:
            self.report(device_id, False, reason)
        return [device_id for device_id, _ in gone]

    # -- reading -------------------------------------------------------------------------------------------

    def availability(self) -> tuple[int, int, int]:
        """How many devices are available, unavailable and not yet heard (the fleet view's up/down counts)."""
        up = down = 0
        with self._lock:
            for r in self._devices.values():
                if r.available is True:
                    up += 1
                elif r.available is False:
                    down += 1
            return up, down, len(self._devices) - up - down

    def all_unavailable(self) -> list[tuple[str, str]]:
        """(id, reason) of every known device, sorted, when all are unavailable; else empty (the health check).

        Known: configured, or heard at least once (not ids only seen in rejections, such as topics). Stops at the
        first device that is not unavailable: a health check once a second over 10,000 devices costs nothing.
        """
        down: list[tuple[str, str]] = []
        with self._lock:
            for r in self._devices.values():
                if not r.owned and r.last_seen_wall is None:
                    continue
                if r.available is not False:
                    return []
                down.append((r.device_id, r.reason))
        return sorted(down)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every device as plain data, sorted by id (ages in seconds, None when never heard)."""
        now_mono = self.mono()
        with self._lock:
            records = sorted(self._devices.values(), key=lambda r: r.device_id)
            return [{
                "id": r.device_id,
                "kind": r.kind,
                "configured": r.owned,  # a [[devices]] entry (serial/Modbus); else heard over MQTT
                "state": ("waiting" if r.available is None else "available" if r.available else "unavailable"),
                "available": bool(r.available),
                "reason": r.reason,
                "last_seen": r.last_seen_wall,
                "last_seen_age_s": None if r.last_seen_mono is None else round(now_mono - r.last_seen_mono, 1),
                "stale_after_s": None if r.owned else round(self.stale_limit(r), 1),
                "latest": {q: {"value": x.value, "unit": x.unit, "ts": x.ts} for q, x in sorted(r.latest.items())},
                "last_rejection": r.last_rejection,
                "last_rejection_at": r.last_rejection_wall,
            } for r in records]
