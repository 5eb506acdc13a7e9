"""The report as JSON and CSV for machines and as one self-contained HTML page for people."""

from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Any

from aggregators.u4ssc import INDICATORS, PPB_TO_UGM3
from aggregators.who import guideline
from gateway.report import charts
from gateway.report.figures import AIR_POLLUTANTS, MIN_VALID_HOURS, Figure, ReportData
from gateway.report.limits import EU_2008_DAILY, EU_2030_ANNUAL, EU_2030_DAILY

__all__ = ["CSV_COLUMNS", "to_csv", "to_html", "to_json"]

CSV_COLUMNS = ("code", "indicator", "quantity", "scope", "subject", "gateway", "site", "value", "unit",
               "valid_days", "days", "completeness", "meets_rule", "status", "comparisons", "flags")
STATUS_COLOURS = {"good": "#2e7d32", "fair": "#f9a825", "poor": "#c62828", "info": "#1565c0", "missing": "#757575"}
STATUS_WORDS = {"good": "meets guideline", "fair": "above a guideline, within the limit in force",
                "poor": "above a limit or threshold",
                "info": "information", "missing": "no value"}
POLLUTANT_NAMES = {"pm2_5": "PM2.5", "pm10": "PM10", "no2": "NO₂", "so2": "SO₂", "o3": "O₃"}


def _figure_dict(f: Figure) -> dict[str, Any]:
    d = asdict(f)
    c = f.completeness
    d["completeness"] = {"valid_days": c.valid_days, "days": c.days, "ratio": c.ratio, "required": c.required,
                         "meets": c.meets}
    return d


def to_json(data: ReportData, generated: datetime, source: str) -> dict[str, Any]:
    """The report as a JSON document (schemas/report.schema.json)."""
    p = data.period
    return {
        "period": {"from": p.start.isoformat(), "to": p.end.isoformat(), "timezone": p.timezone,
                   "days": len(p.days)},
        "generated": generated.astimezone(UTC).isoformat(timespec="seconds"),
        "source": source,
        "gateways": data.gateways,
        "devices": [{"gateway": g, "device_id": d, "site": s} for g, d, s in data.devices],
        "figures": [_figure_dict(f) for f in data.figures],
        "daily": [{"gateway": g, "device_id": d, "series": n,
                   "values": {k.isoformat(): v for k, v in sorted(vs.items())}}
                  for (g, d, n), vs in sorted(data.daily.items())],
    }


def _comparisons_text(f: Figure) -> str:
    return "; ".join(f"{c.against} {c.limit:g} {c.unit}: {'exceeded' if c.exceeded else 'met'}"
                     for c in f.comparisons)


def to_csv(data: ReportData) -> str:
    """One row per figure."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for f in data.figures:
        c = f.completeness
        w.writerow([f.code, f.indicator, f.quantity, f.scope, f.subject, f.gateway, f.site,
                    "" if f.value is None else repr(f.value), f.unit, c.valid_days, c.days, f"{c.ratio:.4f}",
                    str(c.meets).lower(), f.status, _comparisons_text(f), " | ".join(f.flags)])
    return out.getvalue()


# -- HTML ------------------------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;width:100%;font-size:.85em}th,td{border-bottom:1px solid #e0e0e0;padding:.3em .4em;
text-align:left;vertical-align:top}th{background:#f5f5f5}td:last-child{width:38%}td.num{text-align:right;font-variant-numeric:tabular-nums}
.dot{display:inline-block;width:.9em;height:.9em;border-radius:50%;vertical-align:middle;margin-right:.3em}
.flag{color:#b71c1c;font-size:.85em}.scope-city td{font-weight:600}figure{margin:1em 0}svg{max-width:100%;height:auto}
.annex li{margin:.3em 0}.muted{color:#666}
"""


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    return f"{v:,.1f} {unit}".strip() if abs(v) < 1e5 else f"{v:,.0f} {unit}".strip()


