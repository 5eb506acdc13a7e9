"""Traffic group: hourly and daily volume, HCM peak hour and peak-hour factor, vehicle class shares."""

from __future__ import annotations

from typing import ClassVar, Final

from aggregators.derived.base import DayPoints, GroupCalculator, KpiContext, SeriesTable, register
from aggregators.derived.options import H, Q, need
from aggregators.kpi import KpiPoint
from aggregators.traffic import class_shares, peak_hour_factor
from aggregators.windows import parse_duration_ns

__all__ = ["TrafficCalculator"]

_TRAFFIC_TAGS: Final = {"standard": "HCM", "u4ssc": "EC:ICT:T:2C"}


@register
class TrafficCalculator(GroupCalculator):
    """Vehicle counters: vehicle_count hourly and in 15-min bins, and the configured class counts."""

    group = "traffic"
    indicators = frozenset(("traffic",))
    SERIES: ClassVar[SeriesTable] = {
        "traffic_volume": (("1h", "1d"), "veh"),
        "traffic_peak_hour": (("1d",), "veh/h"),
        "traffic_phf": (("1d",), "1"),
        "traffic_class_share": (("1d",), "%"),
    }

    def __init__(self, ctx: KpiContext) -> None:
        super().__init__(ctx)
        self.hourly_quantities = frozenset(("vehicle_count", *ctx.options.traffic_classes))
        self.quarterly_quantities = frozenset(("vehicle_count",))
        self._per_report = max(1, H // parse_duration_ns(ctx.options.traffic_report_interval))  # reports an hour

    def on_hour(self, device: str, hour: int) -> list[KpiPoint]:
        """The hour's vehicle count, complete when every report of the hour arrived."""
        rec = self.rec(device, "vehicle_count", hour)
        if rec is None:
            return []
        return [self.ctx.point("traffic_volume", device, "1h", hour, hour + H, "veh", rec.value,
                               {"reports": rec.samples}, {**_TRAFFIC_TAGS, "standard": "HCM hourly volume"},
                               rec.samples >= self._per_report)]

    def on_day(self, d0: int, d1: int) -> DayPoints:
        """The day's volume and peak hour per counter, then its class shares."""
        by_device: dict[str, list[KpiPoint]] = {}
        for device, present in self.present(d0, d1).items():
            points: list[KpiPoint] = []
            if "vehicle_count" in present:
                points.extend(self._traffic_day(device, d0, d1))
            classes = [q for q in self.options.traffic_classes if q in present]
            if classes:
                points.extend(self._class_shares(device, classes, d0, d1))
            by_device[device] = points
        return DayPoints(by_device, [])

    def _traffic_day(self, device: str, d0: int, d1: int) -> list[KpiPoint]:
        hours = range(d0, d1, H)
        recs = [self.rec(device, "vehicle_count", h) for h in hours]
        complete = sum(1 for r in recs if r is not None and r.samples >= self._per_report)
        total = float(sum(r.value for r in recs if r is not None))
        need_h = need(self.options.min_day_coverage, len(hours))
        out = [self.ctx.point("traffic_volume", device, "1d", d0, d1, "veh", total, {"hours": complete},
                              {**_TRAFFIC_TAGS, "standard": "daily traffic volume"}, complete >= need_h)]
        bins = self.bins(device, "vehicle_count", d0, d1)
        per_bin = max(1, self._per_report // 4)
        reported = [r is not None and r.samples >= per_bin for r in bins]
        if not any(r is not None for r in bins) or len(bins) < 4:
            return out
        counts = [r.value if r is not None else 0.0 for r in bins]
        peak = peak_hour_factor(counts)
        start = d0 + peak.start_index * Q
        valid = (sum(reported) >= need(self.options.min_day_coverage, len(bins))
                 and all(reported[peak.start_index:peak.start_index + 4]))
        fields = {"peak_start": start, "peak_15min": peak.peak_15min}
        out.append(self.ctx.point("traffic_peak_hour", device, "1d", d0, d1, "veh/h", peak.volume, fields,
                                  {**_TRAFFIC_TAGS, "standard": "HCM peak hour"}, valid))
        if peak.phf is not None:
            out.append(self.ctx.point("traffic_phf", device, "1d", d0, d1, "1", peak.phf,
                                      {**fields, "volume": peak.volume},
                                      {**_TRAFFIC_TAGS, "standard": "HCM peak-hour factor"}, valid))
        return out

    def _class_shares(self, device: str, classes: list[str], d0: int, d1: int) -> list[KpiPoint]:
        hours = range(d0, d1, H)
        sums: dict[str, float] = {}
        complete = True
        need_h = need(self.options.min_day_coverage, len(hours))
        for q in classes:
            recs = [self.rec(device, q, h) for h in hours]
            sums[q] = float(sum(r.value for r in recs if r is not None))
            complete = complete and sum(1 for r in recs if r is not None and r.samples >= self._per_report) >= need_h
        shares = class_shares(sums)
        total = sum(sums.values())
        out: list[KpiPoint] = []
        for q in classes:
            share = shares[q]
            if share is None:
                return []
            out.append(self.ctx.point("traffic_class_share", device, "1d", d0, d1, "%", 100.0 * share,
                                      {"vehicles": sums[q], "total": total},
                                      {**_TRAFFIC_TAGS, "standard": "class shares",
                                       "class": q.removesuffix("_count")}, complete))
        return out
