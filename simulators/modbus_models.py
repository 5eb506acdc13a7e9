"""Seeded signal models of the simulated Modbus slaves: the values their registers serve at time t.

A building's load curve for the Eastron meters (energy totals integrate the power), office-hours CO2, slowly
drifting water quality, noise following traffic. `simulators.registry` says which model serves which kind.
"""

from __future__ import annotations

import abc
import random

from simulators.signals import DiurnalSignal

__all__ = ["Co2Model", "DriftModel", "LoadCurve", "NoiseModel", "RegisterModel", "Sdm120Model", "Sdm630Model"]

_HOUR = 3600.0


class RegisterModel(abc.ABC):
    """Values of one slave's fields (by field name) at time t; `dt` is the time since the previous call."""

    @abc.abstractmethod
    def values(self, t: float, dt: float) -> dict[str, float]:
        """The slave's field values at `t`."""


class LoadCurve:
    """A building's electrical load: night base load, office-hours plateau, noise; seeded."""

    def __init__(self, seed: int, base_w: float, peak_w: float) -> None:
        self._signal = DiurnalSignal(base_w, peak_w, peak_w * 0.03, seed, shape="sine", peak_hour=13.5, floor=20)

    def power(self, t: float) -> float:
        """The load in watts at `t`."""
        return self._signal.value_at(t)


class Sdm120Model(RegisterModel):
    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self._load = LoadCurve(seed, base_w=rng.uniform(150, 400), peak_w=rng.uniform(1500, 3500))
        self._volt = DiurnalSignal(229.0, 3.0, 0.4, seed + 1, shape="sine", peak_hour=3.0)
        self._rng = rng
        self._import = rng.uniform(500, 20000)

    def values(self, t: float, dt: float) -> dict[str, float]:
        p = self._load.power(t)
        v = self._volt.value_at(t)
        pf = max(0.5, min(1.0, 0.9 + self._rng.gauss(0, 0.02)))
        self._import += p * dt / _HOUR / 1000.0
        return {
            "voltage": v,
            "current": p / (v * pf),
            "active_power": p,
            "power_factor": pf,
            "frequency": 50.0 + self._rng.gauss(0, 0.015),
            "energy_import": self._import,
            "energy_export": 0.0,
        }


class Sdm630Model(RegisterModel):
    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self._rng = rng
        self._loads = [LoadCurve(seed + i, rng.uniform(500, 1500), rng.uniform(4000, 9000)) for i in range(3)]
        self._volts = [DiurnalSignal(230.0, 3.0, 0.5, seed + 10 + i, shape="sine", peak_hour=3.0) for i in range(3)]
        self._import = rng.uniform(10000, 300000)
        self._export = rng.uniform(0, 50)

    def values(self, t: float, dt: float) -> dict[str, float]:
        out: dict[str, float] = {}
        total = 0.0
        for i, phase in enumerate(("l1", "l2", "l3")):
            p = self._loads[i].power(t)
            v = self._volts[i].value_at(t)
            pf = max(0.5, min(1.0, 0.92 + self._rng.gauss(0, 0.02)))
            out[f"voltage_{phase}"] = v
            out[f"current_{phase}"] = p / (v * pf)
            out[f"active_power_{phase}"] = p
            out[f"power_factor_{phase}"] = pf
            total += p
        self._import += total * dt / _HOUR / 1000.0
        out.update(
            active_power_total=total,
            frequency=50.0 + self._rng.gauss(0, 0.015),
            energy_import=self._import,
            energy_export=self._export,
        )
        return out


class Co2Model(RegisterModel):
    """Office CO2: outdoor ~420 ppm at night, rising with occupancy during the day."""

    def __init__(self, seed: int) -> None:
        self._signal = DiurnalSignal(420.0, 650.0, 15.0, seed, shape="sine", peak_hour=15.0, floor=380)

    def values(self, t: float, dt: float) -> dict[str, float]:
        return {"co2": self._signal.value_at(t)}


class DriftModel(RegisterModel):
    """A slowly drifting water-quality value (bounded random walk) with the water temperature."""

    def __init__(self, seed: int, quantity: str, centre: float, spread: float, step: float) -> None:
        self._rng = random.Random(seed)
        self._quantity = quantity
        self._centre = centre
        self._spread = spread
        self._step = step
        self._value = centre + self._rng.uniform(-spread, spread) / 2
        self._temp = DiurnalSignal(14.0, 4.0, 0.05, seed + 1, shape="sine", peak_hour=16.0, floor=0.5)

    def values(self, t: float, dt: float) -> dict[str, float]:
        pull = (self._centre - self._value) * 0.05  # mean reversion keeps the walk within a realistic band
        self._value += pull + self._rng.gauss(0, self._step)
        self._value = min(self._centre + self._spread, max(self._centre - self._spread, self._value))
        return {self._quantity: self._value, "temperature": self._temp.value_at(t)}


class NoiseModel(RegisterModel):
    """Street noise: about 45 dB at night, 65-70 dB in rush hours."""

    def __init__(self, seed: int, quantity: str) -> None:
        self._signal = DiurnalSignal(44.0, 25.0, 2.0, seed, shape="rush", floor=30)
        self._quantity = quantity

    def values(self, t: float, dt: float) -> dict[str, float]:
        return {self._quantity: self._signal.value_at(t)}
