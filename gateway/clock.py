"""The gateway's view of time: wall-clock jumps and an unset clock are detected and reported, never ignored."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ingest.validate import MIN_PLAUSIBLE_NS

__all__ = ["ClockWatch"]

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
