"""The report's data model: the period, figures, completeness, and the rows grouped by series (pure: no I/O).

Every rule here is written down in docs/report.md and repeated in the report's methodology annex:
- a **day** is a local calendar day in the report's time zone;
- a **valid hour** is a 1-hour KPI window the gateway emitted with `valid=true` (its coverage rule, 45 of 60
  minutes by default); a **valid day** of a concentration holds at least 18 valid hours (75 % of 24, the EU rule for
  daily means); a daily indicator (Lden, consumption, traffic volume) is valid when the gateway emitted it valid;
- **completeness** = valid days / days in the period; a figure meets the data-capture rule at ≥ 90 %
  (`[report] data_capture`); a figure on less data is still shown, flagged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from gateway.report.source import KpiRow

__all__ = ["Comparison", "Completeness", "Figure", "Key", "Period", "ReportData", "ReportInputs", "Rows", "mean_of",
           "period_flags"]

S = 1_000_000_000
Status = Literal["good", "fair", "poor", "info", "missing"]
Key = tuple[str, str]  # (gateway, device)


@dataclass(frozen=True)
class Period:
    """The reporting period: local days [start, end) in a time zone."""

    start: date
    end: date
    timezone: str

    @property
    def days(self) -> list[date]:
        """Every local day of the period."""
        return [self.start + timedelta(days=k) for k in range((self.end - self.start).days)]

    def ns(self, day: date) -> int:
        """UTC ns of local midnight starting `day`."""
        return int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(self.timezone)).timestamp()) * S

    @property
    def start_ns(self) -> int:
        """UTC ns of the period's start."""
        return self.ns(self.start)

    @property
    def end_ns(self) -> int:
        """UTC ns of the period's end (exclusive)."""
        return self.ns(self.end)

    def day_of(self, ts_ns: int) -> date:
        """The local day holding a UTC ns instant."""
        return datetime.fromtimestamp(ts_ns / S, ZoneInfo(self.timezone)).date()


@dataclass(frozen=True)
class Completeness:
    """Valid days of a figure against the days of the period, and whether that meets the rule."""

    valid_days: int
    days: int
    required: float

    @property
    def ratio(self) -> float:
        """Share of the period's days that are valid."""
        return self.valid_days / self.days if self.days else 0.0

    @property
    def meets(self) -> bool:
        """Whether the data-capture rule is met (compared unrounded)."""
        return self.ratio >= self.required


@dataclass(frozen=True)
class Comparison:
    """A figure against a reference value: a limit, a guideline, a threshold."""

    against: str
    limit: float
    unit: str
    value: float
    exceeded: bool
    note: str = ""


@dataclass
class Figure:
    """One row of the report: an indicator for one device, site or the whole city."""

    code: str
    indicator: str
    quantity: str
    scope: Literal["device", "site", "city"]
    subject: str
    value: float | None
    unit: str
    formula: str
    completeness: Completeness
    status: Status
    gateway: str = ""
    site: str = ""
    inputs: dict[str, float | str] = field(default_factory=dict)  # non-sensor inputs, shown as such
    comparisons: list[Comparison] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    source: str = ""  # the KPI series it is built from


@dataclass(frozen=True)
class ReportInputs:
    """What the city supplies: the [report] table."""

    population: int | None = None
    inhabitants: dict[str, int] = field(default_factory=dict)  # per site, for noise exposure
    street_km_total: float | None = None
    street_km: dict[str, float] = field(default_factory=dict)  # per traffic counter (device id)
    data_capture: float = 0.9


@dataclass
class ReportData:
    """Everything the renderers show: figures plus the daily series behind the charts."""

    period: Period
    figures: list[Figure]
    daily: dict[tuple[str, str, str], dict[date, float]]  # (gateway, device, series) -> day -> value
    hour_of_day: dict[tuple[str, str], list[float | None]]  # (gateway, device) -> mean traffic per local hour
    gateways: list[str]
    devices: list[tuple[str, str, str]]  # (gateway, device, site)


def mean_of(values: Iterable[float]) -> float | None:
    """The arithmetic mean, or None for no values."""
    vs = list(values)
    return sum(vs) / len(vs) if vs else None


def period_flags(c: Completeness, period_days: int) -> list[str]:
    """The flags every period figure gets from its completeness and the period's length."""
    out = []
    if not c.meets:
        out.append(f"insufficient data: {c.valid_days} of {c.days} days valid ({c.ratio:.0%}, rule "
                   f"{c.required:.0%})")
    if period_days < 365:
        out.append("period shorter than a year: indicative against annual values")
    return out


class Rows:
    """The period's KPI rows grouped by series once; the figure builders append to `figures` and `daily`."""

    def __init__(self, rows: Sequence[KpiRow], period: Period, inputs: ReportInputs) -> None:
        self.period = period
        self.inputs = inputs
        self.days = period.days
        self.figures: list[Figure] = []
        self.daily: dict[tuple[str, str, str], dict[date, float]] = {}
        self.sites: dict[Key, str] = {}
        self.series: dict[tuple[str, str, str, str], list[KpiRow]] = defaultdict(list)
        for r in rows:
            if not period.start_ns <= r.start_ns < period.end_ns:
                continue
            self.series[(r.gateway, r.device_id, r.name, r.window)].append(r)
            self.sites.setdefault((r.gateway, r.device_id), r.site)

    def keys(self, name: str, window: str) -> list[Key]:
        """(gateway, device) pairs that have a series of this name and window."""
        return sorted({(g, d) for (g, d, n, w) in self.series if n == name and w == window})

    def completeness(self, valid_days: int) -> Completeness:
        """Completeness of a figure with this many valid days in the period."""
        return Completeness(valid_days, len(self.days), self.inputs.data_capture)

    def valid_daily(self, key: Key, name: str, reduce: str = "last") -> dict[date, float]:
        """Valid 1-day values by local day (several series of one name, e.g. per pollutant: max)."""
        out: dict[date, float] = {}
        for r in self.series.get((*key, name, "1d"), []):
            if r.valid:
                day = self.period.day_of(r.start_ns)
                out[day] = max(out[day], r.value) if reduce == "max" and day in out else r.value
        return out
