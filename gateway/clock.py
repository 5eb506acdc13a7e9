"""The gateway's view of time: wall-clock jumps, an unset clock and devices whose clocks sit far from ours are
detected and reported, never ignored."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

from ingest.validate import MIN_PLAUSIBLE_NS

__all__ = ["ClockOffsets", "ClockWatch", "likely_cause"]

log = logging.getLogger("citygw.clock")


class ClockWatch:
    """Compares wall time with monotonic time; a divergence beyond `tolerance_s` is a jump (NTP step, RTC)."""

    def __init__(self, wall_ns: Callable[[], int] = time.time_ns,
                 mono_ns: Callable[[], int] = time.monotonic_ns, tolerance_s: float = 2.0) -> None:
        self.wall_ns = wall_ns
        self.mono_ns = mono_ns
        self.tolerance_ns = int(tolerance_s * 1e9)
        self._offset = wall_ns() - mono_ns()
        self.jumps: list[int] = []  # signed jump sizes in ns, most recent last (bounded)
        self.unsynced_logged = False

    def check(self) -> int:
        """Return the jump (ns) since the last check, 0 if none; log it and remember it."""
        offset = self.wall_ns() - self.mono_ns()
        jump = offset - self._offset
        self._offset = offset
        if abs(jump) <= self.tolerance_ns:
            if self.synchronised:
                self.unsynced_logged = False
            elif not self.unsynced_logged:
                self.unsynced_logged = True
                log.warning("the system clock is before 2020 (no RTC, NTP not synchronised yet): readings "
                            "stamped by the gateway are rejected until the clock is set")
            return 0
        self.jumps = [*self.jumps[-99:], jump]
        log.warning("wall clock jumped %s by %.1f s; windows follow event time, so closed windows are not "
                    "reopened, and readings for them are counted late", "forward" if jump > 0 else "back",
                    abs(jump) / 1e9)
        return jump

    @property
    def synchronised(self) -> bool:
        """False while the wall clock is implausibly early (a Pi without RTC boots in 1970)."""
        return self.wall_ns() >= MIN_PLAUSIBLE_NS

    def describe(self) -> str:
        """One line for the status page."""
        if not self.synchronised:
            return "NOT synchronised (before 2020)"
        return f"ok, {len(self.jumps)} jump(s) seen"


_ZONE_STEP_S = 900  # time zones differ from UTC by whole quarter hours (India +5:30, Nepal +5:45)


def likely_cause(offset_s: float, spread_s: float) -> str:
    """Why a device's event times sit `offset_s` behind receipt (negative: ahead), for a technician."""
    quarters = round(offset_s / _ZONE_STEP_S)
    if quarters and abs(offset_s - quarters * _ZONE_STEP_S) <= 90 and spread_s <= 180:
        return (f"a time zone mistake ({abs(quarters) / 4:g} h): the device, or the route's `timezone` option, "
                "labels local time as UTC or UTC as local time; make them agree")
    if offset_s > 0:
        return ("the device's clock is behind, or it delivers late (a LoRaWAN network server, a logger "
                "uploading in batches); set its clock, or raise aggregation.grace if the delay is normal")
    return "the device's clock is ahead; set its clock (NTP)"


class ClockOffsets:
    """Per device: how far event times sit from receipt time; a steady large offset is reported once.

    A sample is receipt time minus the newest event time of one batch of the device (older readings in a
    batch are backlog, not clock error). A device is reported once its last `samples` samples all lie beyond
    `threshold_s` on the same side: one log line naming the device, the offset and the likely cause, the
    `on_offset` callback (a metric) and `reported()` (the status page). It is cleared, and logged once, when
    its samples all lie within the threshold again. At most `max_devices` devices are followed (bounded).
    """

    def __init__(self, on_offset: Callable[[str, float], None] = lambda device, offset_s: None,
                 threshold_s: float = 120.0, samples: int = 5, max_devices: int = 10_000) -> None:
        self.on_offset = on_offset
        self.threshold_ns = int(threshold_s * 1e9)
        self.samples = samples
        self.max_devices = max_devices
        self._recent: dict[str, list[int]] = {}  # lists, not deques: a deque costs 600 B per device
        self._reported: dict[str, tuple[float, str]] = {}  # device -> (offset in s, likely cause)

    def observe(self, device_id: str, offset_ns: int) -> None:
        """Record one sample: receipt time minus event time (positive: the event time is behind)."""
        recent = self._recent.get(device_id)
        if recent is None:
            if len(self._recent) >= self.max_devices:
                return
            recent = self._recent[device_id] = []
        recent.append(offset_ns)
        if len(recent) > self.samples:
            del recent[0]
        if len(recent) < self.samples:
            return
        far = self.threshold_ns
        if all(o > far for o in recent) or all(o < -far for o in recent):
            if device_id not in self._reported:
                self._report(device_id, recent)
        elif device_id in self._reported and all(abs(o) <= far for o in recent):
            del self._reported[device_id]
            self.on_offset(device_id, 0.0)
            log.info("device %s: event times agree with receipt time again (within %.0f s)", device_id,
                     far / 1e9)

    def _report(self, device_id: str, recent: list[int]) -> None:
        offset_s = statistics.median(recent) / 1e9
        cause = likely_cause(offset_s, (max(recent) - min(recent)) / 1e9)
        self._reported[device_id] = (offset_s, cause)
        self.on_offset(device_id, offset_s)
        side = "behind" if offset_s > 0 else "ahead of"
        log.warning("device %s: its event times sit %s receipt time by %s (%.0f s, last %d batches); likely "
                    "cause: %s", device_id, side, _span(abs(offset_s)), offset_s, len(recent), cause)

    def reported(self) -> list[dict[str, Any]]:
        """Devices whose clock offset is reported now: id, offset in seconds (positive: behind), likely cause."""
        reported = list(self._reported.items())  # one C-level copy: the ingest thread writes it
        return [{"device": d, "offset_s": round(o, 1), "cause": c} for d, (o, c) in sorted(reported)]


def _span(seconds: float) -> str:
    if seconds >= 3570:  # an hour behind, received half a minute early, still reads "1.00 h"
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"
