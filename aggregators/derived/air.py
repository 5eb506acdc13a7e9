"""Air quality group: PM NowCast, US AQI (hourly NowCast, daily 24-h PM, daily max 8-h O3/CO), EAQI, CAQI, WHO.

Keeps HISTORY_HOURS hourly values per pollutant (NowCast needs 12, the EAQI PM running mean 24, the daily max
of 8-h means the day plus 7 hours). Formulas and completeness rules: docs/kpis.md "KPI series".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from aggregators.aqi import BEYOND, nowcast, us_aqi
from aggregators.derived.base import GroupCalculator, KpiContext, SeriesTable, register
from aggregators.derived.options import H, need
from aggregators.eaqi import caqi_overall, eaqi_overall
from aggregators.kpi import KpiPoint
from aggregators.u4ssc import PPB_TO_UGM3, to_ugm3
from aggregators.who import guideline

__all__ = ["CO_MG_M3_PER_PPM", "HISTORY_HOURS", "RUNNING_8H", "AirCalculator"]

HISTORY_HOURS: Final = 48  # hourly values kept per series (NowCast needs 12, the EAQI PM running mean 24)
# CO mg/m³ per ppm at 25 °C and 1 atm (M = 28.01 g/mol, molar volume 24.45 l): the EPA reference conditions of
# the AQI breakpoints. U4SSC gives no CO factor (its ppb factors cover NO2, SO2 and O3 only).
CO_MG_M3_PER_PPM: Final = 1.145
RUNNING_8H: Final = "8h_running"  # window label of the 8-hour running means

_PM: Final = ("pm2_5", "pm10")
_EAQI_GASES: Final = ("no2", "o3", "so2")
_RUNNING: Final = ("o3", "co")  # 8-h running means (US AQI o3_8h / co_8h, WHO O3, CAQI CO)
_CAQI_HOURLY: Final = ("pm2_5", "pm10", "no2", "o3", "so2")
_O3_FIRST_START: Final = 7  # EPA: the day's 17 8-h means start at 07:00 … 23:00 local
_O3_NEED_MEANS: Final = 13  # of those 17
_MEAN8_NEED: Final = 6  # valid hours of 8 for an 8-h mean
_WHO: Final = ("pm2_5", "pm10", "no2", "so2", "co")
_AQI_TAGS: Final = {"standard": "US EPA AQI 2024", "u4ssc": "EN:EN:AQ:1C"}
_AQI_SENTINEL_BEYOND: Final = 501.0  # "Beyond the AQI": category_of(501) is "Beyond the AQI"; never an index


@register
class AirCalculator(GroupCalculator):
    """Hourly and daily air quality indices from the pollutants' closed windows."""

    group = "air"
    indicators = frozenset(("nowcast", "us_aqi", "eaqi", "caqi", "who"))
    SERIES: ClassVar[SeriesTable] = {
        "nowcast_pm2_5": (("1h",), "ug/m3"),
        "nowcast_pm10": (("1h",), "ug/m3"),
        "us_aqi": (("1h", "1d"), "AQI"),
        "eaqi": (("1h",), "level"),
        "caqi": (("1h",), "index"),
        "o3_8h": ((RUNNING_8H,), "ppm"),
        "co_8h": ((RUNNING_8H,), "ppm"),
        "o3_8h_max": (("1d",), "ppm"),
        "co_8h_max": (("1d",), "ppm"),
        "who_exceedance": (("1d",), "1"),
    }
    HISTORY_HOURS = HISTORY_HOURS
    V1_KEYS: ClassVar[dict[str, str]] = {"max8_until": "max8_until"}

    def __init__(self, ctx: KpiContext) -> None:
        super().__init__(ctx)
        self.hourly_quantities = frozenset((*_PM, *_EAQI_GASES, "co"))
        self._max8_until = 0  # local midnight up to which daily max 8-h series have been emitted

    def extra_state(self) -> dict[str, Any]:
        """The daily max 8-h progress."""
        return {"max8_until": self._max8_until}

    def restore_extra(self, state: Mapping[str, Any]) -> None:
        """Restore the daily max 8-h progress."""
        self._max8_until = int(state.get("max8_until", 0))

    # -- hourly series ---------------------------------------------------------------------------------------

    def on_hour(self, device: str, hour: int) -> list[KpiPoint]:
        """NowCast and its AQI, EAQI, the 8-h running means and CAQI of the hour that closed."""
        out: list[KpiPoint] = []
        end = hour + H
        for q in _PM:
            if self.rec(device, q, hour) is None or self.unit(device, q) != "ug/m3":
                continue
            history = [self.valid_value(device, q, hour - k * H) for k in range(11, -1, -1)]
            nc = nowcast(history, q)
            if nc is None:
                continue  # fewer than 2 of the last 3 hours: NowCast undefined, nothing to report
            hours = sum(v is not None for v in history)
            if "nowcast" in self.on:
                out.append(self.ctx.point(f"nowcast_{q}", device, "1h", hour, end, "ug/m3", nc, {"hours": hours},
                                          {"standard": "EPA PM NowCast"}, True))
            if "us_aqi" in self.on:
                value, fields = self._aqi(f"{q}_24h", nc)
                out.append(self.ctx.point("us_aqi", device, "1h", hour, end, "AQI", value, fields,
                                          {**_AQI_TAGS, "pollutant": q, "averaging": "nowcast"}, True))
        if "eaqi" in self.on:
            out.extend(self._eaqi(device, hour))
        if "us_aqi" in self.on or "who" in self.on:
            out.extend(self._running_8h(device, hour))
        if "caqi" in self.on:
            out.extend(self._caqi(device, hour))
        return out

    def _aqi(self, pollutant: str, concentration: float) -> tuple[float, dict[str, Any]]:
        r = us_aqi(pollutant, concentration)
        fields: dict[str, Any] = {"concentration": r.concentration, "status": r.status,
                                  "category": r.category or ""}
        if r.aqi is not None:
            return float(r.aqi), fields
        # A1: above the table there is no index. The value must be a number, so a sentinel above 500 keeps
        # the point (and its category) visible; `status` says "beyond".
        fields["category"] = BEYOND
        return _AQI_SENTINEL_BEYOND, fields

    def _eaqi(self, device: str, hour: int) -> list[KpiPoint]:
        if not any(self.rec(device, q, hour) is not None for q in (*_PM, *_EAQI_GASES)):
            return []
        conc: dict[str, float] = {}
        for q in _PM:
            if self.unit(device, q) != "ug/m3":
                continue
            # PM: 24-h running mean of the hourly means ending with this hour, valid with 18 of 24 hours.
            values = [v for k in range(24) if (v := self.valid_value(device, q, hour - k * H)) is not None]
            if len(values) >= need(0.75, 24):
                conc[q] = sum(values) / len(values)
        for q in _EAQI_GASES:
            v = self.valid_value(device, q, hour)
            unit = self.unit(device, q)
            if v is not None and unit in ("ug/m3", "ppb", "ppm"):
                conc[q] = to_ugm3(q, max(v, 0.0), unit)
        if not conc:
            return []
        table = self.options.eaqi_table
        o = eaqi_overall(conc, table, self.options.eaqi_station_type)
        fields: dict[str, Any] = {"critical_pollutant": o.pollutant}
        for q, c in conc.items():
            fields[f"{q}_ugm3"] = float(c)
        tags = {"standard": f"EEA EAQI {table}", "band": o.band, "table": table}
        return [self.ctx.point("eaqi", device, "1h", hour, hour + H, "level", o.level, fields, tags,
                               o.complete is not False)]

    # -- 8-hour running means (O3, CO) and the CAQI ---------------------------------------------------------

    def _ppm(self, device: str, quantity: str, value: float) -> float | None:
        """An O3 or CO concentration in ppm (the AQI unit), or None for a unit without a documented factor."""
        unit = self.unit(device, quantity)
        # Converted values are rounded to 1e-9 ppm so that a float artefact (0.0779999…) cannot move the AQI
        # truncation step (0.001 ppm O3, 0.1 ppm CO) down by one.
        if unit == "ppm":
            return value
        if unit == "ppb":
            return round(value / 1000.0, 9)
        if quantity == "o3" and unit == "ug/m3":
            return round(value / PPB_TO_UGM3["o3"] / 1000.0, 9)  # U4SSC factor 1.96 µg/m³ per ppb (A9)
        if quantity == "co" and unit == "mg/m3":
            return round(value / CO_MG_M3_PER_PPM, 9)
        return None

    def _mean8(self, device: str, quantity: str, start: int) -> tuple[float, int] | None:
        """Mean of the valid hourly means in [start, start + 8 h) and how many there are; None without any."""
        values = [v for k in range(8) if (v := self.valid_value(device, quantity, start + k * H)) is not None]
        if not values:
            return None
        return sum(values) / len(values), len(values)

    def _running_8h(self, device: str, hour: int) -> list[KpiPoint]:
        # The hour that just closed completes the 8-h mean [hour - 7 h, hour + 1 h), labelled by its start (EPA).
        out: list[KpiPoint] = []
        start = hour - 7 * H
        for q in _RUNNING:
            if self.rec(device, q, hour) is None:
                continue
            m = self._mean8(device, q, start)
            if m is None:
                continue
            ppm = self._ppm(device, q, m[0])
            if ppm is None:
                continue
            out.append(self.ctx.point(f"{q}_8h", device, RUNNING_8H, start, hour + H, "ppm", ppm,
                                      {"hours": m[1]}, {"standard": "US EPA 8-h running mean"}, m[1] >= _MEAN8_NEED))
        return out

    def _caqi(self, device: str, hour: int) -> list[KpiPoint]:
        if not any(self.rec(device, q, hour) is not None for q in (*_CAQI_HOURLY, "co")):
            return []
        conc: dict[str, float] = {}
        for q in _CAQI_HOURLY:
            v = self.valid_value(device, q, hour)
            unit = self.unit(device, q)
            allowed = ("ug/m3",) if q in _PM else ("ug/m3", "ppb", "ppm")
            if v is not None and unit in allowed:
                conc[q] = to_ugm3(q, max(v, 0.0), unit)
        m = self._mean8(device, "co", hour - 7 * H)
        if m is not None and m[1] >= _MEAN8_NEED and (ppm := self._ppm(device, "co", m[0])) is not None:
            conc["co"] = max(ppm, 0.0) * CO_MG_M3_PER_PPM * 1000.0  # CAQI grid: CO 8-h mean in µg/m³
        if not conc:
            return []
        o = caqi_overall(conc)
        fields: dict[str, Any] = {"critical_pollutant": o.pollutant}
        for q, c in conc.items():
            fields[f"{q}_ugm3"] = float(c)
        # CITEAIR core pollutants (roadside grid): NO2 and PM10; without them the index may understate.
        valid = "no2" in conc and "pm10" in conc
        return [self.ctx.point("caqi", device, "1h", hour, hour + H, "index", o.index, fields,
                               {"standard": "CITEAIR CAQI hourly", "band": o.band}, valid)]

    # -- daily max 8-h means: a day's last mean (23:00 + 8 h) closes 7 hours into the next day ---------------

    def on_closed(self, day_limit: int) -> list[KpiPoint]:
        """Emit the daily max 8-h series of every local day whose last 8-h mean has closed."""
        if "us_aqi" not in self.on and "who" not in self.on:
            return []
        first = self._max8_until or min((min(recs) for (_d, q), recs in self._hourly.items()
                                         if q in _RUNNING and recs), default=0)
        if not first:
            return []
        out: list[KpiPoint] = []
        d0, d1 = self.ctx.day_bounds(first)
        while d1 + 7 * H <= day_limit:
            out.extend(self._max8_day(d0, d1))
            d0, d1 = d1, self.ctx.day_bounds(d1)[1]
        self._max8_until = d0
        return out

    def _max8_day(self, d0: int, d1: int) -> list[KpiPoint]:
        out: list[KpiPoint] = []
        for (device, q), recs in sorted(self._hourly.items()):
            if q not in _RUNNING or not any(d0 <= h < d1 + 7 * H for h in recs):
                continue
            if q == "o3":  # EPA: the 17 means starting 07:00 … 23:00 local, 13 of them needed
                starts = [h for h in range(d0, d1, H) if self.ctx.local(h).hour >= _O3_FIRST_START]
                n_need = _O3_NEED_MEANS
            else:  # CO: every 8-h mean starting in the local day, `min_day_coverage` of them needed
                starts = list(range(d0, d1, H))
                n_need = need(self.options.min_day_coverage, len(starts))
            means = {s: m[0] for s in starts if (m := self._mean8(device, q, s)) is not None and m[1] >= _MEAN8_NEED}
            if not means:
                continue
            peak_start = max(means, key=lambda s: (means[s], -s))  # ties: the earliest mean
            ppm = self._ppm(device, q, means[peak_start])
            if ppm is None:
                continue
            valid = len(means) >= n_need
            fields: dict[str, Any] = {"means": len(means), "peak_start": peak_start}
            out.append(self.ctx.point(f"{q}_8h_max", device, "1d", d0, d1, "ppm", ppm, fields,
                                      {"standard": "US EPA daily max 8-h mean"}, valid))
            if "us_aqi" in self.on:
                r = us_aqi(f"{q}_8h", max(ppm, 0.0))
                # O3 8-h above 0.200 ppm hands over to the 1-h scale (not produced here): no 8-h index exists.
                if r.status in ("ok", "beyond"):
                    value, aqi_fields = self._aqi(f"{q}_8h", max(ppm, 0.0))
                    aqi_fields["means"] = len(means)
                    out.append(self.ctx.point("us_aqi", device, "1d", d0, d1, "AQI", value, aqi_fields,
                                              {**_AQI_TAGS, "pollutant": q, "averaging": "8h"}, valid))
            if q == "o3" and "who" in self.on:
                out.extend(self._who_o3(device, d0, d1, ppm, means[peak_start], valid))
        return out

    def _who_o3(self, device: str, d0: int, d1: int, ppm: float, mean: float, valid: bool) -> list[KpiPoint]:
        try:
            limit = guideline("o3", "24h", self.options.who_level)
        except ValueError:
            return []  # IT-3 / IT-4 have no O3 value
        ugm3 = max(ppm, 0.0) * 1000.0 * PPB_TO_UGM3["o3"]
        if self.unit(device, "o3") == "ug/m3":
            ugm3 = max(mean, 0.0)  # no round trip through ppm
        return [self.ctx.point("who_exceedance", device, "1d", d0, d1, "1", 1.0 if ugm3 > limit else 0.0,
                               {"mean": float(ugm3), "guideline": float(limit)},
                               {"standard": "WHO AQG 2021", "pollutant": "o3", "level": self.options.who_level,
                                "averaging": "daily max 8h"}, valid)]

    # -- daily series from "1d" windows ----------------------------------------------------------------------

    def on_daily_window(self, p: KpiPoint) -> list[KpiPoint]:
        """The daily US AQI of PM and the WHO 24-h exceedance flags."""
        out: list[KpiPoint] = []
        if p.name in _PM and p.unit == "ug/m3" and "us_aqi" in self.on:
            value, fields = self._aqi(f"{p.name}_24h", max(p.value, 0.0))
            fields["coverage"] = float(p.fields.get("coverage", 0.0))
            out.append(self.ctx.point("us_aqi", p.device_id, "1d", p.start_ns, p.end_ns, "AQI", value, fields,
                                      {**_AQI_TAGS, "pollutant": p.name, "averaging": "24h"}, p.valid))
        if p.name in _WHO and "who" in self.on:
            try:
                if p.name == "co":
                    if p.unit != "mg/m3":
                        return out
                    conc = p.value
                else:
                    conc = to_ugm3(p.name, max(p.value, 0.0), p.unit)
                limit = guideline(p.name, "24h", self.options.who_level)
            except ValueError:
                return out  # no guideline at this level, or a unit the WHO table does not use
            out.append(self.ctx.point("who_exceedance", p.device_id, "1d", p.start_ns, p.end_ns, "1",
                                      1.0 if conc > limit else 0.0, {"mean": float(conc), "guideline": float(limit)},
                                      {"standard": "WHO AQG 2021", "pollutant": p.name,
                                       "level": self.options.who_level}, p.valid))
        return out
