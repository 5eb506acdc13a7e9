"""Charts of the report as inline SVG, drawn with matplotlib (no CDN, no JavaScript: the file works offline).

matplotlib is the plotting library every scientist can read and change, it writes SVG without a browser, and
its text stays text in the SVG (svg.fonttype = none), so the charts are searchable and small.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import date, timedelta

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display on a Pi or a CI machine
import matplotlib.pyplot as plt
from matplotlib.patches import Patch, Rectangle

__all__ = ["AQI_BANDS", "EAQI_BANDS", "band_colour", "bars", "calendar", "hour_of_day", "lines"]

plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "citygw-report", "font.size": 9,
                     "axes.spines.top": False, "axes.spines.right": False})

# US EPA AQI categories (upper bound, colour, name) and the EEA's European AQI levels 1..6.
AQI_BANDS: tuple[tuple[float, str, str], ...] = (
    (50, "#00e400", "Good"), (100, "#ffff00", "Moderate"), (150, "#ff7e00", "Unhealthy for sensitive groups"),
    (200, "#ff0000", "Unhealthy"), (300, "#8f3f97", "Very unhealthy"), (float("inf"), "#7e0023", "Hazardous"))
EAQI_BANDS: tuple[tuple[float, str, str], ...] = (
    (1, "#50f0e6", "Good"), (2, "#50ccaa", "Fair"), (3, "#f0e641", "Moderate"), (4, "#ff5050", "Poor"),
    (5, "#960032", "Very poor"), (float("inf"), "#7d2181", "Extremely poor"))
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
Lines = Sequence[tuple[str, float, str]]  # (label, value, colour) reference lines


def band_colour(value: float, bands: Sequence[tuple[float, str, str]]) -> tuple[str, str]:
    """The (colour, category name) of a value in a table of (upper bound, colour, name)."""
    for upper, colour, name in bands:
        if value <= upper:
            return colour, name
    return bands[-1][1], bands[-1][2]


def _svg(fig: plt.Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG sits inside HTML


def _refs(ax: plt.Axes, refs: Lines) -> None:
    for label, value, colour in refs:
        ax.axhline(value, color=colour, linestyle="--", linewidth=1)
        ax.annotate(label, (1.0, value), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                    fontsize=7, color=colour)


def lines(title: str, unit: str, series: Mapping[str, Mapping[date, float]], refs: Lines = ()) -> str:
    """Daily values of several devices as lines, with reference lines (limits, thresholds)."""
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    for i, (label, values) in enumerate(sorted(series.items())):
        days = sorted(values)
        ax.plot(np.array(days, dtype="datetime64[D]"), [values[d] for d in days], marker=".", linewidth=1.2,
                label=label,
                color=PALETTE[i % len(PALETTE)])
    _refs(ax, refs)
    ax.set_title(title, loc="left")
    ax.set_ylabel(unit)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.autofmt_xdate()
    return _svg(fig)


def bars(title: str, unit: str, labels: Sequence[str], values: Sequence[float], refs: Lines = (),
         overlay: tuple[str, str, Sequence[float | None]] | None = None) -> str:
    """Bars per label (month or day), optional reference lines and a second-axis line (e.g. night flow)."""
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    ax.bar(range(len(values)), values, color=PALETTE[0])
    ax.set_xticks(range(len(labels)), labels, rotation=60 if len(labels) > 12 else 0, fontsize=7)
    _refs(ax, refs)
    ax.set_title(title, loc="left")
    ax.set_ylabel(unit)
    if overlay is not None:
        name, overlay_unit, points = overlay
        twin = ax.twinx()
        present = [(i, v) for i, v in enumerate(points) if v is not None]
        twin.plot([i for i, _ in present], [v for _, v in present], color=PALETTE[1], marker=".", label=name)
        twin.set_ylabel(f"{name} ({overlay_unit})", color=PALETTE[1])
    return _svg(fig)


def calendar(title: str, values: Mapping[date, float], start: date, end: date,
             bands: Sequence[tuple[float, str, str]]) -> str:
    """A calendar heat map: one square per day (weeks as columns, Monday on top), coloured by category."""
    first_monday = start - timedelta(days=start.weekday())
    weeks = (end - first_monday).days // 7 + 1
    fig, ax = plt.subplots(figsize=(max(2.5, 0.42 * weeks + 1.2), 2.4))
    day = start
    while day < end:
        col, row = (day - first_monday).days // 7, day.weekday()
        if day in values:
            colour, _ = band_colour(values[day], bands)
            ax.add_patch(Rectangle((col, 6 - row), 0.92, 0.92, color=colour))
            ax.text(col + 0.46, 6 - row + 0.46, f"{values[day]:.0f}", ha="center", va="center", fontsize=6)
        else:
            ax.add_patch(Rectangle((col, 6 - row), 0.92, 0.92, facecolor="white", edgecolor="#bbbbbb", hatch="//"))
        day += timedelta(days=1)
    ax.set_xlim(0, weeks)
    ax.set_ylim(0, 7)
    ax.set_yticks([6.46 - k for k in range(7)], ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], fontsize=7)
    ax.set_xticks([k + 0.46 for k in range(weeks)],
                  [(first_monday + timedelta(weeks=k)).strftime("%d %b") for k in range(weeks)], fontsize=6)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, loc="left")
    used = sorted({band_colour(v, bands) for v in values.values()}, key=lambda cn: [b[1] for b in bands].index(cn[0]))
    handles = [Patch(color=c, label=n) for c, n in used] + [Patch(facecolor="white", edgecolor="#bbbbbb",
                                                                  hatch="//", label="no valid value")]
    ax.legend(handles=handles, fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _svg(fig)


def hour_of_day(title: str, series: Mapping[str, Sequence[float | None]]) -> str:
    """Mean volume per local hour of day, one line per counter."""
    fig, ax = plt.subplots(figsize=(7.5, 2.6))
    for i, (label, values) in enumerate(sorted(series.items())):
        present = [(h, v) for h, v in enumerate(values) if v is not None]
        ax.plot([h for h, _ in present], [v for _, v in present], marker=".", label=label,
                color=PALETTE[i % len(PALETTE)])
    ax.set_xticks(range(0, 24, 2))
    ax.set_xlabel("local hour of day")
    ax.set_ylabel("vehicles per hour")
    ax.set_title(title, loc="left")
    ax.legend(fontsize=7, frameon=False)
    return _svg(fig)