SHORT_PERIOD_FLAG = "period shorter than a year: indicative against annual values"
AREA_ORDER = ("EN:EN:AQ:1C", "EN:EN:EQ:2A", "EN:EN:WS:2C", "EC:I:WS:3C", "EN:E:E:2C", "EC:ICT:T:2C")
EXTRA_LABELS = {"who_level_attained": "WHO level attained", "days_above_who_24h": "days above WHO 24-h AQG",
                "days_above_eu_2008_daily": "days above EU daily limit",
                "days_above_eu_2030_daily": "days above EU 2030 daily limit",
                "days_lden_above_55": "days Lden ≥ 55", "days_lnight_above_50": "days Lnight ≥ 50"}


def _row(f: Figure) -> str:
    c = f.completeness
    dot = f'<span class="dot" style="background:{STATUS_COLOURS[f.status]}" title="{STATUS_WORDS[f.status]}"></span>'
    comps = " · ".join(f'<span title="{html.escape(x.against)}">{html.escape(x.against.split(" (")[0])} '
                       f'{x.limit:g}&nbsp;{"✗" if x.exceeded else "✓"}</span>' for x in f.comparisons)
    extra = "; ".join(f"{label} {f.extra[k]}" for k, label in EXTRA_LABELS.items() if k in f.extra)
    flags = "".join(f'<div class="flag">⚑ {html.escape(x)}</div>' for x in f.flags if x != SHORT_PERIOD_FLAG)
    inputs = "".join(f'<div class="muted">input: {html.escape(str(k))} = {html.escape(str(v))}</div>'
                     for k, v in f.inputs.items())
    name = POLLUTANT_NAMES.get(f.quantity, f.quantity.replace("_", " "))
    subject = "city-wide" if f.scope == "city" else f"{f.scope} {html.escape(f.subject)}"
    return (f'<tr class="scope-{f.scope}" data-code="{f.code}" data-scope="{f.scope}" data-subject="'
            f'{html.escape(f.subject)}" data-quantity="{f.quantity}" data-status="{f.status}">'
            f"<td>{dot}{STATUS_WORDS[f.status]}</td><td>{html.escape(f.indicator)}<br>"
            f'<span class="muted">{f.code}</span></td><td>{html.escape(name)}</td><td>{subject}</td>'
            f'<td class="num">{_fmt(f.value, f.unit)}</td>'
            f'<td class="num">{c.valid_days}/{c.days} ({c.ratio:.0%}){" ✓" if c.meets else " ✗"}</td>'
            f"<td>{comps}{'<br>' if comps and extra else ''}{html.escape(extra)}{inputs}{flags}</td></tr>")


def _summary(data: ReportData) -> str:
    order = {"city": 0, "site": 1, "device": 2}
    rows = sorted(data.figures, key=lambda f: (AREA_ORDER.index(f.code) if f.code in AREA_ORDER else 99,
                                               f.quantity, order[f.scope], f.subject))
    note = (f'<p class="flag">⚑ {SHORT_PERIOD_FLAG} (every figure)</p>'
            if any(SHORT_PERIOD_FLAG in f.flags for f in data.figures) else "")
    return (note + "<table id=\"summary\"><thead><tr><th>status</th><th>indicator</th><th>of</th><th>for</th>"
            "<th>value</th><th>valid days</th><th>compared with (✓ met, ✗ exceeded), inputs, flags</th></tr>"
            "</thead><tbody>" + "".join(_row(f) for f in rows) + "</tbody></table>")


def _chart(name: str, svg: str, caption: str) -> str:
    return f'<figure data-chart="{name}">{svg}<figcaption class="muted">{html.escape(caption)}</figcaption></figure>'


def _months(values: dict[date, float]) -> tuple[list[str], list[float]]:
    by_month: dict[str, list[float]] = defaultdict(list)
    for d, v in sorted(values.items()):
        by_month[d.strftime("%Y-%m")].append(v)
    return list(by_month), [sum(v) / len(v) for v in by_month.values()]


