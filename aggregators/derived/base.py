"""What every indicator group shares: typed hourly records, the kit's clock and tags, the calculator protocol.

A group calculator keeps the closed windows of the quantities it reads (`hourly_quantities`, and 15-min bins of
`quarterly_quantities`), emits its series from the hooks the `DerivedKpis` facade calls, and saves its own
versioned state. A new group is one module with a `@register`ed subclass plus one line in `registry.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, NamedTuple
from zoneinfo import ZoneInfo

from aggregators.derived.options import H, KpiOptions, Q
from aggregators.kpi import KpiPoint

__all__ = ["GROUPS", "DayPoints", "GroupCalculator", "HourRecord", "KpiContext", "SeriesTable", "register"]

SeriesTable = dict[str, tuple[tuple[str, ...], str]]  # series name -> (windows, unit)
Key = tuple[str, str]  # (device_id, quantity)


class HourRecord(NamedTuple):
    """One closed window: its headline value (mean, dB energetic mean, consumption or sum), validity, samples."""

    value: float
    valid: bool
    samples: int  # the window's "count" field: samples (or reports, for counters) it folded

    @classmethod
    def of(cls, p: KpiPoint) -> HourRecord:
        """The record of a closed window point."""
        return cls(float(p.value), bool(p.valid), int(p.fields.get("count", 0)))

    @classmethod
    def from_json(cls, rec: list[Any]) -> HourRecord:
        """Read the saved form [value, valid 0/1, count]."""
        return cls(float(rec[0]), bool(rec[1]), int(rec[2]))


def _saved(recs: dict[int, HourRecord]) -> list[list[Any]]:
    """Records in their saved form [[start, [value, valid 0/1, count]], …] (the one state version 1 used)."""
    # One comprehension, no call per record: state() runs at every commit of closed windows, over every record.
    return [[ts, [r[0], 1 if r[1] else 0, r[2]]] for ts, r in sorted(recs.items())]


class DayPoints(NamedTuple):
    """A group's series of one local day: per device (interleaved across groups by device) and kit-wide."""

    by_device: dict[str, list[KpiPoint]]
    kit: list[KpiPoint]


