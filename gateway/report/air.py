"""EN:EN:AQ:1C air pollution per pollutant: device, site and city figures, with WHO and EU comparisons."""

from __future__ import annotations

from collections import defaultdict
from datetime import date

from aggregators import who
from aggregators.u4ssc import to_ugm3
from gateway.report.limits import EU_2008_ANNUAL, EU_2008_DAILY, EU_2030_ANNUAL, EU_2030_DAILY
from gateway.report.model import Comparison, Completeness, Figure, Rows, mean_of, period_flags

__all__ = ["AIR_POLLUTANTS", "MIN_VALID_HOURS", "air"]

AIR_POLLUTANTS = ("pm2_5", "pm10", "no2", "so2", "o3")
MIN_VALID_HOURS = 18  # of a day's hourly means, for a valid daily mean (75 %)


def air(rows: Rows) -> None:
    """Device figures from the hourly series, then site and city figures."""
    city: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for pollutant in AIR_POLLUTANTS:
        for key in rows.keys(pollutant, "1h"):
            hourly: dict[date, list[float]] = defaultdict(list)
            unit = ""
            for r in rows.series[(*key, pollutant, "1h")]:
                unit = r.unit
                if r.valid:
                    hourly[rows.period.day_of(r.start_ns)].append(to_ugm3(pollutant, r.value, r.unit))
            daily = {d: sum(v) / len(v) for d, v in sorted(hourly.items()) if len(v) >= MIN_VALID_HOURS}
            rows.daily[(*key, pollutant)] = daily
            c = rows.completeness(len(daily))
            value = mean_of(daily.values())
            fig = Figure("EN:EN:AQ:1C", "Air pollution", pollutant, "device", key[1], value, "µg/m³",
                         "mean of the valid daily means (≥ 18 valid hourly means each)"
                         + (f"; {unit} → µg/m³ with the U4SSC factor" if unit in ("ppb", "ppm") else ""),
                         c, "missing", key[0], rows.sites[key], source=f"kpi {pollutant} 1h",
                         flags=period_flags(c, len(rows.days)))
            if value is not None:
                _air_comparisons(rows, fig, value, list(daily.values()))
                city[pollutant].append((value, c.meets))
            rows.figures.append(fig)
        _air_sites(rows, pollutant)
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
        _air_comparisons(rows, fig, value, [])
        rows.figures.append(fig)

def _air_sites(rows: Rows, pollutant: str) -> None:
    by_site: dict[str, list[Figure]] = defaultdict(list)
    for f in rows.figures:
        if f.quantity == pollutant and f.scope == "device" and f.code == "EN:EN:AQ:1C" and f.value is not None:
            by_site[f.site].append(f)
    for site, figs in sorted(by_site.items()):
        if len(figs) < 2:
            continue  # a site of one device: its device row (which names the site) says it all
        values = [f.value for f in figs if f.value is not None]
        value = sum(values) / len(values)
        c = Completeness(min(f.completeness.valid_days for f in figs), len(rows.days), rows.inputs.data_capture)
        fig = Figure("EN:EN:AQ:1C", "Air pollution", pollutant, "site", site, value, "µg/m³",
                     "mean of the site's device figures", c, "missing", site=site,
                     source=", ".join(f.subject for f in figs), flags=period_flags(c, len(rows.days)))
        _air_comparisons(rows, fig, value, [])
        rows.figures.append(fig)

def _air_comparisons(rows: Rows, fig: Figure, value: float, daily: list[float]) -> None:
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

