"""Derived KPI series: indicators computed from closed windows (AQI, NowCast, EAQI, Lden, consumption, …).

(Being written: see docs/kpis.md "KPI series".)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from aggregators.kpi import KpiPoint

__all__ = ["DerivedKpis", "KpiOptions"]


class KpiOptions(BaseModel):
    """The [kpis] section of the config."""

    model_config = ConfigDict(extra="forbid")


class DerivedKpis:
    """Turns closed window points into indicator points; its state survives restarts via `state()`."""

    def __init__(self, options: KpiOptions, timezone: str = "UTC") -> None:
        self.options = options
        self.timezone = timezone

    def feed(self, points: Sequence[KpiPoint]) -> list[KpiPoint]:
        """Indicator points that these closed windows complete."""
        return []

    def state(self) -> dict[str, Any]:
        """JSON-able state to persist with the window horizon."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what `state()` returned."""
