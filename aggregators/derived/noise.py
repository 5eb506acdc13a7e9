"""Noise group: Lday, Levening, Lnight and Lden per local day from the hourly LAeq (Directive 2002/49/EC)."""

from __future__ import annotations

from typing import Any, ClassVar, Final

from aggregators.derived.base import DayPoints, GroupCalculator, KpiContext, SeriesTable, register
from aggregators.derived.options import H, need
from aggregators.kpi import KpiPoint
from aggregators.noise import end_band, laeq, lden_from_hourly

__all__ = ["NoiseCalculator"]

_NOISE_TAGS: Final = {"standard": "Directive 2002/49/EC Annex I", "u4ssc": "EN:EN:EQ:2A"}


@register
class NoiseCalculator(GroupCalculator):
    """The END day-evening-night levels of every sound level meter (dBA hourly LAeq)."""

    group = "noise"
    indicators = frozenset(("noise",))
    SERIES: ClassVar[SeriesTable] = {
        "lday": (("1d",), "dBA"),
        "levening": (("1d",), "dBA"),
        "lnight": (("1d",), "dBA"),
        "lden": (("1d",), "dBA"),
    }

    def __init__(self, ctx: KpiContext) -> None:
        super().__init__(ctx)
        self.hourly_quantities = frozenset(("noise_laeq",))

    def on_day(self, d0: int, d1: int) -> DayPoints:
        """The day's levels of every meter that reported dBA."""
        by_device = {device: self._noise_day(device, d0, d1) for device, present in self.present(d0, d1).items()
                     if "noise_laeq" in present and self.unit(device, "noise_laeq") == "dBA"}
        return DayPoints(by_device, [])

    def _noise_day(self, device: str, d0: int, d1: int) -> list[KpiPoint]:
        # Slot h holds the local clock hour h. On the autumn DST day the repeated hour's two LAeq values share
        # their slot (energetic mean); on the spring day the skipped hour is simply missing.
        slots: list[list[float]] = [[] for _ in range(24)]
        for hour in range(d0, d1, H):
            v = self.valid_value(device, "noise_laeq", hour)
            if v is not None:
                slots[self.ctx.local(hour).hour].append(v)
        levels: list[float | None] = [laeq(s) if s else None for s in slots]
        o = self.options
        day_h = [(o.lden_day_start + k) % 24 for k in range(o.lden_evening_start - o.lden_day_start)]
        eve_h = [(o.lden_evening_start + k) % 24 for k in range(o.lden_night_start - o.lden_evening_start)]
        night_h = [h for h in range(24) if h not in day_h and h not in eve_h]
        periods = {"lday": day_h, "levening": eve_h, "lnight": night_h}
        have = {name: [levels[h] for h in hs if levels[h] is not None] for name, hs in periods.items()}
        # Hourly values per period (9 night hours on the 25-hour day), against the period's nominal length.
        n_hours = {name: sum(len(slots[h]) for h in hs) for name, hs in periods.items()}
        ok = {name: n_hours[name] >= need(o.min_day_coverage, len(periods[name])) for name in periods}
        out: list[KpiPoint] = []
        values: dict[str, float] = {}
        if all(have.values()):
            den = lden_from_hourly(levels, o.den_day, o.den_evening)
            values = {"lday": den.lday, "levening": den.levening, "lnight": den.lnight, "lden": den.lden}
        else:
            values = {name: laeq([float(v) for v in vs if v is not None]) for name, vs in have.items() if vs}
        for name in ("lday", "levening", "lnight", "lden"):
            if name not in values:
                continue
            fields: dict[str, Any] = {}
            if name == "lden":
                fields["hours"] = sum(n_hours.values())
                valid = all(ok.values())
            else:
                fields["hours"] = n_hours[name]
                valid = ok[name]
            if name in ("lden", "lnight"):
                fields["end_band"] = end_band(values[name], name) or "below"
            out.append(self.ctx.point(name, device, "1d", d0, d1, "dBA", values[name], fields, _NOISE_TAGS, valid))
        return out
