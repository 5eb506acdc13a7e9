"""`KpiPoint`: one closed window (or derived indicator) of one series, as the aggregators emit it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from devices.reading import EMPTY_TAGS

__all__ = ["KpiPoint"]


@dataclass(frozen=True, slots=True)
class KpiPoint:
    """A KPI value for `window` starting at `start_ns`; `fields` holds the statistics (mean, min, max, count…)."""

    name: str  # series name: the quantity for window statistics ("pm2_5"), or an indicator ("us_aqi")
    device_id: str
    window: str  # "1m", "1h", "1d", "24h_running", …
    start_ns: int
    end_ns: int
    unit: str
    value: float  # the headline value: mean for levels, energetic mean for dB, consumption for meters
    fields: Mapping[str, Any] = field(default_factory=lambda: EMPTY_TAGS)
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    valid: bool = True  # False when the window misses its completeness rule (emitted, flagged, never hidden)
