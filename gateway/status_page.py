"""The status page's HTML: one card per device and per sink, readable on a phone, no scripts, no external files.

Everything shown comes from `Gateway.status()` (the same data as /status.json) plus the server-drawn charts.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from aggregators.aqi import BEYOND, CATEGORIES

__all__ = ["explain_error", "index_band", "render_page"]

# EEA European Air Quality Index, levels 1..6 (2017 tables use the first five).
EAQI_COLOURS = ("#50F0E6", "#50CCAA", "#F0E641", "#FF5050", "#960032", "#7D2181")
EAQI_NAMES = ("Good", "Fair", "Moderate", "Poor", "Very poor", "Extremely poor")
# CITEAIR Common Air Quality Index bands: upper bound, name, colour.
CAQI_BANDS = ((25, "Very low", "#79BC6A"), (50, "Low", "#BBCF4C"), (75, "Medium", "#EEC20B"),
              (100, "High", "#F29305"), (math.inf, "Very high", "#E8416F"))

_HTTP = re.compile(r"HTTP (\d{3})")


def index_band(name: str, value: float) -> tuple[str, str] | None:
    """(category name, official colour) of an air-quality index value, None for other series."""
    if not math.isfinite(value):
        return None
    if name.startswith("us_aqi"):
        for _lo, hi, category, colour in CATEGORIES:
            if value <= hi:
                return category, colour
        return BEYOND, CATEGORIES[-1][3]
    if name.startswith("eaqi"):
        level = min(max(round(value), 1), len(EAQI_COLOURS))
        return EAQI_NAMES[level - 1], EAQI_COLOURS[level - 1]
    if name.startswith("caqi"):
        return next((band, colour) for hi, band, colour in CAQI_BANDS if value <= hi)
    return None


def _text_on(colour: str) -> str:
    """Black or white text, whichever reads better on the background colour (WCAG relative luminance)."""
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return "#000" if 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b) > 0.179 else "#fff"


def explain_error(reason: str) -> str:
    """A sink error in words a technician can act on; the raw text stays available beside it."""
    if not reason:
        return ""
    detail = ""
    body = reason.split(":", 1)[1] if ":" in reason else ""
    start = body.find("{")
    if start >= 0:
        try:
            parsed = orjson.loads(body[start:body.rfind("}") + 1])
            if isinstance(parsed, dict):
                detail = str(parsed.get("error") or parsed.get("message") or "")
        except orjson.JSONDecodeError:
            detail = ""
    m = _HTTP.search(reason)
    code = int(m.group(1)) if m else 0
    said = f" (the server says: {detail})" if detail else ""
    low = reason.lower()
    if code in (401, 403):
        return (f"The server refused our credentials (HTTP {code}): check username and password_env/"
                f"password_file (api = \"v1\") or token_env/token_file (api = \"v2\"){said}.")
    if code == 404 and "database not found" in (detail or low):
        return f"The database does not exist{said}: create it (CREATE DATABASE) or set create_database = true."
    if code == 404:
        return (f"Not found (HTTP 404){said}: check the url; an InfluxDB 1.x server speaks api = \"v1\", "
                "not api = \"v2\".")
    if code == 413:
        return f"The server refused the batch as too large (HTTP 413){said}: lower batch_size."
    if code in (400, 422):
        return f"The server refused a point (HTTP {code}){said}; it is isolated and kept in dead_letters."
    if code == 429 or code >= 500:
        return f"The server is overloaded or failing (HTTP {code}){said}; retrying with backoff."
    if "cannot reach" in low or "refused" in low or "not connected" in low:
        return f"Cannot reach the server: is it running and is the address right? ({reason})"
    if "timed out" in low or "timeout" in low:
        return f"The server did not answer in time: check the network and the server's load. ({reason})"
    return reason


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s ago"
    if s < 5400:
        return f"{s // 60} min ago"
    if s < 172_800:
        return f"{s // 3600} h {s % 3600 // 60} min ago"
    return f"{s // 86400} days ago"


def _num(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 10_000 else f"{value:.0f}"


def _when(ns: int, tz: ZoneInfo, today: str, seconds: bool = False) -> str:
    t = datetime.fromtimestamp(ns / 1e9, tz)
    clock = t.strftime("%H:%M:%S" if seconds else "%H:%M")
    return clock if t.strftime("%Y-%m-%d") == today else f"{t:%Y-%m-%d} {clock}"


def _name(text: str) -> str:
    """A series or quantity name that may wrap after its underscores on a narrow screen."""
    return html.escape(text).replace("_", "_<wbr>")


def _kpi_rows(kpis: Sequence[Mapping[str, Any]], tz: ZoneInfo, today: str) -> str:
    rows = []
    for k in kpis:
        band = index_band(k["name"], k["value"])
        style = f' style="background:{band[1]};color:{_text_on(band[1])}"' if band else ""
        category = f"<br><small>{html.escape(band[0])}</small>" if band else ""
        coverage = k.get("coverage")
        short = k["end"] - k["start"] < 60 * 10**9  # windows under a minute show seconds
        validity = ("valid" if k["valid"] else
                    f"incomplete{f' {coverage:.0%}' if isinstance(coverage, float) else ''}")
        rows.append(
            f'<tr data-kpi="{html.escape(k["device_id"])}/{html.escape(k["name"])}/{html.escape(k["window"])}">'
            f'<td>{_name(k["name"])} <small class="muted">{html.escape(k["window"])}</small></td>'
            f'<td class="num"{style}>{_num(k["value"])} {html.escape(k["unit"])}{category}</td>'
            f'<td class="when">{_when(k["start"], tz, today, short)}–{_when(k["end"], tz, today, short)}<br>'
            f'<span class="{"ok" if k["valid"] else "warn"}">{validity}</span></td></tr>')
    if not rows:
        return '<p class="muted">No KPI window closed yet.</p>'
    return ('<table class="kpis"><thead><tr><th>KPI</th><th>value</th><th>window · validity</th></tr></thead>'
            "<tbody>" + "".join(rows) + "</tbody></table>")


def _device_card(d: Mapping[str, Any], kpis: Sequence[Mapping[str, Any]], chart: str, tz: ZoneInfo,
                 today: str) -> str:
    state = d["state"]
    reason = f' <span class="why">{html.escape(d["reason"])}</span>' if d.get("reason") else ""
    latest = "".join(
        f'<tr><td>{_name(q)}</td><td class="num">{_num(v["value"])} {html.escape(v["unit"])}</td>'
        f'<td>{_when(v["ts"], tz, today)}</td></tr>' for q, v in d["latest"].items())
    latest_html = (f'<table class="latest"><thead><tr><th>quantity</th><th>latest</th><th>time</th></tr></thead>'
                   f'<tbody>{latest}</tbody></table>' if latest else '<p class="muted">No reading yet.</p>')
    rejection = ""
    if d.get("last_rejection"):
        rejection = (f'<p class="rejection">Last rejection ({d["rejected"]} in all): '
                     f'{html.escape(d["last_rejection"])}</p>')
    return (
        f'<section class="card device {state}" data-device="{html.escape(d["id"])}" id="device-{html.escape(d["id"])}">'
        f'<h3>{html.escape(d["id"])} <span class="badge {state}">{state}</span></h3>'
        f'<p class="meta">{html.escape(d["kind"])} · last seen {_age(d["last_seen_age_s"])} · '
        f'{d["readings"]} readings · {d["rejected"]} rejected{reason}</p>'
        f'{latest_html}{rejection}{chart}{_kpi_rows(kpis, tz, today)}</section>')


def _sink_card(s: Mapping[str, Any]) -> str:
    failing = bool(s.get("failing"))
    error = ""
    if s.get("last_error"):
        error = (f'<div class="error" role="alert"><strong>{html.escape(s["error_explained"])}</strong>'
                 f'<details><summary>raw error</summary><code>{html.escape(s["last_error"])}</code></details></div>')
    return (
        f'<section class="card sink{" failing" if failing else ""}" data-sink="{html.escape(s["name"])}">'
        f'<h3>{html.escape(s["name"])} <span class="badge {"unavailable" if failing else "available"}">'
        f'{"failing" if failing else "ok"}</span></h3>'
        f'<p class="meta">{s["delivered"]} delivered · backlog {s["lag"]} · oldest waiting '
        f'{_age(s["oldest_undelivered_s"]) if s["lag"] else "—"} · {s.get("dead_letters", 0)} dead letters</p>'
        f'{error}</section>')


def _nats_card(n: Mapping[str, Any]) -> str:
    """The NATS JetStream input ([nats]): where it reads, whether it is connected, what it fetched and acknowledged."""
    up = bool(n["connected"])
    down = _age(n["down_for_s"]).removesuffix(" ago")
    where = f"connected to {html.escape(n['server'])}" if up else f"not connected for {down}"
    pending = "unknown" if n["pending"] is None else str(n["pending"])
    failed = n["acks_failed"] + n["acks_skipped"]
    error = ""
    if n.get("last_error"):
        at = n.get("last_error_at")
        when = "" if at is None else f" ({_age(n.get('now', at) - at)})"
        attrs = 'class="muted"' if up else 'class="error" role="alert"'  # highlighted while it matters
        error = f'<div {attrs}>last error{when}: <code>{html.escape(n["last_error"])}</code></div>'
    return (
        f'<section class="card input nats{"" if up else " failing"}" id="nats" data-input="nats">'
        f'<h3>NATS JetStream <span class="badge {"available" if up else "unavailable"}">'
        f'{"connected" if up else "NOT connected"}</span></h3>'
        f'<p class="meta">{where} · servers {html.escape(", ".join(n["servers"]))}</p>'
        f'<p class="meta">stream <b>{html.escape(n["stream"])}</b> · consumer <b>{html.escape(n["durable"])}</b> · '
        f'subject <code>{html.escape(n["subject"])}</code></p>'
        f'<p class="meta" id="nats-counts">pending {pending} · in flight {n["in_flight"]} · {n["fetched"]} fetched · '
        f'{n["acked"]} acknowledged · {n["redelivered"]} redelivered · {failed} acks not sent · '
        f'{n["errors"]} errors</p>{error}</section>')


_CSS = """
*{box-sizing:border-box}body{font:15px/1.4 system-ui,sans-serif;margin:0;padding:.6em;background:#f4f5f7;color:#111}
main{max-width:60em;margin:auto}h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1em 0 .3em}
h3{font-size:1em;margin:0 0 .2em;overflow-wrap:anywhere}.card{background:#fff;border-radius:6px;padding:.6em;
margin:.5em 0;box-shadow:0 1px 2px #0002}.meta,.muted{color:#555;margin:.2em 0}.why{color:#a00}
table{border-collapse:collapse;width:100%;margin:.3em 0}td,th{padding:.15em .35em;text-align:left;
border-bottom:1px solid #eee;vertical-align:top;overflow-wrap:anywhere}th{font-weight:600;color:#444}
.num{white-space:nowrap}.badge{font-size:.8em;padding:.05em .4em;border-radius:3px;color:#fff;background:#888}
.badge.available{background:#2a7d2a}.badge.unavailable{background:#b00}.badge.waiting{background:#a67c00}
.ok{color:#2a7d2a}.warn{color:#a60}.sink.failing{border-left:6px solid #b00;background:#fff4f4}
.error{color:#900;margin:.3em 0}.error code{color:#333;overflow-wrap:anywhere;font-size:.85em}
.health{padding:.6em;border-radius:6px;margin:.4em 0}.health.good{background:#e3f4e3}
.health.bad{background:#b00;color:#fff}.health ul{margin:.2em 0;padding-left:1.2em}
.rejection{color:#a60;overflow-wrap:anywhere}.chart{max-width:34em;display:block;margin:.3em 0}
.chart text{font-size:11px;fill:#333}.chart .u,.chart .t,.chart .v{fill:#666;font-size:10px}
.chart .axis{stroke:#ddd}nav a{margin-right:1em}
.when{white-space:nowrap;font-size:.85em}small.muted{color:#777}
@media (max-width:30em){body{font-size:14px;padding:.3em}}
"""


def render_page(status: Mapping[str, Any], charts: Mapping[str, str]) -> str:
    """The whole page for one status snapshot and the charts of its devices."""
    tz = ZoneInfo(status.get("timezone") or "UTC")
    today = datetime.fromtimestamp(status["now"], tz).strftime("%Y-%m-%d")
    reasons = status.get("health", [])
    if reasons:
        health = ('<div class="health bad" role="alert" id="health"><strong>Unhealthy</strong><ul>'
                  + "".join(f"<li>{html.escape(r)}</li>" for r in reasons) + "</ul></div>")
    else:
        health = '<div class="health good" id="health"><strong>Healthy</strong></div>'
    by_device: dict[str, list[Mapping[str, Any]]] = {}
    for k in status["kpis"]:
        by_device.setdefault(k["device_id"], []).append(k)
    devices = status["devices"]
    known = {d["id"] for d in devices}
    cards = [_device_card(d, by_device.get(d["id"], []), charts.get(d["id"], ""), tz, today) for d in devices]
    # Series of no single device (kit-wide indicators, per capita): their own card.
    for device_id in sorted(set(by_device) - known):
        cards.append(f'<section class="card device aggregate" data-device="{html.escape(device_id)}">'
                     f'<h3>{html.escape(device_id)}</h3>{_kpi_rows(by_device[device_id], tz, today)}</section>')
    mqtt = status.get("mqtt") or {}
    mqtt_text = ("no MQTT" if not mqtt else
                 f"MQTT {html.escape(mqtt['broker'])} {'connected' if mqtt['connected'] else 'NOT connected'}")
    gw = html.escape(status["gateway"])
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="15"><title>citygw {gw}</title><style>{_CSS}</style></head><body><main>
<h1>citygw · {gw}</h1>
{health}
<p class="meta">up {_age(status['uptime_s']).removesuffix(' ago')} · {mqtt_text} · journal
{status['journal_bytes'] / 1e6:.1f} MB · {status['accepted']} readings accepted, {status['rejected']} rejected,
{status['late']} late · clock {html.escape(status['clock'])}</p>{_time_line(status)}
<nav><a href="/status.json">status.json</a><a href="/metrics">metrics</a><a href="/healthz">healthz</a></nav>
{_nats_block(status)}<h2>Sinks</h2>
{''.join(_sink_card(s) for s in status['sinks']) or '<p class="muted">No sink configured.</p>'}
<h2>Devices</h2>
{''.join(cards) or '<p class="muted">No device configured or heard yet.</p>'}
</main></body></html>"""


def _nats_block(status: Mapping[str, Any]) -> str:
    """The NATS input's card under its heading; nothing without [nats]."""
    nats = status.get("nats")
    return f"<h2>Input</h2>\n{_nats_card({**nats, 'now': status['now']})}\n" if nats else ""


def _time_line(status: Mapping[str, Any]) -> str:
    """Late readings per window length and devices whose clocks sit far from ours (empty when all is well)."""
    late = {w: n for w, n in (status.get("late_by_window") or {}).items() if n}
    parts = []
    if late:
        parts.append("late for a window: " + ", ".join(f"{html.escape(w)} {n}" for w, n in late.items()))
    for o in status.get("clock_offsets") or []:
        parts.append(f"clock of {html.escape(o['device'])} {o['offset_s']:+.0f} s: {html.escape(o['cause'])}")
    return f'<p class="meta" id="event-time">{" · ".join(parts)}</p>' if parts else ""
