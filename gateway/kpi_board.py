"""The latest point of every KPI series, and a day of one window length per quantity for the status charts.

Fed from the ingest thread (`Gateway._on_kpis`), read by the status page; thread-safe and bounded: series
beyond `max_series` push out the least recently updated one, counted in `evicted`.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from aggregators.kpi import KpiPoint
from aggregators.windows import WindowSpec
from devices.vocabulary import QUANTITIES

__all__ = ["KpiBoard", "chart_window"]

DAY_NS = 86_400 * 10**9
MAX_CHART_POINTS = 1440  # a day of 1-minute windows; shorter windows chart a shorter span


def chart_window(specs: Sequence[WindowSpec]) -> WindowSpec | None:
    """The window the day charts are drawn from: the shortest of at least a minute (else the shortest)."""
    if not specs:
        return None
    minute_or_more = [s for s in specs if s.size_ns >= 60 * 10**9]
    return min(minute_or_more or specs, key=lambda s: s.size_ns)


def _as_shown(p: KpiPoint) -> KpiPoint:
    """The point as the status page shows it: of its statistics only the coverage (10,000 series: 4 MB less)."""
    if len(p.fields) <= 1 or "coverage" not in p.fields:
        return p
    return replace(p, fields={"coverage": p.fields["coverage"]})


class KpiBoard:
    """Latest KPI point per (device, series, window), as the status page shows it, and per-quantity history for
    charts."""

    def __init__(self, chart: WindowSpec | None, max_series: int = 10_000) -> None:
        self.chart = chart
        self.max_series = max_series
        self.chart_points = (min(MAX_CHART_POINTS, math.ceil(DAY_NS / chart.size_ns)) if chart else 0)
        self.evicted = 0
        self._lock = threading.Lock()
        self._latest: OrderedDict[tuple[str, str, str], KpiPoint] = OrderedDict()
        self._history: OrderedDict[tuple[str, str], _History] = OrderedDict()

    def add(self, points: Sequence[KpiPoint]) -> None:
        """Remember newly closed windows and indicators."""
        with self._lock:
            for p in points:
                key = (p.device_id, p.name, p.window)
                self._latest[key] = _as_shown(p)
                self._latest.move_to_end(key)
                if self.chart is not None and p.window == self.chart.label and p.name in QUANTITIES:
                    hkey = (p.device_id, p.name)
                    series = self._history.get(hkey)
                    if series is None:
                        series = self._history[hkey] = _History(self.chart_points)
                    series.append(p.start_ns, p.value)
                    series.unit = p.unit
                    self._history.move_to_end(hkey)
            while len(self._latest) > self.max_series:
                self._latest.popitem(last=False)
                self.evicted += 1
            while len(self._history) > self.max_series:
                self._history.popitem(last=False)

    def latest(self) -> list[KpiPoint]:
        """The latest point of every series, by device, series name and window length."""
        with self._lock:
            points = list(self._latest.values())
        return sorted(points, key=lambda p: (p.device_id, p.name, p.end_ns - p.start_ns, p.window))

    def history(self, device_id: str, since_ns: int) -> dict[str, tuple[str, list[tuple[int, float]]]]:
        """Per quantity of the device: (unit, [(window start ns, value)]) from `since_ns` on."""
        with self._lock:
            out = {q: (series.unit, series.since(since_ns))
                   for (d, q), series in self._history.items() if d == device_id}
        return {q: v for q, v in sorted(out.items()) if v[1]}

    def describe(self) -> dict[str, Any]:
        """Bounds and drops, for /status.json."""
        return {"series_max": self.max_series, "series_evicted": self.evicted,
                "chart_window": self.chart.label if self.chart else None}


class _History:
    """One series' unit and last `keep` chart points as two arrays: 16 bytes a point, against about 120 in a deque
    of tuples."""

    __slots__ = ("keep", "starts", "unit", "values")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.unit = ""
        self.starts = array("q")
        self.values = array("d")

    def append(self, start_ns: int, value: float) -> None:
        """Add a point (the arrays are trimmed a quarter of `keep` at a time, so a trim's cost is shared)."""
        self.starts.append(start_ns)
        self.values.append(value)
        excess = len(self.starts) - self.keep
        if excess > self.keep // 4:
            del self.starts[:excess]
            del self.values[:excess]

    def since(self, since_ns: int) -> list[tuple[int, float]]:
        """The last `keep` points (window start ns, value) from `since_ns` on."""
        first = max(0, len(self.starts) - self.keep)
        return [(t, v) for t, v in zip(self.starts[first:], self.values[first:], strict=True) if t >= since_ns]
