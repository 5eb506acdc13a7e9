"""Water group: daily consumption per meter, per capita for the kit, and the minimum night flow (IWA)."""

from __future__ import annotations

from typing import ClassVar, Final

from aggregators.derived.base import KpiContext, SeriesTable, register
from aggregators.derived.meters import MeterCalculator
from aggregators.derived.options import H
from aggregators.kpi import KpiPoint
from aggregators.water_energy import minimum_night_flow, per_capita_l_per_day

__all__ = ["WaterCalculator"]

_WATER_TAGS: Final = {"standard": "U4SSC KPI water consumption", "u4ssc": "EN:EN:WS:2C"}
_MNF_TAGS: Final = {"standard": "IWA minimum night flow", "u4ssc": "EC:I:WS:3C"}


@register
class WaterCalculator(MeterCalculator):
    """Water meters (water_volume) and flow probes (water_flow)."""

    group = "water"
    indicators = frozenset(("water",))
    SERIES: ClassVar[SeriesTable] = {
        "water_consumption": (("1d",), "m3"),
        "water_consumption_per_capita": (("1d",), "l/capita/day"),
        "minimum_night_flow": (("1d",), "m3/h"),
    }
    V1_KEYS: ClassVar[dict[str, str]] = {"water_meters": "meters"}
    quantity = "water_volume"
    consumption = ("water_consumption", "m3", _WATER_TAGS)
    per_capita = ("water_consumption_per_capita", "l/capita/day", "volume")

    def __init__(self, ctx: KpiContext) -> None:
        super().__init__(ctx)
        self.hourly_quantities = frozenset(("water_volume", "water_flow"))

    def configured_meters(self) -> list[str]:
        """`water_meters` of the config."""
        return self.options.water_meters

    def per_capita_value(self, total: float, population: int) -> float:
        """Litres per inhabitant and day."""
        return per_capita_l_per_day(total, population, 1)

    def device_day(self, device: str, present: set[str], d0: int, d1: int) -> list[KpiPoint]:
        """The minimum night flow, from the meter or else the flow probe."""
        if "water_volume" in present:
            return self._night_flow(device, "water_volume", d0, d1)
        if "water_flow" in present:
            return self._night_flow(device, "water_flow", d0, d1)
        return []

    def _night_flow(self, device: str, quantity: str, d0: int, d1: int) -> list[KpiPoint]:
        o = self.options
        night = [h for h in range(d0, d1, H) if o.water_night_start <= self.ctx.local(h).hour < o.water_night_end]
        flows: dict[int, float] = {}
        for h in night:
            rec = self.rec(device, quantity, h)
            if rec is None:
                continue
            # water_volume: the hour's consumption in m³ is its mean flow in m³/h; water_flow: the hourly mean.
            if (quantity == "water_volume" and rec.samples > 0) or (quantity == "water_flow" and rec.valid):
                flows[h] = rec.value
        if not flows:
            return []
        mnf = min(minimum_night_flow(flows, self.ctx.tz, o.water_night_start, o.water_night_end).values())
        return [self.ctx.point("minimum_night_flow", device, "1d", d0, d1, "m3/h", mnf,
                               {"hours": len(flows)}, {**_MNF_TAGS, "source": quantity},
                               len(flows) == len(night))]