@dataclass
class KpiContext:
    """The kit's options, local clock and device tags, shared by every group."""

    options: KpiOptions
    tz: ZoneInfo
    tags: dict[str, dict[str, str]] = field(default_factory=dict)

    def point(self, name: str, device: str, window: str, start: int, end: int, unit: str, value: float,
              fields: Mapping[str, Any], tags: Mapping[str, str], valid: bool) -> KpiPoint:
        """An indicator point of `device`, carrying the device's tags under the series' own."""
        merged = {**self.tags.get(device, {}), **tags}
        return KpiPoint(name, device, window, start, end, unit, float(value), dict(fields), merged, bool(valid))

    def local(self, ts_ns: int) -> datetime:
        """`ts_ns` on the kit's local clock."""
        return datetime.fromtimestamp(ts_ns // 1_000_000_000, self.tz)

    def day_bounds(self, ts_ns: int) -> tuple[int, int]:
        """[local midnight, next local midnight) around ts_ns, in UTC ns (23 or 25 h across DST)."""
        midnight = self.local(ts_ns).replace(hour=0, minute=0, second=0, microsecond=0)
        nxt = (midnight.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=self.tz)
        return int(midnight.timestamp()) * 1_000_000_000, int(nxt.timestamp()) * 1_000_000_000


class GroupCalculator:
    """One indicator group: the records it keeps, its hooks (all optional) and its versioned state."""

    group: ClassVar[str]  # registry name
    indicators: ClassVar[frozenset[str]]  # the [kpis] indicators that switch the group on
    SERIES: ClassVar[SeriesTable]  # every series the group emits
    STATE_VERSION: ClassVar[int] = 1
    HISTORY_HOURS: ClassVar[int | None] = None  # hourly records kept behind the horizon; None: the open day
    V1_KEYS: ClassVar[dict[str, str]] = {}  # top-level key of the version-1 facade state -> key of ours

    def __init__(self, ctx: KpiContext) -> None:
        self.ctx = ctx
        self.options = ctx.options
        self.on = frozenset(ctx.options.indicators) & self.indicators
        self.hourly_quantities: frozenset[str] = frozenset()
        self.quarterly_quantities: frozenset[str] = frozenset()
        self._hourly: dict[Key, dict[int, HourRecord]] = {}
        self._quarters: dict[Key, dict[int, HourRecord]] = {}
        self._units: dict[Key, str] = {}

    # -- records ---------------------------------------------------------------------------------------------

    def add_hour(self, p: KpiPoint) -> None:
        """Keep a closed hourly window of one of `hourly_quantities`."""
        self._units[(p.device_id, p.name)] = p.unit
        self._hourly.setdefault((p.device_id, p.name), {})[p.start_ns] = HourRecord.of(p)

    def add_quarter(self, p: KpiPoint) -> None:
        """Keep a closed 15-min window of one of `quarterly_quantities`."""
        self._units[(p.device_id, p.name)] = p.unit
        self._quarters.setdefault((p.device_id, p.name), {})[p.start_ns] = HourRecord.of(p)

    def rec(self, device: str, quantity: str, hour: int) -> HourRecord | None:
        """The hourly record of `quantity` at `hour`, if kept."""
        return self._hourly.get((device, quantity), {}).get(hour)

    def valid_value(self, device: str, quantity: str, hour: int) -> float | None:
        """The value of a valid hourly record, else None."""
        rec = self.rec(device, quantity, hour)
        return rec.value if rec is not None and rec.valid else None

    def unit(self, device: str, quantity: str) -> str:
        """The unit `quantity` last arrived in ("" before any)."""
        return self._units.get((device, quantity), "")

    def bins(self, device: str, quantity: str, d0: int, d1: int) -> list[HourRecord | None]:
        """The 15-min records of [d0, d1), None where missing."""
        recs = self._quarters.get((device, quantity), {})
        return [recs.get(t) for t in range(d0, d1, Q)]

    def earliest_hour(self) -> int | None:
        """The start of the oldest hourly record kept."""
        return min((min(recs) for recs in self._hourly.values() if recs), default=None)

    def present(self, d0: int, d1: int) -> dict[str, set[str]]:
        """Device -> the quantities with an hourly record in [d0, d1)."""
        by_device: dict[str, set[str]] = {}
        for (d, q), recs in self._hourly.items():
            if any(d0 <= h < d1 for h in recs):
                by_device.setdefault(d, set()).add(q)
        return by_device

    # -- hooks the facade calls (on groups with an indicator switched on) ------------------------------------

    def on_daily_window(self, p: KpiPoint) -> list[KpiPoint]:
        """Series of a closed "1d" window."""
        return []

    def on_hour(self, device: str, hour: int) -> list[KpiPoint]:
        """Series that the closed hour `hour` of `device` completes."""
        return []

    def on_day(self, d0: int, d1: int) -> DayPoints:
        """Series of the complete local day [d0, d1)."""
        return DayPoints({}, [])

    def on_closed(self, day_limit: int) -> list[KpiPoint]:
        """Series that wait past the day (daily max 8-h means): every hour before `day_limit` has closed."""
        return []

    # -- memory bound and state (every group, switched on or not) ---------------------------------------------

    def prune(self, horizon: int, done_until: int) -> None:
        """Keep HISTORY_HOURS hourly records behind the horizon (or the open day), and the open day's bins."""
        keep_h = done_until if self.HISTORY_HOURS is None else horizon - self.HISTORY_HOURS * H
        for table, keep in ((self._hourly, keep_h), (self._quarters, done_until)):
            for key in list(table):
                recs = table[key]
                for ts in [t for t in recs if t < keep]:
                    del recs[ts]
                if not recs:
                    del table[key]

    def state(self) -> dict[str, Any]:
        """JSON-able state of the group, with its own version."""
        return {
            "version": self.STATE_VERSION,
            "hourly": [[d, q, _saved(recs)] for (d, q), recs in sorted(self._hourly.items())],
            "quarters": [[d, q, _saved(recs)] for (d, q), recs in sorted(self._quarters.items())],
            "units": [[d, q, u] for (d, q), u in sorted(self._units.items())],
            **self.extra_state(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore what `state()` returned; another version leaves the group empty."""
        if state.get("version") != self.STATE_VERSION:
            return
        self._hourly = {(d, q): {int(ts): HourRecord.from_json(r) for ts, r in recs} for d, q, recs in state["hourly"]}
        self._quarters = {(d, q): {int(ts): HourRecord.from_json(r) for ts, r in recs}
                          for d, q, recs in state["quarters"]}
        self._units = {(d, q): u for d, q, u in state.get("units", [])}
        self.restore_extra(state)

    def extra_state(self) -> dict[str, Any]:
        """Group-specific state beside the records."""
        return {}

    def restore_extra(self, state: Mapping[str, Any]) -> None:
        """Restore what `extra_state()` returned."""

    def from_v1(self, old: Mapping[str, Any]) -> dict[str, Any]:
        """Our part of a version-1 facade state (one object for every group), as our own `state()`."""
        mine = self.hourly_quantities | self.quarterly_quantities
        return {
            "version": 1,  # the group format this translation writes (restore() refuses any other version)
            "hourly": [[d, q, recs] for d, q, _u, recs in old["hourly"] if q in self.hourly_quantities],
            "quarters": [[d, q, recs] for d, q, recs in old["quarters"] if q in self.quarterly_quantities],
            "units": [[d, q, u] for d, q, u in old.get("units", []) if q in mine],
            **{ours: old[theirs] for theirs, ours in self.V1_KEYS.items() if theirs in old},
        }


GROUPS: dict[str, type[GroupCalculator]] = {}


def register(cls: type[GroupCalculator]) -> type[GroupCalculator]:
    """Class decorator: add an indicator group to the registry (registry.py imports the modules in order)."""
    if cls.group in GROUPS:
        raise ValueError(f"indicator group {cls.group!r} registered twice")
    GROUPS[cls.group] = cls
    return cls
