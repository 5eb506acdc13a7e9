"""Event-time tumbling windows with a watermark per source and grace; the core owns windows, late data and closing.

A reading falls in the window of its event time. Each source (device) has its own watermark: the newest event
time it sent, bounded by the wall clock; once the source is idle (quiet for the idle time and for three of its
usual pauses between batches), the wall clock drives it, so its windows still close. A window [start, end) of
a source closes once that source's watermark passes end + grace; a reading arriving for an already closed
window is *late* for that window: counted per window length, kept raw in the journal, and not folded into the
(already published) KPI. One device that lags (a LoRaWAN network server, a logger uploading in batches) or
runs ahead therefore never costs the others their windows. Daily windows follow the kit's local time zone, so
a day is 23 or 25 hours long across DST.
"""

from __future__ import annotations

import heapq
import re
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from sys import intern
from zoneinfo import ZoneInfo

import numpy as np

from aggregators.counters import CounterDelta
from aggregators.kpi import KpiPoint
from aggregators.stats import SMALL_WINDOW, coverage, level_stats, small_coverage, small_level_stats, small_sum
from devices.reading import EMPTY_TAGS, Reading
from devices.vocabulary import QUANTITIES

__all__ = ["IDLE_INTERVALS", "WindowEngine", "WindowSpec", "parse_duration_ns"]

# A source is idle once it was quiet this many of its usual pauses between batches (and the idle time): a
# LoRaWAN device reporting every 5 minutes is not idle after 5 seconds, a stream every second is.
IDLE_INTERVALS = 3
COMPACT_OVER = 4096  # open buckets: below this a rebuilt dict would save too little to be worth the copy
_NO_BATCH, _ONE_BATCH = -2, -1  # a source's pause before it sent two batches in this run

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


SeriesKey = tuple[str, str, str]  # device_id, quantity, unit
# One open window of one series: device_id, quantity, unit, the window size's index in the engine's specs, window
# start. Its readings are an array('d') of (offset from the window start in ns, value) pairs: 8 bytes a number
# instead of a Python object each; offsets stay exact (a day is 8.6e13 ns < 2^53). One flat tuple and the array
# are all an open window costs (10,000 devices keep 100,000 open): no object per window, no nested series tuple,
# its end computed again when it closes, device and quantity names interned (one string per name, not one per
# window: each reading brings its own copies from the JSON decoder).
BucketKey = tuple[str, str, str, int, int]


class _Source:
    """Event-time state of one source (device): its watermark inputs, horizon and open buckets by end."""

    __slots__ = ("by_end", "ends", "first", "horizon", "interval", "max_event", "received")

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon  # every window of this source ending at or before it is closed
        self.max_event = 0  # the newest event time it sent
        self.received = 0  # receipt time of its latest batch (wall clock, ns)
        self.interval = _NO_BATCH  # how long a pause is normal for it: between its last two batches
        self.first = 0  # the oldest event time of its first batch (while it has sent one batch only)
        # Open buckets grouped by window end, and a heap of those ends: closing costs what closes, not
        # what is open (10,000 devices keep 100,000 buckets open).
        self.by_end: dict[int, list[BucketKey]] = {}
        self.ends: list[int] = []

    def note(self, ts: int, received_ns: int | None) -> None:
        """Take in a reading's event time; `received_ns` (None in a replay) is when its batch arrived."""
        if received_ns is not None and received_ns != self.received:  # the first reading of a new batch
            if self.interval == _NO_BATCH:
                self.interval, self.first = _ONE_BATCH, ts
            else:
                self.interval = received_ns - self.received  # the pause before this batch
            self.received = received_ns
        if self.interval == _ONE_BATCH and ts < self.first:
            self.first = ts
        if ts > self.max_event:
            self.max_event = ts


def _raise_horizon(src: _Source, horizon: int, due: list[BucketKey]) -> None:
    """Move the source's horizon up to `horizon`; add the keys of the buckets that closed to `due`."""
    if horizon > src.horizon:
        src.horizon = horizon
    ends = src.ends
    if ends and ends[0] <= horizon:
        while ends and ends[0] <= horizon:
            due.extend(src.by_end.pop(heapq.heappop(ends)))
        if not ends:  # a fresh {} has no table; the emptied dict keeps one (160 bytes a source)
            src.by_end = {}


