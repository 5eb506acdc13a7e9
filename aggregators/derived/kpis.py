"""Derived KPI series: indicators computed from closed windows (AQI, NowCast, EAQI, Lden, consumption, …).

The window engine closes tumbling windows ("1h", "15m", "1d") and hands every batch of closed window points
to `DerivedKpis.feed`, which turns them into indicator points with the pure functions of this package. The
state it needs between batches (the last 48 hourly values per series, the 15-min bins of the open day) is
small, bounded and JSON-able: the pipeline stores `state()` in the same journal transaction as the points,
so after a crash `restore()` resumes exactly where the last committed batch left off.

Series names, windows, formulas and completeness rules: docs/kpis.md "KPI series".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aggregators.aqi import BEYOND, nowcast, us_aqi
from aggregators.eaqi import EAQI_TABLES, caqi_overall, eaqi_overall
from aggregators.kpi import KpiPoint
from aggregators.noise import end_band, laeq, lden_from_hourly
from aggregators.traffic import class_shares, peak_hour_factor
from aggregators.u4ssc import PPB_TO_UGM3, to_ugm3
from aggregators.water_energy import kwh_per_capita, minimum_night_flow, peak_demand_kw, per_capita_l_per_day
from aggregators.who import guideline
from aggregators.windows import parse_duration_ns

__all__ = ["CO_MG_M3_PER_PPM", "INDICATOR_GROUPS", "SERIES", "DerivedKpis", "KpiOptions"]

H: Final = 3_600_000_000_000
Q: Final = 900_000_000_000  # 15 minutes
METER_MEMORY_DAYS: Final = 7  # a water meter silent this long leaves the default per-capita set
HISTORY_HOURS: Final = 48  # hourly values kept per series (NowCast needs 12, the EAQI PM running mean 24)

IndicatorGroup = Literal["nowcast", "us_aqi", "eaqi", "caqi", "who", "noise", "water", "energy", "traffic"]
INDICATOR_GROUPS: Final[tuple[str, ...]] = ("nowcast", "us_aqi", "eaqi", "caqi", "who", "noise", "water",
                                           "energy", "traffic")
# CO mg/m³ per ppm at 25 °C and 1 atm (M = 28.01 g/mol, molar volume 24.45 l): the EPA reference conditions of
# the AQI breakpoints. U4SSC gives no CO factor (its ppb factors cover NO2, SO2 and O3 only).
CO_MG_M3_PER_PPM: Final = 1.145
RUNNING_8H: Final = "8h_running"  # window label of the 8-hour running means

# Every series this module emits: name -> (windows, unit). docs/kpis.md documents each one.
SERIES: Final[dict[str, tuple[tuple[str, ...], str]]] = {
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
    "lday": (("1d",), "dBA"),
    "levening": (("1d",), "dBA"),
    "lnight": (("1d",), "dBA"),
    "lden": (("1d",), "dBA"),
    "water_consumption": (("1d",), "m3"),
    "water_consumption_per_capita": (("1d",), "l/capita/day"),
    "minimum_night_flow": (("1d",), "m3/h"),
    "energy_consumption": (("1d",), "kWh"),
    "energy_consumption_per_capita": (("1d",), "kWh/capita/day"),
    "peak_demand": (("1d",), "kW"),
    "traffic_volume": (("1h", "1d"), "veh"),
    "traffic_peak_hour": (("1d",), "veh/h"),
    "traffic_phf": (("1d",), "1"),
    "traffic_class_share": (("1d",), "%"),
}

_PM: Final = ("pm2_5", "pm10")
_EAQI_GASES: Final = ("no2", "o3", "so2")
_RUNNING: Final = ("o3", "co")  # 8-h running means (US AQI o3_8h / co_8h, WHO O3, CAQI CO)
_CAQI_HOURLY: Final = ("pm2_5", "pm10", "no2", "o3", "so2")
_O3_FIRST_START: Final = 7  # EPA: the day's 17 8-h means start at 07:00 … 23:00 local
_O3_NEED_MEANS: Final = 13  # of those 17
_MEAN8_NEED: Final = 6  # valid hours of 8 for an 8-h mean
_AIR: Final = frozenset((*_PM, *_EAQI_GASES, "co"))  # hourly history kept HISTORY_HOURS (running means, NowCast)
_DAY_ONLY: Final = frozenset(("noise_laeq", "water_volume", "water_flow", "energy_import", "vehicle_count"))
_QUARTERLY: Final = frozenset(("energy_import", "vehicle_count"))  # 15-min bins: peak demand, peak hour
_WHO: Final = ("pm2_5", "pm10", "no2", "so2", "co")
_AQI_TAGS: Final = {"standard": "US EPA AQI 2024", "u4ssc": "EN:EN:AQ:1C"}
_NOISE_TAGS: Final = {"standard": "Directive 2002/49/EC Annex I", "u4ssc": "EN:EN:EQ:2A"}
_WATER_TAGS: Final = {"standard": "U4SSC KPI water consumption", "u4ssc": "EN:EN:WS:2C"}
_MNF_TAGS: Final = {"standard": "IWA minimum night flow", "u4ssc": "EC:I:WS:3C"}
_ENERGY_TAGS: Final = {"standard": "U4SSC KPI electricity consumption", "u4ssc": "EN:E:E:2C"}
_DEMAND_TAGS: Final = {"standard": "15-min demand (max interval energy x 4)", "u4ssc": "EN:E:E:2C"}
_TRAFFIC_TAGS: Final = {"standard": "HCM", "u4ssc": "EC:ICT:T:2C"}
_AQI_SENTINEL_BEYOND: Final = 501.0  # "Beyond the AQI": category_of(501) is "Beyond the AQI"; never an index


class KpiOptions(BaseModel):
    """The [kpis] section of the config: which indicators to derive and their parameters."""

    model_config = ConfigDict(extra="forbid")

    indicators: list[IndicatorGroup] = list(INDICATOR_GROUPS)  # type: ignore[arg-type]
    population: int | None = Field(None, gt=0)  # inhabitants served by the kit's meters (per capita series)
    aggregate_id: str = Field("kit", min_length=1)  # device_id of kit-wide series (water per capita)
    lden_day_start: int = Field(7, ge=0, le=23)
    lden_evening_start: int = Field(19, ge=0, le=23)
    lden_night_start: int = Field(23, ge=0, le=24)
    eaqi_table: str = "2021"
    eaqi_station_type: Literal["traffic", "background", "industrial"] | None = None
    who_level: Literal["IT-1", "IT-2", "IT-3", "IT-4", "AQG"] = "AQG"
    water_night_start: int = Field(2, ge=0, le=23)
    water_night_end: int = Field(4, ge=1, le=24)
    water_meters: list[str] = []  # water_volume devices summed for per capita; empty: every meter seen
    energy_meters: list[str] = []  # energy_import devices summed for per capita; empty: every meter seen
    traffic_report_interval: str = "15m"  # how often a counter reports a count (completeness of hours/bins)
    traffic_classes: list[str] = ["car_count", "heavy_vehicle_count", "bike_count"]
    min_day_coverage: float = Field(0.75, gt=0, le=1)  # share of a day's hours (or bins) that must be complete

    @field_validator("eaqi_table")
    @classmethod
    def _table(cls, value: str) -> str:
        if value not in EAQI_TABLES:
            raise ValueError(f"unknown EAQI table {value!r}; tables: {', '.join(EAQI_TABLES)}")
        return value

    @field_validator("traffic_report_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        ns = parse_duration_ns(value)
        if ns <= 0 or H % ns:
            raise ValueError(f"traffic_report_interval {value!r} must divide one hour (e.g. 1m, 5m, 15m, 1h)")
        return value

    @model_validator(mode="after")
    def _periods(self) -> KpiOptions:
        # The END periods: day [day, evening), evening [evening, night), night the rest (wrapping midnight).
        if not self.lden_day_start < self.lden_evening_start < self.lden_night_start:
            raise ValueError("need lden_day_start < lden_evening_start < lden_night_start (local hours)")
        lden_from_hourly([50.0] * 24, self.den_day, self.den_evening)  # raises with the reason
        if not self.water_night_start < self.water_night_end:
            raise ValueError("need water_night_start < water_night_end (local hours)")
        return self

    @property
    def den_day(self) -> tuple[int, int]:
        """The END day period as (start, end) local hours."""
        return (self.lden_day_start, self.lden_evening_start)

    @property
    def den_evening(self) -> tuple[int, int]:
        """The END evening period as (start, end) local hours."""
        return (self.lden_evening_start, self.lden_night_start)


# An hourly record: [value, valid (0/1), count]. value is the window's headline: mean (energetic for dB),
# consumption for meters, sum for counts.
_Rec = list[Any]


def _need(fraction: float, total: int) -> int:
    """How many of `total` items a completeness share requires (18 of 24 hours at 0.75)."""
    return max(1, math.ceil(fraction * total - 1e-9))


class DerivedKpis:
    """Turns closed window points into indicator points; its state survives restarts via `state()`."""

    def __init__(self, options: KpiOptions, timezone: str = "UTC") -> None:
        self.options = options
        self.timezone = timezone
        self.tz = ZoneInfo(timezone)
        self.on = frozenset(options.indicators)
        self._per_report = max(1, H // parse_duration_ns(options.traffic_report_interval))
        # Only quantities an indicator uses are kept; the others (temperature, particle counts…) cost nothing.
        self._day_only = _DAY_ONLY | frozenset(options.traffic_classes)
        self._hourly: dict[tuple[str, str], dict[int, _Rec]] = {}
        self._quarters: dict[tuple[str, str], dict[int, _Rec]] = {}
        self._units: dict[tuple[str, str], str] = {}
        self._tags: dict[str, dict[str, str]] = {}
        self._water_meters: dict[str, int] = {}  # water_volume meter -> last hour it reported
        self._energy_meters: dict[str, int] = {}  # energy_import meter -> last hour it reported
        self._horizon = 0  # the latest end of a closed hourly window: every hour before it is closed
        # Event time up to which every source's windows are closed (windows close per device): a day is
        # complete only once the slowest device's last hour of it has closed too.
        self._all_closed: int | None = None
        self._done_until = 0  # local midnight up to which day series have been emitted
        self._max8_until = 0  # local midnight up to which daily max 8-h series have been emitted

    # -- the contract ----------------------------------------------------------------------------------------

    def feed(self, points: Sequence[KpiPoint], closed_everywhere: int | None = None) -> list[KpiPoint]:
        """Indicator points that these closed windows complete.

        `closed_everywhere`: event time up to which every device's windows are closed (the window engine's
        slowest source); day series wait for it. None: the newest closed hour decides, as for one device.
        """
        self._all_closed = closed_everywhere
        out: list[KpiPoint] = []
        new_hours: dict[int, set[str]] = {}
        for p in points:
            size = p.end_ns - p.start_ns
            key = (p.device_id, p.name)
            if size == H and p.window != "1d":
                self._horizon = max(self._horizon, p.end_ns)
                if p.name not in _AIR and p.name not in self._day_only:
                    continue
                self._units[key] = p.unit
                self._remember_tags(p)
                self._hourly.setdefault(key, {})[p.start_ns] = [float(p.value), int(p.valid),
                                                                int(p.fields.get("count", 0))]
                new_hours.setdefault(p.start_ns, set()).add(p.device_id)
                if p.name == "water_volume":
                    self._water_meters[p.device_id] = max(p.start_ns, self._water_meters.get(p.device_id, 0))
                if p.name == "energy_import":
                    self._energy_meters[p.device_id] = max(p.start_ns, self._energy_meters.get(p.device_id, 0))
            elif size == Q and p.name in _QUARTERLY:
                self._units[key] = p.unit
                self._quarters.setdefault(key, {})[p.start_ns] = [float(p.value), int(p.valid),
                                                                  int(p.fields.get("count", 0))]
            elif p.window == "1d":
                self._remember_tags(p)
                out.extend(self._daily_window(p))
        for hour in sorted(new_hours):
            for device in sorted(new_hours[hour]):
                out.extend(self._hour_series(device, hour))
        out.extend(self._complete_days())
        out.extend(self._complete_max8_days())
        self._prune()
        return out

    def state(self) -> dict[str, Any]:
        """JSON-able state to persist with the window horizon."""
        return {
            "version": 1,
            "horizon": self._horizon,
            "done_until": self._done_until,
            "hourly": [[d, q, self._units.get((d, q), ""), sorted(recs.items())]
                       for (d, q), recs in sorted(self._hourly.items())],
            "quarters": [[d, q, sorted(recs.items())] for (d, q), recs in sorted(self._quarters.items())],
            "units": [[d, q, u] for (d, q), u in sorted(self._units.items())],
            "tags": {d: dict(t) for d, t in sorted(self._tags.items())},
            "water_meters": sorted(self._water_meters.items()),
            "energy_meters": sorted(self._energy_meters.items()),
            "max8_until": self._max8_until,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Restore what `state()` returned."""
        if not state or state.get("version") != 1:
            return
        self._horizon = int(state["horizon"])
        self._done_until = int(state["done_until"])
        self._units = {(d, q): u for d, q, u in state.get("units", [])}
        self._hourly = {(d, q): {int(ts): list(rec) for ts, rec in recs} for d, q, _u, recs in state["hourly"]}
        self._quarters = {(d, q): {int(ts): list(rec) for ts, rec in recs} for d, q, recs in state["quarters"]}
        self._tags = {d: dict(t) for d, t in state.get("tags", {}).items()}
        self._water_meters = {d: int(ts) for d, ts in state.get("water_meters", [])}
        self._energy_meters = {d: int(ts) for d, ts in state.get("energy_meters", [])}
        self._max8_until = int(state.get("max8_until", 0))

    # -- helpers ---------------------------------------------------------------------------------------------

    def _remember_tags(self, p: KpiPoint) -> None:
        if p.tags:
            self._tags[p.device_id] = dict(p.tags)

    def _point(self, name: str, device: str, window: str, start: int, end: int, unit: str, value: float,
               fields: Mapping[str, Any], tags: Mapping[str, str], valid: bool) -> KpiPoint:
        merged = {**self._tags.get(device, {}), **tags}
        return KpiPoint(name, device, window, start, end, unit, float(value), dict(fields), merged, bool(valid))

    def _rec(self, device: str, quantity: str, hour: int) -> _Rec | None:
        return self._hourly.get((device, quantity), {}).get(hour)

    def _valid_value(self, device: str, quantity: str, hour: int) -> float | None:
        rec = self._rec(device, quantity, hour)
        return float(rec[0]) if rec is not None and rec[1] else None

    def _local(self, ts_ns: int) -> datetime:
        return datetime.fromtimestamp(ts_ns // 1_000_000_000, self.tz)

    def _day_bounds(self, ts_ns: int) -> tuple[int, int]:
        """[local midnight, next local midnight) around ts_ns, in UTC ns (23 or 25 h across DST)."""
        midnight = self._local(ts_ns).replace(hour=0, minute=0, second=0, microsecond=0)
        nxt = (midnight.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=self.tz)
        return int(midnight.timestamp()) * 1_000_000_000, int(nxt.timestamp()) * 1_000_000_000

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

    # -- hourly series ---------------------------------------------------------------------------------------

    def _hour_series(self, device: str, hour: int) -> list[KpiPoint]:
        out: list[KpiPoint] = []
        end = hour + H
        for q in _PM:
            if self._rec(device, q, hour) is None or self._units.get((device, q)) != "ug/m3":
                continue
            history = [self._valid_value(device, q, hour - k * H) for k in range(11, -1, -1)]
            nc = nowcast(history, q)
            if nc is None:
                continue  # fewer than 2 of the last 3 hours: NowCast undefined, nothing to report
            hours = sum(v is not None for v in history)
            if "nowcast" in self.on:
                out.append(self._point(f"nowcast_{q}", device, "1h", hour, end, "ug/m3", nc, {"hours": hours},
                                       {"standard": "EPA PM NowCast"}, True))
            if "us_aqi" in self.on:
                value, fields = self._aqi(f"{q}_24h", nc)
                out.append(self._point("us_aqi", device, "1h", hour, end, "AQI", value, fields,
                                       {**_AQI_TAGS, "pollutant": q, "averaging": "nowcast"}, True))
        if "eaqi" in self.on:
            out.extend(self._eaqi(device, hour))
        if "us_aqi" in self.on or "who" in self.on:
            out.extend(self._running_8h(device, hour))
        if "caqi" in self.on:
            out.extend(self._caqi(device, hour))
        if "traffic" in self.on:
            rec = self._rec(device, "vehicle_count", hour)
            if rec is not None:
                out.append(self._point("traffic_volume", device, "1h", hour, end, "veh", rec[0],
                                       {"reports": int(rec[2])}, {**_TRAFFIC_TAGS, "standard": "HCM hourly volume"},
                                       rec[2] >= self._per_report))
        return out

    def _eaqi(self, device: str, hour: int) -> list[KpiPoint]:
        if not any(self._rec(device, q, hour) is not None for q in (*_PM, *_EAQI_GASES)):
            return []
        conc: dict[str, float] = {}
        for q in _PM:
            if self._units.get((device, q)) != "ug/m3":
                continue
            # PM: 24-h running mean of the hourly means ending with this hour, valid with 18 of 24 hours.
            values = [v for k in range(24) if (v := self._valid_value(device, q, hour - k * H)) is not None]
            if len(values) >= _need(0.75, 24):
                conc[q] = sum(values) / len(values)
        for q in _EAQI_GASES:
            v = self._valid_value(device, q, hour)
            unit = self._units.get((device, q), "")
            if v is not None and unit in ("ug/m3", "ppb", "ppm"):
                conc[q] = to_ugm3(q, max(v, 0.0), unit)
        if not conc:
            return []
        o = eaqi_overall(conc, self.options.eaqi_table, self.options.eaqi_station_type)
        fields: dict[str, Any] = {"critical_pollutant": o.pollutant}
        for q, c in conc.items():
            fields[f"{q}_ugm3"] = float(c)
        tags = {"standard": f"EEA EAQI {self.options.eaqi_table}", "band": o.band, "table": self.options.eaqi_table}
        return [self._point("eaqi", device, "1h", hour, hour + H, "level", o.level, fields, tags,
                            o.complete is not False)]

    # -- 8-hour running means (O3, CO) and the CAQI ---------------------------------------------------------

    def _ppm(self, device: str, quantity: str, value: float) -> float | None:
        """An O3 or CO concentration in ppm (the AQI unit), or None for a unit without a documented factor."""
        unit = self._units.get((device, quantity), "")
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
        values = [v for k in range(8) if (v := self._valid_value(device, quantity, start + k * H)) is not None]
        if not values:
            return None
        return sum(values) / len(values), len(values)

    def _running_8h(self, device: str, hour: int) -> list[KpiPoint]:
        # The hour that just closed completes the 8-h mean [hour - 7 h, hour + 1 h), labelled by its start (EPA).
        out: list[KpiPoint] = []
        start = hour - 7 * H
        for q in _RUNNING:
            if self._rec(device, q, hour) is None:
                continue
            m = self._mean8(device, q, start)
            if m is None:
                continue
            ppm = self._ppm(device, q, m[0])
            if ppm is None:
                continue
            out.append(self._point(f"{q}_8h", device, RUNNING_8H, start, hour + H, "ppm", ppm,
                                   {"hours": m[1]}, {"standard": "US EPA 8-h running mean"}, m[1] >= _MEAN8_NEED))
        return out

    def _caqi(self, device: str, hour: int) -> list[KpiPoint]:
        if not any(self._rec(device, q, hour) is not None for q in (*_CAQI_HOURLY, "co")):
            return []
        conc: dict[str, float] = {}
        for q in _CAQI_HOURLY:
            v = self._valid_value(device, q, hour)
            unit = self._units.get((device, q), "")
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
        return [self._point("caqi", device, "1h", hour, hour + H, "index", o.index, fields,
                            {"standard": "CITEAIR CAQI hourly", "band": o.band}, valid)]

    def _complete_max8_days(self) -> list[KpiPoint]:
        """Emit the daily max 8-h series of every local day whose last 8-h mean (23:00 + 8 h) has closed."""
        if "us_aqi" not in self.on and "who" not in self.on:
            return []
        first = self._max8_until or min((min(recs) for (_d, q), recs in self._hourly.items()
                                         if q in _RUNNING and recs), default=0)
        if not first:
            return []
        out: list[KpiPoint] = []
        d0, d1 = self._day_bounds(first)
        while d1 + 7 * H <= self._day_limit():
            out.extend(self._max8_day(d0, d1))
            d0, d1 = d1, self._day_bounds(d1)[1]
        self._max8_until = d0
        return out

    def _max8_day(self, d0: int, d1: int) -> list[KpiPoint]:
        out: list[KpiPoint] = []
        for (device, q), recs in sorted(self._hourly.items()):
            if q not in _RUNNING or not any(d0 <= h < d1 + 7 * H for h in recs):
                continue
            if q == "o3":  # EPA: the 17 means starting 07:00 … 23:00 local, 13 of them needed
                starts = [h for h in range(d0, d1, H) if self._local(h).hour >= _O3_FIRST_START]
                need = _O3_NEED_MEANS
            else:  # CO: every 8-h mean starting in the local day, `min_day_coverage` of them needed
                starts = list(range(d0, d1, H))
                need = _need(self.options.min_day_coverage, len(starts))
            means = {s: m[0] for s in starts if (m := self._mean8(device, q, s)) is not None and m[1] >= _MEAN8_NEED}
            if not means:
                continue
            peak_start = max(means, key=lambda s: (means[s], -s))  # ties: the earliest mean
            ppm = self._ppm(device, q, means[peak_start])
            if ppm is None:
                continue
            valid = len(means) >= need
            fields: dict[str, Any] = {"means": len(means), "peak_start": peak_start}
            out.append(self._point(f"{q}_8h_max", device, "1d", d0, d1, "ppm", ppm, fields,
                                   {"standard": "US EPA daily max 8-h mean"}, valid))
            if "us_aqi" in self.on:
                r = us_aqi(f"{q}_8h", max(ppm, 0.0))
                # O3 8-h above 0.200 ppm hands over to the 1-h scale (not produced here): no 8-h index exists.
                if r.status in ("ok", "beyond"):
                    value, aqi_fields = self._aqi(f"{q}_8h", max(ppm, 0.0))
                    aqi_fields["means"] = len(means)
                    out.append(self._point("us_aqi", device, "1d", d0, d1, "AQI", value, aqi_fields,
                                           {**_AQI_TAGS, "pollutant": q, "averaging": "8h"}, valid))
            if q == "o3" and "who" in self.on:
                try:
                    limit = guideline("o3", "24h", self.options.who_level)
                except ValueError:
                    continue  # IT-3 / IT-4 have no O3 value
                ugm3 = max(ppm, 0.0) * 1000.0 * PPB_TO_UGM3["o3"]
                if self._units.get((device, q)) == "ug/m3":
                    ugm3 = max(means[peak_start], 0.0)  # no round trip through ppm
                out.append(self._point("who_exceedance", device, "1d", d0, d1, "1", 1.0 if ugm3 > limit else 0.0,
                                       {"mean": float(ugm3), "guideline": float(limit)},
                                       {"standard": "WHO AQG 2021", "pollutant": "o3", "level": self.options.who_level,
                                        "averaging": "daily max 8h"}, valid))
        return out

    # -- daily series from "1d" windows ----------------------------------------------------------------------

    def _daily_window(self, p: KpiPoint) -> list[KpiPoint]:
        out: list[KpiPoint] = []
        if p.name in _PM and p.unit == "ug/m3" and "us_aqi" in self.on:
            value, fields = self._aqi(f"{p.name}_24h", max(p.value, 0.0))
            fields["coverage"] = float(p.fields.get("coverage", 0.0))
            out.append(self._point("us_aqi", p.device_id, "1d", p.start_ns, p.end_ns, "AQI", value, fields,
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
            out.append(self._point("who_exceedance", p.device_id, "1d", p.start_ns, p.end_ns, "1",
                                   1.0 if conc > limit else 0.0, {"mean": float(conc), "guideline": float(limit)},
                                   {"standard": "WHO AQG 2021", "pollutant": p.name,
                                    "level": self.options.who_level}, p.valid))
        return out

    # -- daily series from hourly windows ---------------------------------------------------------------------

    def _complete_days(self) -> list[KpiPoint]:
        """Emit the day series of every local day that ended at or before the hourly horizon."""
        limit = self._day_limit()
        if limit <= self._done_until:
            return []
        out: list[KpiPoint] = []
        first = self._done_until or min((min(recs) for recs in self._hourly.values() if recs), default=0)
        if first:
            d0, d1 = self._day_bounds(first)
            while d1 <= limit:
                out.extend(self._day_series(d0, d1))
                d0, d1 = d1, self._day_bounds(d1)[1]
        self._done_until = max(self._done_until, self._day_bounds(limit)[0])
        return out

    def _day_limit(self) -> int:
        """Days ending at or before this are complete: every device's hours of them have closed."""
        if self._all_closed is None:
            return self._horizon
        return min(self._horizon, self._all_closed)

    def _day_hours(self, d0: int, d1: int) -> list[int]:
        return list(range(d0, d1, H))

    def _day_series(self, d0: int, d1: int) -> list[KpiPoint]:
        out: list[KpiPoint] = []
        hours = self._day_hours(d0, d1)
        by_device: dict[str, set[str]] = {}
        for (d, q), recs in self._hourly.items():
            if any(d0 <= h < d1 for h in recs):
                by_device.setdefault(d, set()).add(q)
        water_days: dict[str, tuple[float, bool]] = {}
        energy_days: dict[str, tuple[float, bool]] = {}
        for device in sorted(by_device):
            present = by_device[device]
            if "noise" in self.on and "noise_laeq" in present and self._units.get((device, "noise_laeq")) == "dBA":
                out.extend(self._noise_day(device, d0, d1, hours))
            if "water" in self.on and "water_volume" in present:
                points, total, valid = self._meter_day(device, "water_volume", "water_consumption", "m3",
                                                       _WATER_TAGS, d0, d1, hours)
                out.extend(points)
                water_days[device] = (total, valid)
            if "water" in self.on and ("water_volume" in present or "water_flow" in present):
                out.extend(self._night_flow(device, "water_volume" if "water_volume" in present else "water_flow",
                                            d0, d1, hours))
            if "energy" in self.on and "energy_import" in present:
                points, total, valid = self._meter_day(device, "energy_import", "energy_consumption", "kWh",
                                                       _ENERGY_TAGS, d0, d1, hours)
                out.extend(points)
                energy_days[device] = (total, valid)
                out.extend(self._peak_demand(device, d0, d1))
            if "traffic" in self.on:
                if "vehicle_count" in present:
                    out.extend(self._traffic_day(device, d0, d1, hours))
                classes = [q for q in self.options.traffic_classes if q in present]
                if classes:
                    out.extend(self._class_shares(device, classes, d0, d1, hours))
        if "water" in self.on and self.options.population and water_days:
            out.extend(self._per_capita(water_days, d0, d1))
        if "energy" in self.on and self.options.population and energy_days:
            out.extend(self._energy_per_capita(energy_days, d0, d1))
        return out

    def _noise_day(self, device: str, d0: int, d1: int, hours: list[int]) -> list[KpiPoint]:
        # Slot h holds the local clock hour h. On the autumn DST day the repeated hour's two LAeq values share
        # their slot (energetic mean); on the spring day the skipped hour is simply missing.
        slots: list[list[float]] = [[] for _ in range(24)]
        for hour in hours:
            v = self._valid_value(device, "noise_laeq", hour)
            if v is not None:
                slots[self._local(hour).hour].append(v)
        levels: list[float | None] = [laeq(s) if s else None for s in slots]
        o = self.options
        day_h = [(o.lden_day_start + k) % 24 for k in range(o.lden_evening_start - o.lden_day_start)]
        eve_h = [(o.lden_evening_start + k) % 24 for k in range(o.lden_night_start - o.lden_evening_start)]
        night_h = [h for h in range(24) if h not in day_h and h not in eve_h]
        periods = {"lday": day_h, "levening": eve_h, "lnight": night_h}
        have = {name: [levels[h] for h in hs if levels[h] is not None] for name, hs in periods.items()}
        # Hourly values per period (9 night hours on the 25-hour day), against the period's nominal length.
        n_hours = {name: sum(len(slots[h]) for h in hs) for name, hs in periods.items()}
        ok = {name: n_hours[name] >= _need(o.min_day_coverage, len(periods[name])) for name in periods}
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
            out.append(self._point(name, device, "1d", d0, d1, "dBA", values[name], fields, _NOISE_TAGS, valid))
        return out

    def _meter_day(self, device: str, quantity: str, name: str, unit: str, tags: Mapping[str, str], d0: int,
                   d1: int, hours: list[int]) -> tuple[list[KpiPoint], float, bool]:
        recs = [r for h in hours if (r := self._rec(device, quantity, h)) is not None and r[2] > 0]
        total = float(sum(r[0] for r in recs))
        # A meter's hourly consumption chains reading to reading, so gaps do not lose volume; the day counts as
        # complete when enough of its hours hold a reading (the boundaries are then pinned within the hour).
        valid = len(recs) >= _need(self.options.min_day_coverage, len(hours))
        point = self._point(name, device, "1d", d0, d1, unit, total, {"hours": len(recs)}, tags, valid)
        return [point], total, valid

    def _night_flow(self, device: str, quantity: str, d0: int, d1: int, hours: list[int]) -> list[KpiPoint]:
        o = self.options
        night = [h for h in hours if o.water_night_start <= self._local(h).hour < o.water_night_end]
        flows: dict[int, float] = {}
        for h in night:
            rec = self._rec(device, quantity, h)
            if rec is None:
                continue
            # water_volume: the hour's consumption in m³ is its mean flow in m³/h; water_flow: the hourly mean.
            if (quantity == "water_volume" and rec[2] > 0) or (quantity == "water_flow" and rec[1]):
                flows[h] = float(rec[0])
        if not flows:
            return []
        mnf = min(minimum_night_flow(flows, self.tz, o.water_night_start, o.water_night_end).values())
        return [self._point("minimum_night_flow", device, "1d", d0, d1, "m3/h", mnf,
                            {"hours": len(flows)}, {**_MNF_TAGS, "source": quantity},
                            len(flows) == len(night))]

    def _bins(self, device: str, quantity: str, d0: int, d1: int) -> list[_Rec | None]:
        recs = self._quarters.get((device, quantity), {})
        return [recs.get(t) for t in range(d0, d1, Q)]

    def _peak_demand(self, device: str, d0: int, d1: int) -> list[KpiPoint]:
        bins = self._bins(device, "energy_import", d0, d1)
        present = [r is not None and r[2] > 0 for r in bins]
        if not any(present):
            return []
        energies = [float(r[0]) if r is not None and r[2] > 0 else None for r in bins]
        kw = peak_demand_kw(energies, 15)
        top = max(e for e in energies if e is not None)
        first = energies.index(top)  # ties: the earliest interval
        fields = {"peak_start": d0 + first * Q, "intervals": sum(present)}
        valid = sum(present) >= _need(self.options.min_day_coverage, len(bins))
        return [self._point("peak_demand", device, "1d", d0, d1, "kW", kw, fields, _DEMAND_TAGS, valid)]

    def _traffic_day(self, device: str, d0: int, d1: int, hours: list[int]) -> list[KpiPoint]:
        recs = [self._rec(device, "vehicle_count", h) for h in hours]
        complete = sum(1 for r in recs if r is not None and r[2] >= self._per_report)
        total = float(sum(r[0] for r in recs if r is not None))
        need_h = _need(self.options.min_day_coverage, len(hours))
        out = [self._point("traffic_volume", device, "1d", d0, d1, "veh", total, {"hours": complete},
                           {**_TRAFFIC_TAGS, "standard": "daily traffic volume"}, complete >= need_h)]
        bins = self._bins(device, "vehicle_count", d0, d1)
        per_bin = max(1, self._per_report // 4)
        reported = [r is not None and r[2] >= per_bin for r in bins]
        if not any(r is not None for r in bins) or len(bins) < 4:
            return out
        counts = [float(r[0]) if r is not None else 0.0 for r in bins]
        peak = peak_hour_factor(counts)
        start = d0 + peak.start_index * Q
        valid = (sum(reported) >= _need(self.options.min_day_coverage, len(bins))
                 and all(reported[peak.start_index:peak.start_index + 4]))
        fields = {"peak_start": start, "peak_15min": peak.peak_15min}
        out.append(self._point("traffic_peak_hour", device, "1d", d0, d1, "veh/h", peak.volume, fields,
                               {**_TRAFFIC_TAGS, "standard": "HCM peak hour"}, valid))
        if peak.phf is not None:
            out.append(self._point("traffic_phf", device, "1d", d0, d1, "1", peak.phf,
                                   {**fields, "volume": peak.volume},
                                   {**_TRAFFIC_TAGS, "standard": "HCM peak-hour factor"}, valid))
        return out

    def _class_shares(self, device: str, classes: list[str], d0: int, d1: int, hours: list[int]) -> list[KpiPoint]:
        sums: dict[str, float] = {}
        complete = True
        need_h = _need(self.options.min_day_coverage, len(hours))
        for q in classes:
            recs = [self._rec(device, q, h) for h in hours]
            sums[q] = float(sum(r[0] for r in recs if r is not None))
            complete = complete and sum(1 for r in recs if r is not None and r[2] >= self._per_report) >= need_h
        shares = class_shares(sums)
        total = sum(sums.values())
        out: list[KpiPoint] = []
        for q in classes:
            share = shares[q]
            if share is None:
                return []
            out.append(self._point("traffic_class_share", device, "1d", d0, d1, "%", 100.0 * share,
                                   {"vehicles": sums[q], "total": total},
                                   {**_TRAFFIC_TAGS, "standard": "class shares", "class": q.removesuffix("_count")},
                                   complete))
        return out

    def _meter_set(self, days: dict[str, tuple[float, bool]], configured: list[str], seen: dict[str, int],
                   d0: int) -> tuple[list[str], float, bool]:
        """The per-capita meter set of a day: its meters, their summed total and whether it is complete."""
        # Default set: the meters heard in the last week (a meter silent for longer has been removed).
        recent = {m for m, last in seen.items() if last >= d0 - METER_MEMORY_DAYS * 24 * H}
        wanted = set(configured) or recent
        meters = sorted(wanted & set(days))
        total = sum(days[m][0] for m in meters)
        # Complete only when every meter of the set reported a complete day (a silent meter is not zero use).
        valid = bool(meters) and len(meters) == len(wanted) and all(days[m][1] for m in meters)
        return meters, total, valid

    def _energy_per_capita(self, energy_days: dict[str, tuple[float, bool]], d0: int, d1: int) -> list[KpiPoint]:
        meters, energy, valid = self._meter_set(energy_days, self.options.energy_meters, self._energy_meters, d0)
        if not meters or self.options.population is None:
            return []
        value = kwh_per_capita(energy, self.options.population)  # one day's kWh per inhabitant
        fields = {"energy": energy, "population": int(self.options.population), "meters": len(meters)}
        return [KpiPoint("energy_consumption_per_capita", self.options.aggregate_id, "1d", d0, d1,
                         "kWh/capita/day", value, fields, dict(_ENERGY_TAGS), valid)]

    def _per_capita(self, water_days: dict[str, tuple[float, bool]], d0: int, d1: int) -> list[KpiPoint]:
        meters, volume, valid = self._meter_set(water_days, self.options.water_meters, self._water_meters, d0)
        if not meters or self.options.population is None:
            return []
        value = per_capita_l_per_day(volume, self.options.population, 1)
        fields = {"volume": volume, "population": int(self.options.population), "meters": len(meters)}
        return [KpiPoint("water_consumption_per_capita", self.options.aggregate_id, "1d", d0, d1, "l/capita/day",
                         value, fields, dict(_WATER_TAGS), valid)]

    # -- memory bound ---------------------------------------------------------------------------------------

    def _prune(self) -> None:
        """Keep at most HISTORY_HOURS hourly values of air series, and only the open day of the others."""
        keep_air = self._horizon - HISTORY_HOURS * H
        for key in list(self._hourly):
            recs = self._hourly[key]
            keep_h = keep_air if key[1] in _AIR else self._done_until
            for ts in [t for t in recs if t < keep_h]:
                del recs[ts]
            if not recs:
                del self._hourly[key]
        for key in list(self._quarters):
            recs = self._quarters[key]
            for ts in [t for t in recs if t < self._done_until]:
                del recs[ts]
            if not recs:
                del self._quarters[key]

