"""The [kpis] config section (`KpiOptions`) and the time steps every indicator group shares."""

from __future__ import annotations

import math
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aggregators.eaqi import EAQI_TABLES
from aggregators.noise import lden_from_hourly
from aggregators.windows import parse_duration_ns

__all__ = ["INDICATOR_GROUPS", "H", "IndicatorGroup", "KpiOptions", "Q", "need"]

H: Final = 3_600_000_000_000
Q: Final = 900_000_000_000  # 15 minutes

IndicatorGroup = Literal["nowcast", "us_aqi", "eaqi", "caqi", "who", "noise", "water", "energy", "traffic"]
INDICATOR_GROUPS: Final[tuple[str, ...]] = ("nowcast", "us_aqi", "eaqi", "caqi", "who", "noise", "water",
                                           "energy", "traffic")


def need(fraction: float, total: int) -> int:
    """How many of `total` items a completeness share requires (18 of 24 hours at 0.75)."""
    return max(1, math.ceil(fraction * total - 1e-9))


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
