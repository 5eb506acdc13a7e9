"""Event-time tumbling windows with a watermark and grace; the core owns windows, late data and closing.

A reading falls in the window of its event time. A window [start, end) closes once the watermark passes
end + grace; a reading arriving for an already closed window is *late*: counted, kept raw in the journal,
and not folded into the (already published) KPI. Daily windows follow the kit's local time zone, so a day is
23 or 25 hours long across DST changes.
"""

from __future__ import annotations

import heapq
import re
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from aggregators.counters import CounterDelta
from aggregators.kpi import KpiPoint
from aggregators.stats import coverage, level_stats
from devices.reading import Reading
from devices.vocabulary import QUANTITIES

__all__ = ["WindowEngine", "WindowSpec", "parse_duration_ns"]

_NS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
       "d": 86_400_000_000_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration_ns(text: str) -> int:
    """'30s', '1m', '15m', '1h', '1d', '250ms' → nanoseconds; ValueError with the accepted forms."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, e.g. 250ms, 30s, 15m, 1h, 1d")
    return int(float(m.group(1)) * _NS[m.group(2)])


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A tumbling window: its label ('1h'), size, completeness rule and coverage slots."""

    label: str
    size_ns: int
    min_coverage: float = 0.75  # e.g. 18 of 24 hours for a daily mean
    slots: int = 60
    calendar_day: bool = False  # aligned to local midnight (DST-correct) instead of UTC multiples

    @classmethod
    def parse(cls, label: str, min_coverage: float = 0.75) -> WindowSpec:
        """Build a spec from '1m', '15m', '1h', '1d'…; slots: 6 per minute, 1 per minute, 1 per hour for days."""
        size = parse_duration_ns(label)
        if size >= _NS["d"]:
            return cls(label, size, min_coverage, slots=24 * size // _NS["d"], calendar_day=size == _NS["d"])
        if size > _NS["m"]:
            slots = size // _NS["m"]  # minute slots: a device reporting once a minute fills every one
        elif size == _NS["m"]:
            slots = 6  # 10-second slots
        else:
            slots = max(1, size // _NS["s"])
        return cls(label, size, min_coverage, slots=int(slots))


class _Bucket:
    """One open window of one series, compact: (offset from window start in ns, value) pairs of doubles.

    8 bytes a number instead of a Python object each; offsets stay exact (a day is 8.6e13 ns < 2^53).
    """

    __slots__ = ("end", "pairs")

    def __init__(self, end: int) -> None:
        self.end = end
        self.pairs = array("d")


SeriesKey = tuple[str, str, str]  # device_id, quantity, unit


class WindowEngine:
    """Folds readings into open windows and emits KPI points when the watermark closes them."""

    def __init__(self, specs: Iterable[WindowSpec], grace_ns: int, timezone: str = "UTC") -> None:
        self.specs = tuple(specs)
        self.grace_ns = grace_ns
        self.tz = ZoneInfo(timezone)
        self._open: dict[tuple[SeriesKey, WindowSpec, int], _Bucket] = {}
        # Open buckets grouped by window end, and a heap of those ends: closing costs what closes, not
        # what is open (10,000 devices keep 100,000 buckets open).
        self._by_end: dict[int, list[tuple[SeriesKey, WindowSpec, int]]] = {}
        self._ends: list[int] = []
        # One meter state machine per series and window size (aggregators/counters.py: resets, jitter).
        self._counters: dict[tuple[SeriesKey, WindowSpec], CounterDelta] = {}
        self._tags: dict[SeriesKey, dict[str, str]] = {}
        self.closed_until: dict[str, int] = {s.label: 0 for s in self.specs}
        self.late = 0
        self.counter_resets = 0

    def window_of(self, spec: WindowSpec, ts_ns: int) -> tuple[int, int]:
        """[start, end) in UTC ns of the window of `spec` that holds `ts_ns`."""
        if spec.calendar_day:
            local = datetime.fromtimestamp(ts_ns / 1e9, self.tz)
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            nxt = (midnight + timedelta(days=1)).replace(tzinfo=None)
            start = int(midnight.timestamp()) * 1_000_000_000
            end = int(nxt.replace(tzinfo=self.tz).timestamp()) * 1_000_000_000
            return start, end
        start = ts_ns - ts_ns % spec.size_ns
        return start, start + spec.size_ns

    def add(self, reading: Reading) -> bool:
        """Fold one reading into its windows; False (and counted) when it is late for every window."""
        key = (reading.device_id, reading.quantity, reading.unit)
        taken = False
        for spec in self.specs:
            start, end = self.window_of(spec, reading.ts)
            if end <= self.closed_until[spec.label]:
                continue
            bucket_key = (key, spec, start)
            bucket = self._open.get(bucket_key)
            if bucket is None:
                bucket = self._open[bucket_key] = _Bucket(end)
                due = self._by_end.get(end)
                if due is None:
                    due = self._by_end[end] = []
                    heapq.heappush(self._ends, end)
                due.append(bucket_key)  # the same tuple object as the dict key: no second copy
            bucket.pairs.append(reading.ts - start)
            bucket.pairs.append(reading.value)
            taken = True
        if taken:
            if reading.tags:
                self._tags[key] = dict(reading.tags)
        else:
            self.late += 1
        return taken

    def seed_counter(self, reading: Reading) -> None:
        """Remember a cumulative meter value as the baseline of windows after it (rebuild after a restart).

        Only for window sizes whose window of this reading is already closed: its value is then the
        "previous" value the next open window's consumption starts from.
        """
        q = QUANTITIES.get(reading.quantity)
        if q is None or not q.cumulative:
            return
        key = (reading.device_id, reading.quantity, reading.unit)
        for spec in self.specs:
            if self.window_of(spec, reading.ts)[1] <= self.closed_until[spec.label]:
                self._counter(key, spec).update(reading.ts, reading.value)

    def _counter(self, key: SeriesKey, spec: WindowSpec) -> CounterDelta:
        counter = self._counters.get((key, spec))
        if counter is None:
            counter = self._counters[(key, spec)] = CounterDelta()
        return counter

    def advance(self, watermark_ns: int) -> list[KpiPoint]:
        """Close every window whose end + grace <= watermark; return their KPI points (oldest first)."""
        horizon = watermark_ns - self.grace_ns
        due: list[tuple[SeriesKey, WindowSpec, int]] = []
        while self._ends and self._ends[0] <= horizon:
            due.extend(self._by_end.pop(heapq.heappop(self._ends)))
        due.sort(key=lambda k: (k[2], k[1].size_ns, k[0]))
        points = [self._close(k) for k in due]
        for spec in self.specs:
            # Everything that ends at or before the horizon is closed now, buckets or not.
            start, end = self.window_of(spec, horizon)
            closed = start if end > horizon else end
            if closed > self.closed_until[spec.label]:
                self.closed_until[spec.label] = closed
        return points

    def open_since(self) -> int:
        """Event time from which readings must be replayed to rebuild every open window."""
        return min(self.closed_until.values(), default=0)

    def _close(self, k: tuple[SeriesKey, WindowSpec, int]) -> KpiPoint:
        key, spec, start = k
        bucket = self._open.pop(k)
        end = bucket.end
        device_id, quantity, unit = key
        pairs = np.frombuffer(bucket.pairs, dtype=np.float64).reshape(-1, 2)
        order = np.argsort(pairs[:, 0], kind="stable")
        ts = pairs[order, 0].astype(np.int64) + start
        values = pairs[order, 1]
        q = QUANTITIES.get(quantity)
        fields: dict[str, float | int] = dict(level_stats(values, decibel=unit == "dBA"))
        headline = float(fields["mean"])
        if q is not None and q.cumulative:
            # Consumption chains from the previous window's last reading, so no interval is lost at edges.
            counter = self._counter(key, spec)
            resets_before = counter.resets
            consumed = 0.0
            for t, v in zip(ts.tolist(), values.tolist(), strict=True):
                consumed += counter.update(t, v).consumption or 0.0
            resets = counter.resets - resets_before
            self.counter_resets += resets
            fields.update({"consumption": consumed, "first": float(values[0]), "last": float(values[-1]),
                           "resets": resets})
            headline = consumed
        if q is not None and q.additive:
            fields["sum"] = float(values.sum())
            headline = fields["sum"]
        cov = coverage(ts, start, end, spec.slots)
        fields["coverage"] = cov
        return KpiPoint(
            name=quantity,
            device_id=device_id,
            window=spec.label,
            start_ns=start,
            end_ns=end,
            unit=unit,
            value=headline,
            fields=fields,
            tags=self._tags.get(key, {}),
            valid=cov >= spec.min_coverage,
        )
