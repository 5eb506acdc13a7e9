"""Noise, water, electricity and traffic figures (EN:EN:EQ:2A, EN:EN:WS:2C, EC:I:WS:3C, EN:E:E:2C, EC:ICT:T:2C)
and the daily AQI calendars."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from zoneinfo import ZoneInfo

from aggregators.noise import END_LDEN_THRESHOLD, END_LNIGHT_THRESHOLD, laeq
from gateway.report.model import Comparison, Completeness, Figure, Key, Rows, mean_of, period_flags

__all__ = ["aqi_calendar", "meters", "night_flow", "noise", "traffic"]

S = 1_000_000_000


def noise(rows: Rows) -> None:
    site_levels: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for key in rows.keys("lden", "1d"):
        lden_days = rows.valid_daily(key, "lden")
        lnight_days = rows.valid_daily(key, "lnight")
        rows.daily[(*key, "lden")] = lden_days
        rows.daily[(*key, "lnight")] = lnight_days
        c = rows.completeness(len(lden_days))
        lden = laeq(list(lden_days.values())) if lden_days else None
        lnight = laeq(list(lnight_days.values())) if lnight_days else None
        fig = Figure("EN:EN:EQ:2A", "Noise exposure (Lden)", "lden", "device", key[1], lden, "dB(A)",
                     "energetic mean of the valid daily Lden", c, "missing", key[0], rows.sites[key],
                     source="kpi lden 1d, lnight 1d", flags=period_flags(c, len(rows.days)))
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
        rows.figures.append(fig)
    if not site_levels:
        return
    inh, pop = rows.inputs.inhabitants, rows.inputs.population
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
    devices = [f for f in rows.figures if f.code == "EN:EN:EQ:2A" and f.scope == "device"]
    c = Completeness(sum(1 for f in devices if f.completeness.meets), len(devices), 1.0)
    fig = Figure("EN:EN:EQ:2A", "Noise exposure", "exposed_share", "city", "city", value, "%",
                 "inhabitants of sites with period Lden ≥ 55 dB or Lnight ≥ 50 dB / population × 100", c,
                 "info" if value is None else ("poor" if exposed_sites else "good"),
                 inputs={"population": pop or "not given",
                         **{f"inhabitants {s}": inh.get(s, "not given") for s in sorted(site_levels)}},
                 source="device Lden/Lnight figures", flags=flags)
    fig.extra["exposed_sites"] = exposed_sites
    rows.figures.append(fig)


def meters(rows: Rows, name: str, code: str, indicator: str, unit: str, per_capita_unit: str, scale: float,
           formula: str) -> None:
    means: list[float] = []
    for key in rows.keys(name, "1d"):  # per meter (the kit-wide series are per-capita ones)
        days = rows.valid_daily(key, name)
        rows.daily[(*key, name)] = days
        c = rows.completeness(len(days))
        mean = mean_of(days.values())
        fig = Figure(code, indicator, name, "device", key[1], mean, f"{unit}/day",
                     "mean of the valid daily consumptions", c, "info", key[0], rows.sites[key],
                     source=f"kpi {name} 1d", flags=period_flags(c, len(rows.days))[:1])
        fig.extra["total"] = sum(days.values())
        rows.figures.append(fig)
        if mean is not None:
            means.append(mean)
    if not means:
        return
    pop = rows.inputs.population
    value = None if pop is None else sum(means) * scale / pop
    devices = [f for f in rows.figures if f.code == code and f.scope == "device"]
    c = Completeness(sum(1 for f in devices if f.completeness.meets), len(devices), 1.0)
    rows.figures.append(Figure(code, indicator, f"{name}_per_capita", "city", "city", value, per_capita_unit,
                               formula, c, "info", inputs={"population": pop or "not given"},
                               source=f"device figures of {name}",
                               flags=[] if pop else ["needs [report] population"]))

def night_flow(rows: Rows) -> None:
    for key in rows.keys("minimum_night_flow", "1d"):
        days = rows.valid_daily(key, "minimum_night_flow")
        rows.daily[(*key, "minimum_night_flow")] = days
        c = rows.completeness(len(days))
        fig = Figure("EC:I:WS:3C", "Minimum night flow (leak indicator)", "minimum_night_flow", "device", key[1],
                     mean_of(days.values()), "m³/h", "mean of the valid daily minimum night flows", c, "info",
                     key[0], rows.sites[key], source="kpi minimum_night_flow 1d",
                     flags=["an indicator of losses, not the U4SSC loss percentage (needs supplied and "
                            "billed volumes)", *period_flags(c, len(rows.days))[:1]])
        fig.extra["lowest"] = min(days.values()) if days else None
        rows.figures.append(fig)

# -- traffic -----------------------------------------------------------------------------------------------

def traffic(rows: Rows) -> dict[Key, list[float | None]]:
    by_hour: dict[Key, list[float | None]] = {}
    monitored_km = 0.0
    counters = []
    for key in rows.keys("traffic_volume", "1d"):
        days = rows.valid_daily(key, "traffic_volume")
        rows.daily[(*key, "traffic_volume")] = days
        c = rows.completeness(len(days))
        counters.append(key[1])
        km = rows.inputs.street_km.get(key[1])
        if c.meets and km is not None:
            monitored_km += km
        fig = Figure("EC:ICT:T:2C", "Traffic monitoring", "traffic_volume", "device", key[1],
                     mean_of(days.values()), "veh/day", "mean of the valid daily volumes", c,
                     "good" if c.meets else "poor", key[0], rows.sites[key], source="kpi traffic_volume 1d",
                     inputs={"street km covered": km if km is not None else "not given"},
                     flags=period_flags(c, len(rows.days))[:1])
        fig.extra["monitored"] = c.meets
        rows.figures.append(fig)
        sums: list[list[float]] = [[] for _ in range(24)]
        for r in rows.series.get((*key, "traffic_volume", "1h"), []):
            if r.valid:
                hour = datetime.fromtimestamp(r.start_ns / S, ZoneInfo(rows.period.timezone)).hour
                sums[hour].append(r.value)
        by_hour[key] = [sum(v) / len(v) if v else None for v in sums]
    if counters:
        total = rows.inputs.street_km_total
        known = total is not None and all(c in rows.inputs.street_km for c in counters)
        value = 100.0 * monitored_km / total if known and total else None
        rows.figures.append(Figure(
            "EC:ICT:T:2C", "Traffic monitoring", "monitored_share", "city", "city", value, "%",
            "km of major streets whose counter meets the data-capture rule / km of major streets × 100",
            Completeness(len(counters), len(counters), 1.0), "info",
            inputs={"km of major streets": total or "not given",
                    **{f"km covered by {c}": rows.inputs.street_km.get(c, "not given") for c in counters}},
            source="device traffic figures",
            flags=[] if known else ["needs [report] street_km_total and street_km for each counter"]))
    return by_hour

def aqi_calendar(rows: Rows) -> None:
    for key in rows.keys("us_aqi", "1d"):
        rows.daily[(*key, "us_aqi")] = rows.valid_daily(key, "us_aqi", reduce="max")
    for key in rows.keys("eaqi", "1h"):
        days: dict[date, float] = {}
        for r in rows.series[(*key, "eaqi", "1h")]:
            if r.valid:
                d = rows.period.day_of(r.start_ns)
                days[d] = max(days.get(d, 0.0), r.value)
        rows.daily[(*key, "eaqi")] = days


