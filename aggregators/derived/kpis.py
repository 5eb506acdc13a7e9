"""`DerivedKpis`: the window engine's closed windows in, every registered group's indicator points out.

The facade keeps what the groups share (the hourly horizon, the local days already emitted, the devices' tags),
hands each closed window to the groups that keep its quantity, and calls their hooks in registry order so a
batch's points keep one stable order: 1d-window series, then hour by hour and device by device the hourly
series, then day by day each device's day series and the kit-wide ones, then the series that wait past the day.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo

from aggregators.derived.base import GroupCalculator, KpiContext
from aggregators.derived.options import H, KpiOptions, Q
from aggregators.derived.registry import GROUPS
from aggregators.kpi import KpiPoint

__all__ = ["STATE_VERSION", "DerivedKpis"]

# 1: one object for all groups (hourly/quarters/units/water_meters/energy_meters/max8_until at the top level).
# 2: the shared clock and tags at the top level, each group's records and progress under "groups", versioned.
STATE_VERSION: Final = 2


class DerivedKpis:
    """Turns closed window points into indicator points; its state survives restarts via `state()`."""

    def __init__(self, options: KpiOptions, timezone: str = "UTC") -> None:
        self.options = options
        self.timezone = timezone
        self.tz = ZoneInfo(timezone)
        self._ctx = KpiContext(options, self.tz)
        # Every group keeps its records (a group switched on later finds them); only switched-on ones emit.
        self._groups: list[GroupCalculator] = [cls(self._ctx) for cls in GROUPS.values()]
        self._active = [g for g in self._groups if g.on]
        self._horizon = 0  # the latest end of a closed hourly window: every hour before it is closed
        # Event time up to which every source's windows are closed (windows close per device): a day is
        # complete only once the slowest device's last hour of it has closed too.
        self._all_closed: int | None = None
        self._done_until = 0  # local midnight up to which day series have been emitted

    def feed(self, points: Sequence[KpiPoint], closed_everywhere: int | None = None) -> list[KpiPoint]:
        """Indicator points that these closed windows complete.

        `closed_everywhere`: event time up to which every device's windows are closed (the window engine's
        slowest source); day series wait for it. None: the newest closed hour decides, as for one device.
        """
        self._all_closed = closed_everywhere
        out: list[KpiPoint] = []
        new_hours: dict[int, set[str]] = {}
        for p in points:
            size = p.end_ns - p.start_ns
            if size == H and p.window != "1d":
                self._horizon = max(self._horizon, p.end_ns)
                keepers = [g for g in self._groups if p.name in g.hourly_quantities]
                if not keepers:
                    continue  # a quantity no indicator reads (temperature, particle counts…) costs nothing
                self._remember_tags(p)
                for g in keepers:
                    g.add_hour(p)
                new_hours.setdefault(p.start_ns, set()).add(p.device_id)
            elif size == Q and any(p.name in g.quarterly_quantities for g in self._groups):
                for g in self._groups:
                    if p.name in g.quarterly_quantities:
                        g.add_quarter(p)
            elif p.window == "1d":
                self._remember_tags(p)
                for g in self._active:
                    out.extend(g.on_daily_window(p))
        for hour in sorted(new_hours):
            for device in sorted(new_hours[hour]):
                for g in self._active:
                    out.extend(g.on_hour(device, hour))
        limit = self._day_limit()
        out.extend(self._complete_days(limit))
        for g in self._active:
            out.extend(g.on_closed(limit))
        for g in self._groups:
            g.prune(self._horizon, self._done_until)
        return out

    def state(self) -> dict[str, Any]:
        """JSON-able state to persist with the window horizon (version 2: one versioned object per group)."""
        return {
            "version": STATE_VERSION,
            "horizon": self._horizon,
            "done_until": self._done_until,
            "tags": {d: dict(t) for d, t in sorted(self._ctx.tags.items())},
            "groups": {g.group: g.state() for g in self._groups},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore what `state()` returned, or what the version-1 code (one object for all groups) saved."""
        if not state or state.get("version") not in (1, STATE_VERSION):
            return
        self._horizon = int(state["horizon"])
        self._done_until = int(state["done_until"])
        self._ctx.tags.clear()
        self._ctx.tags.update({d: dict(t) for d, t in state.get("tags", {}).items()})
        groups = state.get("groups", {})
        for g in self._groups:
            if state["version"] == 1:
                g.restore(g.from_v1(state))
            elif g.group in groups:
                g.restore(groups[g.group])

    def _remember_tags(self, p: KpiPoint) -> None:
        if p.tags:
            self._ctx.tags[p.device_id] = dict(p.tags)

    def _day_limit(self) -> int:
        """Days ending at or before this are complete: every device's hours of them have closed."""
        if self._all_closed is None:
            return self._horizon
        return min(self._horizon, self._all_closed)

    def _complete_days(self, limit: int) -> list[KpiPoint]:
        """Emit the day series of every local day that ended at or before `limit`."""
        if limit <= self._done_until:
            return []
        out: list[KpiPoint] = []
        first = self._done_until or min((t for g in self._groups if (t := g.earliest_hour()) is not None),
                                        default=0)
        if first:
            d0, d1 = self._ctx.day_bounds(first)
            while d1 <= limit:
                out.extend(self._day_series(d0, d1))
                d0, d1 = d1, self._ctx.day_bounds(d1)[1]
        self._done_until = max(self._done_until, self._ctx.day_bounds(limit)[0])
        return out

    def _day_series(self, d0: int, d1: int) -> list[KpiPoint]:
        """One day's series: device by device every group's, then the kit-wide ones."""
        days = [g.on_day(d0, d1) for g in self._active]
        out: list[KpiPoint] = []
        for device in sorted({d for day in days for d in day.by_device}):
            for day in days:
                out.extend(day.by_device.get(device, ()))
        for day in days:
            out.extend(day.kit)
        return out