def _air_charts(data: ReportData) -> list[str]:
    out = []
    p = data.period
    long_period = len(p.days) > 92
    for pollutant in AIR_POLLUTANTS:
        series = {f"{d}": vs for (g, d, n), vs in data.daily.items() if n == pollutant and vs}
        if not series:
            continue
        name = POLLUTANT_NAMES[pollutant]
        if long_period:  # monthly means against the annual values
            refs = [("WHO AQG annual", guideline(pollutant, "annual"), "#2e7d32")] if pollutant != "so2" else []
            if pollutant in EU_2030_ANNUAL:
                refs.append(("EU 2030 annual", EU_2030_ANNUAL[pollutant], "#c62828"))
            for device, vs in sorted(series.items()):
                labels, means = _months(vs)
                out.append(_chart(f"air-{pollutant}-{device}", charts.bars(
                    f"{name} monthly means, {device}", "µg/m³", labels, means, refs),
                    "monthly mean of the valid daily means, with the WHO and EU annual values"))
            continue
        refs = [("WHO AQG 24 h", guideline(pollutant, "24h"), "#2e7d32")] if pollutant != "o3" else []
        if pollutant in EU_2030_DAILY:
            refs.append(("EU 2030 daily", EU_2030_DAILY[pollutant][0], "#c62828"))
        elif pollutant in EU_2008_DAILY:
            refs.append(("EU daily", EU_2008_DAILY[pollutant][0], "#c62828"))
        out.append(_chart(f"air-{pollutant}", charts.lines(f"{name} daily means", "µg/m³", series, refs),
                          "daily means (≥ 18 valid hours) with the WHO 24-hour guideline and the EU daily limit"))
    for kind, bands, label in (("us_aqi", charts.AQI_BANDS, "US AQI (daily)"),
                               ("eaqi", charts.EAQI_BANDS, "European AQI (daily worst hour)")):
        for (_, device, n), vs in sorted(data.daily.items()):
            if n == kind and vs:
                out.append(_chart(f"calendar-{kind}-{device}", charts.calendar(
                    f"{label}, {device}", vs, p.start, p.end, bands), f"{label} in the official colours"))
    return out


def _other_charts(data: ReportData) -> dict[str, list[str]]:
    def series(name: str) -> dict[str, dict[date, float]]:
        return {d: vs for (_, d, n), vs in data.daily.items() if n == name and vs}

    out: dict[str, list[str]] = defaultdict(list)
    if lden := series("lden"):
        out["noise"].append(_chart("noise-lden", charts.lines("Lden per day", "dB(A)", lden, [
            ("END Lden 55", 55.0, "#c62828")]), "daily Lden per device with the END threshold"))
    if lnight := series("lnight"):
        out["noise"].append(_chart("noise-lnight", charts.lines("Lnight per day", "dB(A)", lnight, [
            ("END Lnight 50", 50.0, "#c62828")]), "daily Lnight per device with the END threshold"))
    days = data.period.days
    labels = [d.strftime("%d %b") for d in days]
    mnf = series("minimum_night_flow")
    for device, vs in sorted(series("water_consumption").items()):
        night = mnf.get(device, {})
        out["water"].append(_chart(f"water-{device}", charts.bars(
            f"Water per day, {device}", "m³", labels, [vs.get(d, 0.0) for d in days],
            overlay=("minimum night flow", "m³/h", [night.get(d) for d in days])),
            "daily consumption (bars) and minimum night flow (line)"))
    for device, vs in sorted(series("energy_consumption").items()):
        out["energy"].append(_chart(f"energy-{device}", charts.bars(
            f"Electricity per day, {device}", "kWh", labels, [vs.get(d, 0.0) for d in days]),
            "daily consumption"))
    if data.hour_of_day:
        out["traffic"].append(_chart("traffic-hour-of-day", charts.hour_of_day(
            "Traffic volume by hour of day", {d: v for (_, d), v in data.hour_of_day.items()}),
            "mean vehicles per hour over the valid hours of the period"))
    return out


