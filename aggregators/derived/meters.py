"""What the water and energy groups share: a meter's daily consumption and the kit's consumption per capita."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from aggregators.derived.base import DayPoints, GroupCalculator, KpiContext
from aggregators.derived.options import H, need
from aggregators.kpi import KpiPoint

__all__ = ["METER_MEMORY_DAYS", "MeterCalculator"]

METER_MEMORY_DAYS: Final = 7  # a meter silent this long leaves the default per-capita set


class MeterCalculator(GroupCalculator, ABC):
    """Daily consumption per meter of `quantity`, summed over the kit's meters per inhabitant."""

    quantity: ClassVar[str]  # the cumulative meter quantity (hourly window headline = consumption)
    consumption: ClassVar[tuple[str, str, dict[str, str]]]  # daily series: name, unit, tags
    per_capita: ClassVar[tuple[str, str, str]]  # kit-wide series: name, unit, the field carrying the total
    V1_KEYS: ClassVar[dict[str, str]] = {}  # set by subclasses: their "<x>_meters" key -> "meters"

    def __init__(self, ctx: KpiContext) -> None:
        super().__init__(ctx)
        self._seen: dict[str, int] = {}  # meter -> the last hour it reported

    @abstractmethod
    def configured_meters(self) -> list[str]:
        """The meters the config names for the per-capita sum (empty: every meter heard in the last week)."""

    @abstractmethod
    def per_capita_value(self, total: float, population: int) -> float:
        """One day's consumption `total` per inhabitant, in the per-capita series' unit."""

    def device_day(self, device: str, present: set[str], d0: int, d1: int) -> list[KpiPoint]:
        """Further series of one device's day, after its consumption."""
        return []

    def add_hour(self, p: KpiPoint) -> None:
        """Keep the window; a meter's window also marks it as heard."""
        super().add_hour(p)
        if p.name == self.quantity:
            self._seen[p.device_id] = max(p.start_ns, self._seen.get(p.device_id, 0))

    def extra_state(self) -> dict[str, Any]:
        """The meters heard and when."""
        return {"meters": sorted(self._seen.items())}

    def restore_extra(self, state: Mapping[str, Any]) -> None:
        """Restore the meters heard."""
        self._seen = {d: int(ts) for d, ts in state.get("meters", [])}

    def on_day(self, d0: int, d1: int) -> DayPoints:
        """Each meter's consumption (and the subclass's series), then the kit's consumption per capita."""
        by_device: dict[str, list[KpiPoint]] = {}
        days: dict[str, tuple[float, bool]] = {}
        for device, present in sorted(self.present(d0, d1).items()):
            points: list[KpiPoint] = []
            if self.quantity in present:
                point = self._meter_day(device, d0, d1)
                points.append(point)
                days[device] = (point.value, point.valid)
            points.extend(self.device_day(device, present, d0, d1))
            by_device[device] = points
        kit = self._per_capita(days, d0, d1) if self.options.population and days else []
        return DayPoints(by_device, kit)

    def _meter_day(self, device: str, d0: int, d1: int) -> KpiPoint:
        hours = range(d0, d1, H)
        recs = [r for h in hours if (r := self.rec(device, self.quantity, h)) is not None and r.samples > 0]
        total = float(sum(r.value for r in recs))
        # A meter's hourly consumption chains reading to reading, so gaps do not lose volume; the day counts as
        # complete when enough of its hours hold a reading (the boundaries are then pinned within the hour).
        valid = len(recs) >= need(self.options.min_day_coverage, len(hours))
        name, unit, tags = self.consumption
        return self.ctx.point(name, device, "1d", d0, d1, unit, total, {"hours": len(recs)}, tags, valid)

    def _per_capita(self, days: dict[str, tuple[float, bool]], d0: int, d1: int) -> list[KpiPoint]:
        # Default set: the meters heard in the last week (a meter silent for longer has been removed).
        recent = {m for m, last in self._seen.items() if last >= d0 - METER_MEMORY_DAYS * 24 * H}
        wanted = set(self.configured_meters()) or recent
        meters = sorted(wanted & set(days))
        population = self.options.population
        if not meters or population is None:
            return []
        total = sum(days[m][0] for m in meters)
        # Complete only when every meter of the set reported a complete day (a silent meter is not zero use).
        valid = len(meters) == len(wanted) and all(days[m][1] for m in meters)
        name, unit, total_field = self.per_capita
        fields = {total_field: total, "population": int(population), "meters": len(meters)}
        return [KpiPoint(name, self.options.aggregate_id, "1d", d0, d1, unit, self.per_capita_value(total, population),
                         fields, dict(self.consumption[2]), valid)]
