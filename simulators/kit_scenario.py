"""Simulated days of a whole kit: seeded signal models per quantity, played on a simulated clock.

A scenario is derived from the kit's device list (id, kind quantities, tags), so any deployable kit file can
be simulated: every quantity that has a model below gets readings, the rest are not simulated.

| quantity | model | cadence |
|---|---|---|
| pm2_5, pm10 | rush-hour diurnal profile × a seeded day factor (pollution episodes) + AR(1) noise | 1 min |
| no2 / o3 / so2 | rush-hour (NO2), afternoon sine (O3), low background (SO2) | 1 min |
| noise_laeq | rush-hour profile, quiet nights | 1 min |
| energy_import | building load curve (office hours on weekdays) integrated to a cumulative kWh total | 1 min |
| water_volume | household draw (morning and evening peaks, night minimum) integrated to a cumulative m³ total | 1 min |
| vehicle_count, car_count, heavy_vehicle_count, bike_count, pedestrian_count | Poisson counts, rush-hour | 15 min |

Counts: vehicle = car + heavy; a count covers [t, t + 15 min) and is stamped t (the interval start).

Profiles follow the kit's local time. Everything is deterministic for a seed.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from devices.reading import Reading
from simulators.signals import DiurnalSignal, rush_hour_factor

__all__ = ["MODELLED", "DeviceSpec", "KitScenario"]

S = 1_000_000_000
_TRAFFIC = ("vehicle_count", "car_count", "heavy_vehicle_count", "bike_count", "pedestrian_count")
# Quantities with a signal model (others of a kit's devices are not simulated).
MODELLED = frozenset({"pm2_5", "pm10", "no2", "o3", "so2", "noise_laeq", "energy_import", "water_volume",
                      *_TRAFFIC})


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device to simulate: its id, the (quantity, unit) pairs it reports, and its tags."""

    device_id: str
    quantities: tuple[tuple[str, str], ...]
    tags: Mapping[str, str] = field(default_factory=dict)


def _seed(*parts: object) -> int:
    """A stable seed from any parts (crc32, not hash(), which is salted per process)."""
    return zlib.crc32("\x1f".join(str(p) for p in parts).encode())


class _DayFactor:
    """A seeded multiplier per local day: some days are polluted episodes, some are clean."""

    def __init__(self, seed: int, low: float, high: float) -> None:
        self.seed, self.low, self.high = seed, low, high

    def __call__(self, day: int) -> float:
        return random.Random(self.seed * 1_000_003 + day).uniform(self.low, self.high)


Model = Callable[[float, datetime], dict[str, float]]  # (utc seconds, local time) -> {quantity: value}


def _level(signal: DiurnalSignal, quantity: str, day_factor: _DayFactor | None = None) -> Model:
    def model(t_s: float, local: datetime) -> dict[str, float]:
        offset = local.utcoffset()
        local_s = t_s + (offset.total_seconds() if offset else 0.0)
        value = signal.value_at(local_s)
        if day_factor is not None:
            value *= day_factor(local.toordinal())
        return {quantity: round(value, 2)}

    return model


def _office_load(hour: float, weekday: int) -> float:
    """Building load share 0..1: base load, office hours 08-19 on weekdays, a little on weekends."""
    bump = 1.0 / (1.0 + math.exp(-(hour - 8.0) * 2.0)) - 1.0 / (1.0 + math.exp(-(hour - 19.0) * 2.0))
    return 0.25 + (0.75 if weekday < 5 else 0.2) * bump


def _household_flow(hour: float) -> float:
    """Household water draw in m³/h: morning and evening peaks, a small night minimum (leaks, cisterns)."""
    morning = math.exp(-((hour - 7.5) ** 2) / (2 * 1.0**2))
    evening = math.exp(-((hour - 20.5) ** 2) / (2 * 1.5**2))
    day = 0.25 if 9 <= hour <= 18 else 0.0
    return 0.03 + 0.9 * morning + 0.6 * evening + 0.2 * day


class _Meter:
    """Integrates a rate (per hour) into a cumulative total, one reading per call."""

    def __init__(self, quantity: str, rate: Callable[[float, int], float], seed: int, total: float,
                 noise: float, digits: int) -> None:
        self.quantity = quantity
        self.rate = rate
        self.rng = random.Random(seed)
        self.total = total
        self.noise = noise
        self.digits = digits
        self.last_s: float | None = None

    def __call__(self, t_s: float, local: datetime) -> dict[str, float]:
        if self.last_s is not None:
            hour = local.hour + local.minute / 60.0
            rate = max(0.0, self.rate(hour, local.weekday()) * (1.0 + self.rng.gauss(0.0, self.noise)))
            self.total += rate * (t_s - self.last_s) / 3600.0
        self.last_s = t_s
        return {self.quantity: round(self.total, self.digits)}


