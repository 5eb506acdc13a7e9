"""Energy group: daily consumption per electricity meter, per capita for the kit, and the 15-min peak demand."""

from __future__ import annotations

from typing import ClassVar, Final

from aggregators.derived.base import KpiContext, SeriesTable, register
from aggregators.derived.meters import MeterCalculator
from aggregators.derived.options import Q, need
from aggregators.kpi import KpiPoint
from aggregators.water_energy import kwh_per_capita, peak_demand_kw

__all__ = ["EnergyCalculator"]

_ENERGY_TAGS: Final = {"standard": "U4SSC KPI electricity consumption", "u4ssc": "EN:E:E:2C"}
_DEMAND_TAGS: Final = {"standard": "15-min demand (max interval energy x 4)", "u4ssc": "EN:E:E:2C"}


@register
class EnergyCalculator(MeterCalculator):
    """Electricity meters (energy_import): hourly windows for the day, 15-min bins for the demand."""

    group = "energy"
    indicators = frozenset(("energy",))
    SERIES: ClassVar[SeriesTable] = {
        "energy_consumption": (("1d",), "kWh"),
        "energy_consumption_per_capita": (("1d",), "kWh/capita/day"),
        "peak_demand": (("1d",), "kW"),
    }
    V1_KEYS: ClassVar[dict[str, str]] = {"energy_meters": "meters"}
    quantity = "energy_import"
    consumption = ("energy_consumption", "kWh", _ENERGY_TAGS)
    per_capita = ("energy_consumption_per_capita", "kWh/capita/day", "energy")

    def __init__(self, ctx: KpiContext) -> None:
        super().__init__(ctx)
        self.hourly_quantities = frozenset(("energy_import",))
        self.quarterly_quantities = frozenset(("energy_import",))

    def configured_meters(self) -> list[str]:
        """`energy_meters` of the config."""
        return self.options.energy_meters

    def per_capita_value(self, total: float, population: int) -> float:
        """kWh per inhabitant and day."""
        return kwh_per_capita(total, population)

    def device_day(self, device: str, present: set[str], d0: int, d1: int) -> list[KpiPoint]:
        """The peak 15-min demand of a meter that reported hourly windows that day."""
        if "energy_import" not in present:
            return []
        bins = self.bins(device, "energy_import", d0, d1)
        reported = [r is not None and r.samples > 0 for r in bins]
        if not any(reported):
            return []
        energies = [r.value if r is not None and r.samples > 0 else None for r in bins]
        kw = peak_demand_kw(energies, 15)
        top = max(e for e in energies if e is not None)
        first = energies.index(top)  # ties: the earliest interval
        fields = {"peak_start": d0 + first * Q, "intervals": sum(reported)}
        valid = sum(reported) >= need(self.options.min_day_coverage, len(bins))
        return [self.ctx.point("peak_demand", device, "1d", d0, d1, "kW", kw, fields, _DEMAND_TAGS, valid)]
