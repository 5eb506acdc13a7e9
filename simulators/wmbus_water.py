"""Simulated wireless M-Bus water meter behind a transparent-mode dongle: a telegram every `period_s`.

Each telegram (CI 7A, unencrypted, link CRC removed) carries the meter total (04 13, litres), the current
flow (02 3B, l/h) and the meter clock (04 6D). Consumption follows a seeded household model: morning and
evening showers, toilet flushes and taps during waking hours, dishwasher in the evening, and an optional
constant leak (`leak_lph`) that shows up as night flow. With `encrypted=True` the meter sends security
mode 5 telegrams whose payload the gateway cannot read (it must reject them with "key needed").
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Mapping
from typing import ClassVar

from devices import wmbus_water
from simulators.faults import FaultPlan, SerialSimulator

__all__ = ["HouseholdWaterDraw", "WmbusWaterSimulator"]

_DAY = 86400


class HouseholdWaterDraw:
    """Water use of one household: a seeded list of draw events per day; flow and cumulative volume."""

    def __init__(self, seed: int, persons: int = 3, leak_lph: float = 0.0) -> None:
        self.seed = seed
        self.persons = persons
        self.leak_lph = leak_lph
        self._cache: dict[int, list[tuple[float, float, float]]] = {}

    def events(self, day: int) -> list[tuple[float, float, float]]:
        """(start s, duration s, litres per minute) of the draws on Unix day `day`."""
        if day not in self._cache:
            rng = random.Random(self.seed * 1_000_003 + day)
            ev: list[tuple[float, float, float]] = []
            base = day * _DAY
            for _ in range(self.persons):
                shower_h = rng.choice((6.5, 7.0, 7.5, 21.0)) + rng.uniform(-0.3, 0.3)
                ev.append((base + shower_h * 3600, rng.uniform(300, 600), rng.uniform(7.0, 10.0)))
                for _ in range(rng.randint(4, 7)):  # toilet flushes, waking hours
                    ev.append((base + rng.uniform(6.5, 23.0) * 3600, 50.0, 7.2))
                for _ in range(rng.randint(5, 10)):  # taps
                    ev.append((base + rng.uniform(6.5, 23.0) * 3600, rng.uniform(10, 60), rng.uniform(3, 6)))
            ev.append((base + rng.uniform(20.0, 22.0) * 3600, 900.0, 1.0))  # dishwasher
            ev.sort()
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[day] = ev
        return self._cache[day]

    def flow_lph(self, t_s: float) -> float:
        """Flow in litres per hour at `t_s`."""
        lpm = sum(r for s, d, r in self.events(int(t_s // _DAY)) if s <= t_s < s + d)
        return lpm * 60.0 + self.leak_lph

    def litres_between(self, a: float, b: float) -> float:
        """Litres drawn in [a, b) (at most 31 days are integrated; longer gaps count 31 days)."""
        if b <= a:
            return 0.0
        a = max(a, b - 31 * _DAY)
        total = self.leak_lph * (b - a) / 3600.0
        for day in range(int(a // _DAY), int(b // _DAY) + 1):
            for s, d, r in self.events(day):
                overlap = min(b, s + d) - max(a, s)
                if overlap > 0:
                    total += r * overlap / 60.0
        return total


class WmbusWaterSimulator(SerialSimulator):
    """A water meter (id `meter_id`) heard through a dongle on `port`; `last_values` has volume and flow."""

    checksum_at = None  # no CRC is left on dongle output, so the bad-checksum fault does not apply
    # The largest flow the 02 3B record can carry; ten times a household DN15 meter's Q4 of 3.125 m³/h.
    out_of_range: ClassVar[Mapping[str, float]] = {"water_flow": 32.767}

    def __init__(
        self,
        seed: int = 1,
        period_s: float = 16.0,
        faults: FaultPlan | None = None,
        meter_id: str = "12345699",
        start_m3: float = 123.456,
        leak_lph: float = 0.0,
        encrypted: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.meter_id = meter_id
        self.encrypted = encrypted
        self._draw = HouseholdWaterDraw(seed, leak_lph=leak_lph)
        self._volume_l = start_m3 * 1000.0
        self._t: float | None = None
        self._access = seed & 0xFF
        self._rng = random.Random(seed)
        self._meter_time: dt.datetime | None = None
        super().__init__(seed=seed, period_s=period_s, faults=faults, streaming=True, clock=clock)

    def _next_values(self, now_s: float) -> dict[str, float]:
        if self._t is not None:
            self._volume_l += self._draw.litres_between(self._t, now_s)
        self._t = now_s
        self._meter_time = dt.datetime.fromtimestamp(now_s, dt.UTC).replace(tzinfo=None)
        flow = round(self._draw.flow_lph(now_s)) / 1000.0
        return {"water_volume": round(self._volume_l) / 1000.0, "water_flow": flow}

    def _encode(self, values: Mapping[str, float]) -> bytes:
        self._access = (self._access + 1) & 0xFF
        telegram = wmbus_water.encode(
            values, self.meter_id, access_no=self._access, meter_time=self._meter_time
        )
        if not self.encrypted:
            return telegram
        # Security mode 5 with one encrypted block: CFG = 0x0510; the payload is unreadable without the key.
        header = bytearray(telegram[1:15])
        header[12:14] = (0x0510).to_bytes(2, "little")
        body = bytes(header) + self._rng.randbytes(16)
        return bytes((len(body),)) + body

    def _wire_values(self, values: Mapping[str, float]) -> dict[str, float]:
        return {
            "water_volume": max(0, min(0x7FFFFFFF, round(values["water_volume"] * 1000))) / 1000.0,
            "water_flow": max(-0x8000, min(0x7FFF, round(values["water_flow"] * 1000))) / 1000.0,
        }