class _Traffic:
    """Counts per interval for every traffic quantity of one counter (vehicle = car + heavy)."""

    def __init__(self, quantities: Sequence[str], seed: int, peak_per_15min: float, period_s: float) -> None:
        self.quantities = set(quantities)
        self.rng = np.random.default_rng(seed)
        self.scale = peak_per_15min * period_s / 900.0

    def __call__(self, t_s: float, local: datetime) -> dict[str, float]:
        lam = self.scale * rush_hour_factor(local.hour + local.minute / 60.0)
        car, heavy, bike, ped = (int(x) for x in self.rng.poisson([lam * 0.9, lam * 0.08, lam * 0.12, lam * 0.2]))
        values = {"vehicle_count": car + heavy, "car_count": car, "heavy_vehicle_count": heavy,
                  "bike_count": bike, "pedestrian_count": ped}
        return {q: float(v) for q, v in values.items() if q in self.quantities}


@dataclass(slots=True)
class _Channel:
    device: DeviceSpec
    units: dict[str, str]
    model: Model
    period_ns: int
    next_ns: int


class KitScenario:
    """Readings of a kit's devices on a simulated clock: call `step(t0, t1)` with contiguous ranges."""

    def __init__(self, devices: Sequence[DeviceSpec], timezone: str, start_ns: int, seed: int = 1,
                 period_s: float = 60.0, count_period_s: float = 900.0) -> None:
        self.tz = ZoneInfo(timezone)
        self.devices = [d for d in devices if any(q in MODELLED for q, _ in d.quantities)]
        self._channels: list[_Channel] = []
        for d in self.devices:
            units = {q: u for q, u in d.quantities if q in MODELLED}
            # Each device starts a few seconds into the minute, as real sensors do; counters at the boundary.
            offset = (_seed(seed, d.device_id, "offset") % 30) * S
            base = _seed(seed, d.device_id)
            level_period = int(period_s * S)
            for q in units:
                model = self._model(q, units[q], base, period_s)
                if model is not None:
                    self._channels.append(_Channel(d, {q: units[q]}, model, level_period, start_ns + offset))
            traffic = [q for q in units if q in _TRAFFIC]
            if traffic:
                model = _Traffic(traffic, base, 260.0, count_period_s)
                self._channels.append(_Channel(d, {q: units[q] for q in traffic}, model, int(count_period_s * S),
                                               start_ns))

    @staticmethod
    def _model(quantity: str, unit: str, base: int, period_s: float) -> Model | None:
        seed = base + zlib.crc32(quantity.encode())
        if quantity == "pm2_5":
            return _level(DiurnalSignal(5.0, 16.0, 1.2, seed), quantity, _DayFactor(seed, 0.5, 2.2))
        if quantity == "pm10":
            return _level(DiurnalSignal(9.0, 26.0, 2.0, seed), quantity, _DayFactor(seed, 0.5, 2.0))
        if quantity in ("no2", "o3", "so2"):
            factor = 1.0 if unit == "ug/m3" else 1.0 / {"no2": 1.9, "o3": 1.96, "so2": 2.62}[quantity]
            if unit == "ppm":
                factor /= 1000.0
            params = {"no2": (12.0, 55.0, 3.0, "rush", 15.0), "o3": (25.0, 80.0, 3.0, "sine", 15.5),
                      "so2": (2.0, 6.0, 0.5, "rush", 15.0)}[quantity]
            sig = DiurnalSignal(params[0] * factor, params[1] * factor, params[2] * factor, seed, shape=params[3],
                                peak_hour=params[4])
            return _level(sig, quantity)
        if quantity == "noise_laeq":
            return _level(DiurnalSignal(41.0, 27.0, 1.2, seed, floor=25.0), quantity)
        if quantity == "energy_import":
            peak_kw = 20.0 + seed % 40
            return _Meter(quantity, lambda h, wd: peak_kw * _office_load(h, wd), seed, 10_000.0 + seed % 5000,
                          0.08, 3)
        if quantity == "water_volume":
            return _Meter(quantity, lambda h, wd: _household_flow(h), seed, 100.0 + seed % 900, 0.15, 4)
        return None

    def step(self, t0_ns: int, t1_ns: int) -> list[Reading]:
        """Every reading stamped in [t0_ns, t1_ns), in time order."""
        out: list[Reading] = []
        tz = self.tz
        for ch in self._channels:
            while ch.next_ns < t1_ns:
                ts = ch.next_ns
                ch.next_ns += ch.period_ns
                if ts < t0_ns:
                    continue
                t_s = ts / S
                local = datetime.fromtimestamp(ts // S, tz)
                for q, value in ch.model(t_s, local).items():
                    out.append(Reading(ch.device.device_id, q, value, ch.units[q], ts, ch.device.tags))
        out.sort(key=lambda r: r.ts)
        return out
