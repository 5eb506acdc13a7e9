"""The period figures of the U4SSC report, computed from KPI rows (pure: no I/O).

Every rule here is written down in docs/report.md and repeated in the report's methodology annex:
- a **day** is a local calendar day in the report's time zone;
- a **valid hour** is a 1-hour KPI window the gateway emitted with `valid=true` (its coverage rule, 45 of 60
  minutes by default); a **valid day** of a concentration holds at least 18 valid hours (75 % of 24, the EU rule for
  daily means); a daily indicator (Lden, consumption, traffic volume) is valid when the gateway emitted it valid;
- **completeness** = valid days / days in the period; a figure meets the data-capture rule at ≥ 90 %
  (`[report] data_capture`); a figure on less data is still shown, flagged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from aggregators import who
from aggregators.noise import END_LDEN_THRESHOLD, END_LNIGHT_THRESHOLD, laeq
from aggregators.u4ssc import INDICATORS, to_ugm3
from gateway.report.limits import EU_2008_ANNUAL, EU_2008_DAILY, EU_2030_ANNUAL, EU_2030_DAILY
from gateway.report.source import KpiRow

__all__ = [
    "AIR_POLLUTANTS",
    "Comparison",
    "Completeness",
    "Figure",
    "Period",
    "ReportData",
    "ReportInputs",
    "compute",
]

S = 1_000_000_000
AIR_POLLUTANTS = ("pm2_5", "pm10", "no2", "so2", "o3")
MIN_VALID_HOURS = 18  # of a day's hourly means, for a valid daily mean (75 %)
Status = Literal["good", "fair", "poor", "info", "missing"]


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


Key = tuple[str, str]  # (gateway, device)


def _mean(values: Iterable[float]) -> float | None:
    vs = list(values)
    return sum(vs) / len(vs) if vs else None


def _flags(c: Completeness, period_days: int) -> list[str]:
    flags = []
    if not c.meets:
        flags.append(f"insufficient data: {c.valid_days} of {c.days} days valid ({c.ratio:.0%}, rule "
                     f"{c.required:.0%})")
    if period_days < 365:
        flags.append("period shorter than a year: indicative against annual values")
    return flags


class _Builder:
    """Groups rows once, then builds each indicator family."""

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
        return sorted({(g, d) for (g, d, n, w) in self.series if n == name and w == window})

    def completeness(self, valid_days: int) -> Completeness:
        return Completeness(valid_days, len(self.days), self.inputs.data_capture)

    def valid_daily(self, key: Key, name: str, reduce: str = "last") -> dict[date, float]:
        """Valid 1-day values by local day (several series of one name, e.g. per pollutant: max)."""
        out: dict[date, float] = {}
        for r in self.series.get((*key, name, "1d"), []):
            if r.valid:
                day = self.period.day_of(r.start_ns)
                out[day] = max(out[day], r.value) if reduce == "max" and day in out else r.value
        return out

    # -- air ---------------------------------------------------------------------------------------------

    def air(self) -> None:
        city: dict[str, list[tuple[float, bool]]] = defaultdict(list)
        for pollutant in AIR_POLLUTANTS:
            for key in self.keys(pollutant, "1h"):
                hourly: dict[date, list[float]] = defaultdict(list)
                unit = ""
                for r in self.series[(*key, pollutant, "1h")]:
                    unit = r.unit
                    if r.valid:
                        hourly[self.period.day_of(r.start_ns)].append(to_ugm3(pollutant, r.value, r.unit))
                daily = {d: sum(v) / len(v) for d, v in sorted(hourly.items()) if len(v) >= MIN_VALID_HOURS}
                self.daily[(*key, pollutant)] = daily
                c = self.completeness(len(daily))
                value = _mean(daily.values())
                fig = Figure("EN:EN:AQ:1C", "Air pollution", pollutant, "device", key[1], value, "µg/m³",
                             "mean of the valid daily means (≥ 18 valid hourly means each)"
                             + (f"; {unit} → µg/m³ with the U4SSC factor" if unit in ("ppb", "ppm") else ""),
                             c, "missing", key[0], self.sites[key], source=f"kpi {pollutant} 1h",
                             flags=_flags(c, len(self.days)))
                if value is not None:
                    self._air_comparisons(fig, value, list(daily.values()))
                    city[pollutant].append((value, c.meets))
                self.figures.append(fig)
            self._air_sites(pollutant)
        for pollutant, values in city.items():
            used = [v for v, ok in values if ok] or [v for v, _ in values]
            value = sum(used) / len(used)
            met = sum(1 for _, ok in values if ok)
            c = Completeness(met, len(values), 1.0)
            fig = Figure("EN:EN:AQ:1C", "Air pollution", pollutant, "city", "city", value, "µg/m³",
                         "mean of the device figures that meet the data-capture rule (all devices when none does)",
                         c, "missing", source=f"device figures ({len(used)} of {len(values)} used)",
                         flags=[] if met else ["no device meets the data-capture rule: all devices used"])
            fig.extra["devices_meeting_rule"] = met
            self._air_comparisons(fig, value, [])
            self.figures.append(fig)

    def _air_sites(self, pollutant: str) -> None:
        by_site: dict[str, list[Figure]] = defaultdict(list)
        for f in self.figures:
            if f.quantity == pollutant and f.scope == "device" and f.code == "EN:EN:AQ:1C" and f.value is not None:
                by_site[f.site].append(f)
        for site, figs in sorted(by_site.items()):
            if len(figs) < 2:
                continue  # a site of one device: its device row (which names the site) says it all
            values = [f.value for f in figs if f.value is not None]
            value = sum(values) / len(values)
            c = Completeness(min(f.completeness.valid_days for f in figs), len(self.days), self.inputs.data_capture)
            fig = Figure("EN:EN:AQ:1C", "Air pollution", pollutant, "site", site, value, "µg/m³",
                         "mean of the site's device figures", c, "missing", site=site,
                         source=", ".join(f.subject for f in figs), flags=_flags(c, len(self.days)))
            self._air_comparisons(fig, value, [])
            self.figures.append(fig)

    def _air_comparisons(self, fig: Figure, value: float, daily: list[float]) -> None:
        p = fig.quantity
        comps = fig.comparisons
        if (p, "annual") in who.WHO_2021:
            comps.append(Comparison("WHO 2021 AQG (annual)", who.guideline(p, "annual"), "µg/m³", value,
                                    value > who.guideline(p, "annual")))
            fig.extra["who_level_attained"] = who.attained_level(value, p, "annual") or "above IT-1"
        if p in EU_2008_ANNUAL:
            comps.append(Comparison("EU 2008/50/EC limit (annual)", EU_2008_ANNUAL[p], "µg/m³", value,
                                    value > EU_2008_ANNUAL[p]))
        if p in EU_2030_ANNUAL:
            comps.append(Comparison("EU 2024/2881 limit for 2030 (annual)", EU_2030_ANNUAL[p], "µg/m³", value,
                                    value > EU_2030_ANNUAL[p]))
        if daily and (p, "24h") in who.WHO_2021 and p != "o3":  # O3's daily value is the max 8-h mean
            fig.extra["days_above_who_24h"] = who.exceedance_days(daily, p)
            fig.extra["who_24h_guideline"] = who.guideline(p, "24h")
        for label, table in (("eu_2008", EU_2008_DAILY), ("eu_2030", EU_2030_DAILY)):
            if daily and p in table:
                limit, allowed = table[p]
                fig.extra[f"days_above_{label}_daily"] = sum(1 for v in daily if v > limit)
                fig.extra[f"{label}_daily_limit"] = [limit, allowed]
        if p == "o3":
            fig.flags.append("WHO's annual O3 value is a peak-season mean of daily 8-h maxima: not compared")
        exceeded = {c.against: c.exceeded for c in comps}
        if not comps:
            fig.status = "info"
        elif any(exceeded.get(k) for k in exceeded if k.startswith("EU 2008")):  # a limit in force today
            fig.status = "poor"
        elif any(exceeded.values()):
            fig.status = "fair"
        else:
            fig.status = "good"

    # -- noise -------------------------------------------------------------------------------------------

    def noise(self) -> None:
        site_levels: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
        for key in self.keys("lden", "1d"):
            lden_days = self.valid_daily(key, "lden")
            lnight_days = self.valid_daily(key, "lnight")
            self.daily[(*key, "lden")] = lden_days
            self.daily[(*key, "lnight")] = lnight_days
            c = self.completeness(len(lden_days))
            lden = laeq(list(lden_days.values())) if lden_days else None
            lnight = laeq(list(lnight_days.values())) if lnight_days else None
            fig = Figure("EN:EN:EQ:2A", "Noise exposure (Lden)", "lden", "device", key[1], lden, "dB(A)",
                         "energetic mean of the valid daily Lden", c, "missing", key[0], self.sites[key],
                         source="kpi lden 1d, lnight 1d", flags=_flags(c, len(self.days)))
            fig.extra.update(lnight=lnight, days_lden_above_55=sum(1 for v in lden_days.values()
                                                                  if v >= END_LDEN_THRESHOLD),
                             days_lnight_above_50=sum(1 for v in lnight_days.values() if v >= END_LNIGHT_THRESHOLD))
            if lden is not None:
                fig.comparisons.append(Comparison("END threshold Lden", END_LDEN_THRESHOLD, "dB(A)", lden,
                                                  lden >= END_LDEN_THRESHOLD))
                if lnight is not None:
                    fig.comparisons.append(Comparison("END threshold Lnight", END_LNIGHT_THRESHOLD, "dB(A)", lnight,
                                                      lnight >= END_LNIGHT_THRESHOLD))
                fig.status = "poor" if any(x.exceeded for x in fig.comparisons) else "good"
                site_levels[fig.site].append((lden, lnight))
            self.figures.append(fig)
        if not site_levels:
            return
        inh, pop = self.inputs.inhabitants, self.inputs.population
        exposed_sites = sorted(site for site, levels in site_levels.items()
                               if any(ld >= END_LDEN_THRESHOLD or (ln is not None and ln >= END_LNIGHT_THRESHOLD)
                                      for ld, ln in levels))
        value = None
        flags = []
        missing = [s for s in site_levels if s not in inh]
        if pop is None or missing:
            flags.append("needs [report] population and inhabitants for sites: " + ", ".join(sorted(site_levels)))
        elif sum(inh[s] for s in site_levels) > pop:
            flags.append(f"inhabitants of the measured sites ({sum(inh[s] for s in site_levels)}) exceed the "
                         f"population ({pop}): check [report] inhabitants and population")
        else:
            value = 100.0 * sum(inh[s] for s in exposed_sites) / pop
        devices = [f for f in self.figures if f.code == "EN:EN:EQ:2A" and f.scope == "device"]
        c = Completeness(sum(1 for f in devices if f.completeness.meets), len(devices), 1.0)
        fig = Figure("EN:EN:EQ:2A", "Noise exposure", "exposed_share", "city", "city", value, "%",
                     "inhabitants of sites with period Lden ≥ 55 dB or Lnight ≥ 50 dB / population × 100", c,
                     "info" if value is None else ("poor" if exposed_sites else "good"),
                     inputs={"population": pop or "not given",
                             **{f"inhabitants {s}": inh.get(s, "not given") for s in sorted(site_levels)}},
                     source="device Lden/Lnight figures", flags=flags)
        fig.extra["exposed_sites"] = exposed_sites
        self.figures.append(fig)

    # -- water, energy ---------------------------------------------------------------------------------------

    def meters(self, name: str, code: str, indicator: str, unit: str, per_capita_unit: str, scale: float,
               formula: str) -> None:
        means: list[float] = []
        for key in self.keys(name, "1d"):  # per meter (the kit-wide series are per-capita ones)
            days = self.valid_daily(key, name)
            self.daily[(*key, name)] = days
            c = self.completeness(len(days))
            mean = _mean(days.values())
            fig = Figure(code, indicator, name, "device", key[1], mean, f"{unit}/day",
                         "mean of the valid daily consumptions", c, "info", key[0], self.sites[key],
                         source=f"kpi {name} 1d", flags=_flags(c, len(self.days))[:1])
            fig.extra["total"] = sum(days.values())
            self.figures.append(fig)
            if mean is not None:
                means.append(mean)
        if not means:
            return
        pop = self.inputs.population
        value = None if pop is None else sum(means) * scale / pop
        devices = [f for f in self.figures if f.code == code and f.scope == "device"]
        c = Completeness(sum(1 for f in devices if f.completeness.meets), len(devices), 1.0)
        self.figures.append(Figure(code, indicator, f"{name}_per_capita", "city", "city", value, per_capita_unit,
                                   formula, c, "info", inputs={"population": pop or "not given"},
                                   source=f"device figures of {name}",
                                   flags=[] if pop else ["needs [report] population"]))

    def night_flow(self) -> None:
        for key in self.keys("minimum_night_flow", "1d"):
            days = self.valid_daily(key, "minimum_night_flow")
            self.daily[(*key, "minimum_night_flow")] = days
            c = self.completeness(len(days))
            fig = Figure("EC:I:WS:3C", "Minimum night flow (leak indicator)", "minimum_night_flow", "device", key[1],
                         _mean(days.values()), "m³/h", "mean of the valid daily minimum night flows", c, "info",
                         key[0], self.sites[key], source="kpi minimum_night_flow 1d",
                         flags=["an indicator of losses, not the U4SSC loss percentage (needs supplied and "
                                "billed volumes)", *_flags(c, len(self.days))[:1]])
            fig.extra["lowest"] = min(days.values()) if days else None
            self.figures.append(fig)

    # -- traffic -----------------------------------------------------------------------------------------------

    def traffic(self) -> dict[Key, list[float | None]]:
        by_hour: dict[Key, list[float | None]] = {}
        monitored_km = 0.0
        counters = []
        for key in self.keys("traffic_volume", "1d"):
            days = self.valid_daily(key, "traffic_volume")
            self.daily[(*key, "traffic_volume")] = days
            c = self.completeness(len(days))
            counters.append(key[1])
            km = self.inputs.street_km.get(key[1])
            if c.meets and km is not None:
                monitored_km += km
            fig = Figure("EC:ICT:T:2C", "Traffic monitoring", "traffic_volume", "device", key[1],
                         _mean(days.values()), "veh/day", "mean of the valid daily volumes", c,
                         "good" if c.meets else "poor", key[0], self.sites[key], source="kpi traffic_volume 1d",
                         inputs={"street km covered": km if km is not None else "not given"},
                         flags=_flags(c, len(self.days))[:1])
            fig.extra["monitored"] = c.meets
            self.figures.append(fig)
            sums: list[list[float]] = [[] for _ in range(24)]
            for r in self.series.get((*key, "traffic_volume", "1h"), []):
                if r.valid:
                    hour = datetime.fromtimestamp(r.start_ns / S, ZoneInfo(self.period.timezone)).hour
                    sums[hour].append(r.value)
            by_hour[key] = [sum(v) / len(v) if v else None for v in sums]
        if counters:
            total = self.inputs.street_km_total
            known = total is not None and all(c in self.inputs.street_km for c in counters)
            value = 100.0 * monitored_km / total if known and total else None
            self.figures.append(Figure(
                "EC:ICT:T:2C", "Traffic monitoring", "monitored_share", "city", "city", value, "%",
                "km of major streets whose counter meets the data-capture rule / km of major streets × 100",
                Completeness(len(counters), len(counters), 1.0), "info",
                inputs={"km of major streets": total or "not given",
                        **{f"km covered by {c}": self.inputs.street_km.get(c, "not given") for c in counters}},
                source="device traffic figures",
                flags=[] if known else ["needs [report] street_km_total and street_km for each counter"]))
        return by_hour

    def aqi_calendar(self) -> None:
        for key in self.keys("us_aqi", "1d"):
            self.daily[(*key, "us_aqi")] = self.valid_daily(key, "us_aqi", reduce="max")
        for key in self.keys("eaqi", "1h"):
            days: dict[date, float] = {}
            for r in self.series[(*key, "eaqi", "1h")]:
                if r.valid:
                    d = self.period.day_of(r.start_ns)
                    days[d] = max(days.get(d, 0.0), r.value)
            self.daily[(*key, "eaqi")] = days


def compute(rows: Sequence[KpiRow], period: Period, inputs: ReportInputs) -> ReportData:
    """Every figure of the report for the period, with the daily series the charts draw."""
    b = _Builder(rows, period, inputs)
    b.air()
    b.noise()
    b.meters("water_consumption", "EN:EN:WS:2C", "Water consumption", "m³", "l/capita/day", 1000.0,
             "Σ over meters of the mean daily consumption (m³) × 1000 / population")
    b.night_flow()
    b.meters("energy_consumption", "EN:E:E:2C", "Electricity consumption", "kWh", "kWh/capita/year", 365.0,
             "Σ over meters of the mean daily consumption (kWh) × 365 / population")
    hour_of_day = b.traffic()
    b.aqi_calendar()
    for f in b.figures:
        if f.value is not None and not math.isfinite(f.value):
            f.value = None
        if f.code in INDICATORS and not f.indicator:
            f.indicator = INDICATORS[f.code].name
    devices = sorted({(g, d, site) for (g, d), site in b.sites.items()})
    return ReportData(period, b.figures, b.daily, hour_of_day, sorted({g for g, _, _ in devices}), devices)
