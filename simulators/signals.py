"""Seeded, realistic signal models for simulators: diurnal cycles, rush hours, noise, faults."""

from __future__ import annotations

import math
import random

__all__ = ["DiurnalSignal", "rush_hour_factor"]

_DAY_S = 86400.0


def rush_hour_factor(hour_of_day: float) -> float:
    """Traffic-shaped daily profile in [0.05, 1]: peaks around 08:00 and 17:30, quiet at night."""
    morning = math.exp(-((hour_of_day - 8.0) ** 2) / (2 * 1.2**2))
    evening = math.exp(-((hour_of_day - 17.5) ** 2) / (2 * 1.6**2))
    daytime = 0.35 if 6.5 <= hour_of_day <= 21.0 else 0.0
    return max(0.05, min(1.0, 0.9 * max(morning, evening) + daytime))


class DiurnalSignal:
    """base + amplitude·(daily shape) + AR(1) noise, clipped at `floor`; deterministic for a seed.

    `shape` "rush" follows traffic (PM, NO2, noise); "sine" peaks at `peak_hour`.
    """

    def __init__(
        self,
        base: float,
        amplitude: float,
        noise: float,
        seed: int,
        shape: str = "rush",
        peak_hour: float = 15.0,
        floor: float = 0.0,
    ) -> None:
        self.base = base
        self.amplitude = amplitude
        self.noise = noise
        self.shape = shape
        self.peak_hour = peak_hour
        self.floor = floor
        self._rng = random.Random(seed)
        self._ar = 0.0

    def value_at(self, t_s: float) -> float:
        """The signal at Unix time `t_s` (seconds, UTC); successive calls advance the noise process."""
        hour = (t_s % _DAY_S) / 3600.0
        if self.shape == "rush":
            daily = rush_hour_factor(hour)
        else:
            daily = 0.5 + 0.5 * math.cos((hour - self.peak_hour) / 24.0 * 2 * math.pi)
        self._ar = 0.8 * self._ar + self._rng.gauss(0.0, self.noise)
        return max(self.floor, self.base + self.amplitude * daily + self._ar)
