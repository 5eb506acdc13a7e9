"""Small inline SVG charts drawn by the server: the status page works offline (no CDN, no JavaScript).

One chart per device: a row per quantity, each a line of that quantity's window means over the span, scaled
to its own min..max (the numbers beside it say what the line spans), with gaps where windows are missing.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

__all__ = ["device_chart"]

ROW_H = 38
LABEL_W = 118
PLOT_W = 220
VALUE_W = 62
WIDTH = LABEL_W + PLOT_W + VALUE_W
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def _fmt(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 100_000:
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{value:.2e}"


def _path(points: Sequence[tuple[int, float]], start_ns: int, span_ns: int, gap_ns: int, lo: float, hi: float,
          top: float) -> str:
    """SVG path data: moves across gaps longer than `gap_ns`, lines elsewhere."""
    parts: list[str] = []
    prev_ts: int | None = None
    height = ROW_H - 12
    for ts, value in points:
        if not math.isfinite(value):
            prev_ts = None
            continue
        x = LABEL_W + (ts - start_ns) / span_ns * PLOT_W
        y = top + 6 + (height / 2 if hi == lo else (hi - value) / (hi - lo) * height)
        cmd = "L" if prev_ts is not None and ts - prev_ts <= gap_ns else "M"
        parts.append(f"{cmd}{x:.1f},{y:.1f}")
        prev_ts = ts
    # A lone point would draw nothing: give it a short stroke so it shows.
    if len(parts) == 1:
        x_text, y_text = parts[0][1:].split(",")
        parts.append(f"L{float(x_text) + 1.5:.1f},{y_text}")
    return " ".join(parts)


def device_chart(device_id: str, series: Mapping[str, tuple[str, Sequence[tuple[int, float]]]], start_ns: int,
                 span_ns: int, window_ns: int, window_label: str) -> str:
    """An inline <svg> with one row per quantity: name and unit, the line, and its min..max."""
    if not series:
        return ""
    rows = []
    gap_ns = 3 * window_ns
    for i, (quantity, (unit, points)) in enumerate(series.items()):
        values = [v for _, v in points if math.isfinite(v)]
        if not values:
            continue
        lo, hi = min(values), max(values)
        top = i * ROW_H
        colour = COLOURS[i % len(COLOURS)]
        label = html.escape(quantity)
        rows.append(
            f'<g class="row"><text x="0" y="{top + 16}" class="q">{label}</text>'
            f'<text x="0" y="{top + 30}" class="u">{html.escape(unit)}</text>'
            f'<line x1="{LABEL_W}" x2="{LABEL_W + PLOT_W}" y1="{top + ROW_H - 4}" y2="{top + ROW_H - 4}" '
            f'class="axis"/>'
            f'<path d="{_path(points, start_ns, span_ns, gap_ns, lo, hi, top)}" stroke="{colour}" '
            f'fill="none" stroke-width="1.6"/>'
            f'<text x="{WIDTH}" y="{top + 14}" class="v" text-anchor="end">max {_fmt(hi)}</text>'
            f'<text x="{WIDTH}" y="{top + 30}" class="v" text-anchor="end">min {_fmt(lo)}</text></g>'
        )
    if not rows:
        return ""
    height = len(rows) * ROW_H + 14
    hours = span_ns / 3.6e12
    title = f"{device_id}: {window_label} means over the last {hours:.0f} h"
    axis = (f'<text x="{LABEL_W}" y="{height - 2}" class="t">−{hours:.0f} h</text>'
            f'<text x="{LABEL_W + PLOT_W}" y="{height - 2}" class="t" text-anchor="end">now</text>')
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
            f'aria-label="{html.escape(title)}" data-device="{html.escape(device_id)}">'
            f'<title>{html.escape(title)}</title>{"".join(rows)}{axis}</svg>')