def annex(data: ReportData) -> list[tuple[str, str]]:
    """The methodology annex: (heading, text) per item, as a verifier asks for them."""
    factors = ", ".join(f"{POLLUTANT_NAMES[p]} ×{k}" for p, k in PPB_TO_UGM3.items())
    items = [
        ("Period and days", f"Local calendar days {data.period.start} to {data.period.end} (exclusive) in "
                            f"{data.period.timezone}: {len(data.period.days)} days."),
        ("Completeness rule", "valid days / days of the period; a figure meets the rule at ≥ "
                              f"{data.figures[0].completeness.required:.0%} (EU data capture for annual means, "
                              "2008/50/EC Annex I). Figures below it are shown and flagged, never hidden."
         if data.figures else "no figures"),
        ("Air pollution (EN:EN:AQ:1C)", "Source series: kpi <pollutant> 1h (the gateway's hourly means; valid when "
                                        "45 of 60 minutes hold data). A daily mean needs "
                                        f"{MIN_VALID_HOURS} valid hours; the period value is the mean of the valid "
                                        "daily means. City-wide: mean of the device figures that meet the rule. "
                                        f"Gases in ppb/ppm are converted with the U4SSC factors ({factors}); "
                                        "docs/kpis.md A9: concentrations, not an index."),
        ("Comparisons", "WHO 2021 AQG and interim targets (annual; days above the 24-hour AQG, 99th-percentile "
                        "rule A7 in docs/kpis.md); EU Directive 2008/50/EC annual and daily limits; Directive (EU) "
                        "2024/2881 limits for 2030. A period shorter than a year is indicative against annual "
                        "values."),
        ("Noise (EN:EN:EQ:2A)", "Source series: kpi lden 1d and lnight 1d (Directive 2002/49/EC Annex I, the "
                                "gateway's day/evening/night hours). Period level: energetic mean of the valid "
                                "daily levels. Exposed: a site whose period Lden ≥ 55 dB or Lnight ≥ 50 dB (END "
                                "thresholds, A14); share = its inhabitants ([report] inhabitants) / population."),
        ("Water (EN:EN:WS:2C, EC:I:WS:3C)", "Source series: kpi water_consumption 1d (meter deltas) "
                                            "and minimum_night_flow 1d. l/capita/day = Σ over meters of the mean "
                                            "valid daily m³ × 1000 / population. The minimum night flow is a loss "
                                            "indicator, not the U4SSC loss percentage."),
        ("Electricity (EN:E:E:2C)", "Source series: kpi energy_consumption 1d. kWh/capita/year = Σ over meters "
                                    "of the mean valid daily kWh × 365 / population."),
        ("Traffic monitoring (EC:ICT:T:2C)", "Source series: kpi traffic_volume 1d and 1h. A street counts as "
                                             "monitored when its counter meets the completeness rule; share = km "
                                             "of monitored streets / km of major streets ([report])."),
        ("Non-sensor inputs", "population, inhabitants per site, street lengths: from the [report] table of the "
                              "config, shown beside each figure as inputs."),
    ]
    items += [(f"{code} in the U4SSC map", f"{ind.formula}; feeds: "
               + ", ".join(f"{fd.quantity} {fd.statistic}" for fd in ind.feeds))
              for code, ind in INDICATORS.items() if any(f.code == code for f in data.figures)]
    return items


def to_html(data: ReportData, generated: datetime, source: str, title: str) -> str:
    """One self-contained page: summary table, charts per area, methodology annex."""
    p = data.period
    other = _other_charts(data)
    sections = [("Air quality", _air_charts(data)), ("Noise", other["noise"]), ("Water", other["water"]),
                ("Energy", other["energy"]), ("Traffic", other["traffic"])]
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="muted">U4SSC indicators for {p.start} – {p.end} (exclusive), {len(p.days)} days, '
            f"{html.escape(p.timezone)}. Gateways: {html.escape(', '.join(data.gateways) or 'none')}. Source: "
            f"{html.escape(source)}. Generated {generated.astimezone(UTC).isoformat(timespec='seconds')}.</p>",
            "<h2>Summary</h2>", _summary(data)]
    for heading, items in sections:
        if items:
            body.append(f'<h2 data-area="{heading.lower()}">{heading}</h2>' + "".join(items))
    body.append('<h2 id="annex">Methodology annex</h2><ol class="annex">'
                + "".join(f"<li><b>{html.escape(h)}</b>: {html.escape(t)}</li>" for h, t in annex(data)) + "</ol>")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>")