class WindowEngine:
    """Folds readings into open windows and emits KPI points when the watermark closes them."""

    def __init__(self, specs: Iterable[WindowSpec], grace_ns: int, timezone: str = "UTC",
                 max_lag_ns: int = 86_400_000_000_000, max_late_sources: int = 10_000) -> None:
        self.specs = tuple(specs)
        self.grace_ns = grace_ns
        self.tz = ZoneInfo(timezone)
        # While the wall clock drives, no source's watermark trails it by more than this: a device whose
        # clock is stuck in the past cannot hold its windows (and the journal readings they need) open.
        self.max_lag_ns = max_lag_ns
        self._open: dict[BucketKey, array[float]] = {}
        # A dict never shrinks its table when keys go: after 100,000 windows close, the empty dict would keep
        # 5 MB. _close_all rebuilds it once it holds under a quarter of its size before the closes since.
        self._open_high = 0
        self._sources: dict[str, _Source] = {}
        self._floor = 0  # horizon of advance(): applies to every source, seen or not
        # One meter state machine per series and window size (aggregators/counters.py: resets, jitter).
        self._counters: dict[tuple[SeriesKey, WindowSpec], CounterDelta] = {}
        self._tags: dict[SeriesKey, dict[str, str]] = {}
        self.closed_until: dict[str, int] = {s.label: 0 for s in self.specs}
        self.late = 0  # readings late for every window (kept raw only)
        self.late_by_window: dict[str, int] = {s.label: 0 for s in self.specs}  # late for that window length
        self.late_by_source: dict[tuple[str, str], int] = {}  # (device, window label) -> late readings
        self.max_late_sources = max_late_sources
        # (device, window label, event time, that source's horizon) of the first late reading per device and
        # window, for the caller to log; drained by take_first_late().
        self._first_late: list[tuple[str, str, int, int]] = []
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

    def add(self, reading: Reading, received_ns: int | None = None) -> bool:
        """Fold one reading into its source's open windows; False (and counted) when it is late for every window.

        `received_ns` (the wall-clock receipt time) teaches the source's usual pause; a replay passes None.
        """
        return self.add_many((reading,), received_ns) == 0

    def add_many(self, readings: Iterable[Reading], received_ns: int | None = None) -> int:
        """Fold a batch of readings (as `add`, one after the other); returns how many were late for every window."""
        sources = self._sources
        buckets = self._open
        # (index, size, calendar day, label) of each window size: bucket keys hold the index, not the
        # WindowSpec, whose dataclass __hash__ (Python code) cost more than the rest of a lookup.
        specs = [(i, spec.size_ns, spec.calendar_day, spec.label) for i, spec in enumerate(self.specs)]
        late = 0
        run_device: str | None = None
        run_ts = 0
        day_start = day_end = 0  # the local day of the last reading, while it goes on (no datetime per reading)
        for device, quantity, value, unit, ts, tags, _ in readings:  # unpacked: see Reading
            if device != run_device or ts != run_ts:
                # A run of readings with one device and event time (a message's readings): its source is looked
                # up and taught the batch once for the run, not once per reading.
                run_device, run_ts = device, ts
                found = sources.get(device)
                src = found if found is not None else sources.setdefault(device, _Source(self._floor))
                src.note(ts, received_ns)
                horizon = src.horizon
            taken = False
            for index, size, calendar_day, label in specs:
                if calendar_day:
                    if not day_start <= ts < day_end:
                        day_start, day_end = self.window_of(self.specs[index], ts)
                    start, end = day_start, day_end
                else:
                    start = ts - ts % size
                    end = start + size
                if end <= horizon:
                    self._count_late(device, label, ts, horizon)
                    continue
                bucket_key = (device, quantity, unit, index, start)
                pairs = buckets.get(bucket_key)
                if pairs is None:
                    bucket_key = (intern(device), intern(quantity), unit, index, start)
                    pairs = buckets[bucket_key] = array("d")
                    due = src.by_end.get(end)
                    if due is None:
                        due = src.by_end[end] = []
                        heapq.heappush(src.ends, end)
                    due.append(bucket_key)  # the same tuple object as the dict key: no second copy
                pairs.append(ts - start)
                pairs.append(value)
                taken = True
            if taken:
                if tags:
                    self._tags[(device, quantity, unit)] = dict(tags)
            else:
                self.late += 1
                late += 1
        return late

    def _count_late(self, device: str, label: str, ts: int, horizon: int) -> None:
        self.late_by_window[label] += 1
        key = (device, label)
        n = self.late_by_source.get(key)
        if n is not None:
            self.late_by_source[key] = n + 1
        elif len(self.late_by_source) < self.max_late_sources:  # bounded: beyond it only per-window counts
            self.late_by_source[key] = 1
            if len(self._first_late) < 1000:
                self._first_late.append((device, label, ts, horizon))

    def take_first_late(self) -> list[tuple[str, str, int, int]]:
        """(device, window, event time, horizon) of each first late reading per device and window since last call."""
        out, self._first_late = self._first_late, []
        return out

    def clear_late(self) -> None:
        """Forget late counts (after a replay: those readings were counted in the run that journaled them)."""
        self.late = 0
        self.late_by_window = dict.fromkeys(self.late_by_window, 0)
        self.late_by_source.clear()
        self._first_late.clear()

    def seed_counter(self, reading: Reading) -> None:
        """Remember a cumulative meter value as the baseline of windows after it (rebuild after a restart).

        Only for window sizes whose window of this reading is already closed: its value is then the
        "previous" value the next open window's consumption starts from.
        """
        q = QUANTITIES.get(reading.quantity)
        if q is None or not q.cumulative:
            return
        key = (reading.device_id, reading.quantity, reading.unit)
        src = self._sources.get(reading.device_id)
        horizon = src.horizon if src is not None else self._floor
        for spec in self.specs:
            if self.window_of(spec, reading.ts)[1] <= horizon:
                self._counter(key, spec).update(reading.ts, reading.value)

    def _counter(self, key: SeriesKey, spec: WindowSpec) -> CounterDelta:
        counter = self._counters.get((key, spec))
        if counter is None:
            counter = self._counters[(key, spec)] = CounterDelta()
        return counter

    def advance(self, watermark_ns: int) -> list[KpiPoint]:
        """Close every window, of every source, whose end + grace <= watermark; return their KPI points."""
        horizon = watermark_ns - self.grace_ns
        if horizon > self._floor:
            self._floor = horizon
        due: list[BucketKey] = []
        for src in self._sources.values():
            _raise_horizon(src, horizon, due)
        for spec in self.specs:
            # Everything that ends at or before the horizon is closed now, buckets or not.
            start, end = self.window_of(spec, horizon)
            closed = start if end > horizon else end
            if closed > self.closed_until[spec.label]:
                self.closed_until[spec.label] = closed
        return self._close_all(due)

    def advance_sources(self, now_ns: int, idle_ns: int, wall_clock: bool = True,
                        devices: Iterable[str] | None = None) -> list[KpiPoint]:
        """Move each source's watermark (or only those of `devices`) and close what it passed (end + grace).

        A source's watermark is its newest event time, never beyond `now_ns`. With `wall_clock`, a source that
        sent nothing for `idle_ns` and for IDLE_INTERVALS of its usual pause between batches follows the wall
        clock, and none trails the wall clock by more than `max_lag_ns`; without it (an input with a backlog is
        down) only event time moves it. Returns the KPI points of the windows closed.
        """
        due: list[BucketKey] = []
        grace = self.grace_ns
        lowest = now_ns - self.max_lag_ns
        sources: Iterable[_Source] = self._sources.values()
        if devices is not None:
            sources = [src for src in map(self._sources.get, devices) if src is not None]
        for src in sources:
            watermark = src.max_event if src.max_event < now_ns else now_ns
            if wall_clock:
                if not src.received:  # only replayed since the start: quiet counts from the first tick
                    src.received = now_ns
                quiet = now_ns - src.received
                pause = src.interval
                if pause == _ONE_BATCH:
                    # One batch so far. One that reaches the present is an upload (a logger sending a quarter
                    # hour at once): expect the next after as long as it covered. An old one is a backlog or a
                    # lagging device: judged by the idle time alone.
                    pause = src.max_event - src.first if src.received - src.max_event <= idle_ns else 0
                elif pause < 0:
                    pause = 0
                if quiet >= idle_ns and quiet >= IDLE_INTERVALS * pause:
                    watermark = now_ns
                elif watermark < lowest:
                    watermark = lowest
            if watermark - grace > src.horizon:
                _raise_horizon(src, watermark - grace, due)
        return self._close_all(due)

    def _close_all(self, due: list[BucketKey]) -> list[KpiPoint]:
        specs = self.specs
        due.sort(key=lambda k: (k[4], specs[k[3]].size_ns, k[0], k[1], k[2]))
        self._open_high = max(self._open_high, len(self._open))  # it only grows between closes
        points = [self._close(k) for k in due]
        if self._open_high > COMPACT_OVER and len(self._open) * 4 < self._open_high:
            self._open = dict(self._open)
            self._open_high = len(self._open)
        return points

    def source_ids(self) -> list[str]:
        """Every source (device) the engine has heard, in the order first heard."""
        return list(self._sources)

    def open_since(self) -> int:
        """Event time from which readings must be replayed to rebuild every open window."""
        sources = list(self._sources.values())  # one C-level copy: housekeeping calls this from its thread
        if sources:
            return min(src.horizon for src in sources)
        return min(self.closed_until.values(), default=0)

    def closed_everywhere(self) -> int:
        """Event time up to which every source's windows are closed (the slowest source's horizon)."""
        sources = list(self._sources.values())
        return min((src.horizon for src in sources), default=self._floor)

    def source_state(self) -> dict[str, list[int]]:
        """Each source's horizon, newest event time and usual pause, to persist with the closed windows."""
        return {device: [src.horizon, src.max_event, max(0, src.interval)] for device, src in self._sources.items()}

    def restore_sources(self, state: dict[str, list[int]], now_ns: int) -> None:
        """Restore what source_state() returned (before replaying the journal); idle time counts from `now_ns`."""
        for device, (horizon, max_event, interval) in state.items():
            src = self._sources.get(device)
            if src is None:
                src = self._sources[device] = _Source(self._floor)
            src.horizon = max(src.horizon, int(horizon))
            src.max_event = max(src.max_event, int(max_event))
            src.interval = int(interval)
            src.received = now_ns  # a restart is not a pause of the device

    def restore_floor(self, closed_until: dict[str, int]) -> None:
        """Restore the horizon of a journal written before per-source watermarks (every source shares it)."""
        for label, value in closed_until.items():
            if label in self.closed_until:
                self.closed_until[label] = int(value)
        self._floor = max(self._floor, min(self.closed_until.values(), default=0))
        for src in self._sources.values():
            src.horizon = max(src.horizon, self._floor)

    def source_horizons(self) -> dict[str, int]:
        """Each source's horizon (windows ending at or before it are closed), for the status page."""
        return {device: src.horizon for device, src in self._sources.items()}

    def _close(self, k: BucketKey) -> KpiPoint:
        device_id, quantity, unit, index, start = k
        key = (device_id, quantity, unit)
        spec = self.specs[index]
        end = self.window_of(spec, start)[1]
        ts, values, stats, total, cov = _window_numbers(self._open.pop(k), start, end, spec.slots, unit == "dBA")
        q = QUANTITIES.get(quantity)
        fields: dict[str, float | int] = dict(stats)
        headline = float(fields["mean"])
        if q is not None and q.cumulative:
            # Consumption chains from the previous window's last reading, so no interval is lost at edges.
            counter = self._counter(key, spec)
            resets_before = counter.resets
            consumed = 0.0
            for t, v in zip(ts, values, strict=True):
                consumed += counter.update(t, v).consumption or 0.0
            resets = counter.resets - resets_before
            self.counter_resets += resets
            fields.update({"consumption": consumed, "first": float(values[0]), "last": float(values[-1]),
                           "resets": resets})
            headline = consumed
        if q is not None and q.additive:
            fields["sum"] = total
            headline = fields["sum"]
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
            tags=self._tags.get(key, EMPTY_TAGS),
            valid=cov >= spec.min_coverage,
        )


def _window_numbers(pairs: array[float], start: int, end: int, slots: int, decibel: bool
                    ) -> tuple[list[int], list[float], dict[str, float], float, float]:
    """A window's (time offset, value) pairs → its timestamps and values in time order, its statistics, sum and
    coverage; plain Python below SMALL_WINDOW values (the same numbers: aggregators/stats.py), numpy above."""
    if len(pairs) < 2 * SMALL_WINDOW and not decibel:
        order = sorted(range(0, len(pairs), 2), key=pairs.__getitem__)  # stable, as numpy's argsort below
        ts = [int(pairs[i]) + start for i in order]
        values = [pairs[i + 1] for i in order]
        return ts, values, small_level_stats(values), small_sum(values), small_coverage(ts, start, end, slots)
    both = np.frombuffer(pairs, dtype=np.float64).reshape(-1, 2)
    order_np = np.argsort(both[:, 0], kind="stable")
    ts_np = both[order_np, 0].astype(np.int64) + start
    values_np = both[order_np, 1]
    return (ts_np.tolist(), values_np.tolist(), level_stats(values_np, decibel), float(values_np.sum()),
            coverage(ts_np, start, end, slots))
