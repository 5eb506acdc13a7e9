"""Derived KPI series: indicators computed from closed windows (AQI, NowCast, EAQI, Lden, consumption, …).

The window engine closes tumbling windows ("1h", "15m", "1d") and hands every batch of closed window points
to `DerivedKpis.feed`, which turns them into indicator points with the pure functions of the aggregators
package. One calculator per indicator group (air, noise, water, energy, traffic; `registry.py`) keeps the
state it needs between batches (the last 48 hourly values per air series, the hours and 15-min bins of the
open day): small, bounded and JSON-able. The pipeline stores `state()` in the same journal transaction as the
points, so after a crash `restore()` resumes exactly where the last committed batch left off.

Series names, windows, formulas and completeness rules: docs/kpis.md "KPI series".
"""

from __future__ import annotations

from aggregators.derived.air import CO_MG_M3_PER_PPM, HISTORY_HOURS, RUNNING_8H
from aggregators.derived.kpis import STATE_VERSION, DerivedKpis
from aggregators.derived.meters import METER_MEMORY_DAYS
from aggregators.derived.options import INDICATOR_GROUPS, KpiOptions
from aggregators.derived.registry import GROUPS, SERIES

__all__ = ["CO_MG_M3_PER_PPM", "GROUPS", "HISTORY_HOURS", "INDICATOR_GROUPS", "METER_MEMORY_DAYS", "RUNNING_8H",
           "SERIES", "STATE_VERSION", "DerivedKpis", "KpiOptions"]
