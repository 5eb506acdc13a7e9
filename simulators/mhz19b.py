"""Simulated Winsen MH-Z19B on a pty: answers read-CO2 requests; ABC / calibration / range commands are kept.

Request/response only, as the real sensor: nothing is sent unless asked. During `warmup_s` after power-on
(or a reconnect) the reply is all zeros, as the sensor does while preheating. CO2 follows a seeded
occupancy model of a classroom or office: outdoor air plus people's exhalation, diluted by ventilation.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from typing import ClassVar

from devices import mhz19b
from simulators.faults import FaultPlan, SerialSimulator

__all__ = ["Co2OccupancySignal", "Mhz19bSimulator"]


class Co2OccupancySignal:
    """Indoor CO2 (ppm): dC/dt = generation·occupancy − ach·(C − outdoor), occupancy by time of day.

    Weekday lessons/office hours 08:30-12:30 and 13:30-17:00 (occupancy 0.7-1.0), empty otherwise;
    `ach` air changes per hour; steady state at full occupancy is outdoor + `rise_ppm`. Deterministic for a seed.
    """

    def __init__(self, seed: int, outdoor_ppm: float = 420.0, rise_ppm: float = 1100.0, ach: float = 1.2) -> None:
        self._rng = random.Random(seed)
        self.outdoor = outdoor_ppm
        self.ach = ach
        self.generation = rise_ppm * ach  # ppm per hour at full occupancy
        self._t: float | None = None
        self._c = outdoor_ppm

    @staticmethod
    def occupancy(t_s: float) -> float:
        """Fraction of the room's people present at Unix time `t_s` (UTC used as local time)."""
        day = int(t_s // 86400)
        if (day + 3) % 7 >= 5:  # 1970-01-01 was a Thursday: (day + 3) % 7 is 0 on Mondays
            return 0.0
        hour = (t_s % 86400) / 3600.0
        if 8.5 <= hour < 12.5 or 13.5 <= hour < 17.0:
            return 0.85 + 0.15 * math.sin(hour * 2.1)
        return 0.0

    def value_at(self, t_s: float) -> float:
        """CO2 at `t_s`; successive calls integrate the room model forward (steps of at most 60 s)."""
        if self._t is None or t_s < self._t or t_s - self._t > 6 * 3600:
            occ = self.occupancy(t_s)
            self._c = self.outdoor + self.generation * occ / self.ach  # start at the steady state
        else:
            t = self._t
            while t < t_s:
                dt_h = min(60.0, t_s - t) / 3600.0
                occ = self.occupancy(t)
                self._c += (self.generation * occ - self.ach * (self._c - self.outdoor)) * dt_h
                t += dt_h * 3600.0
        self._t = t_s
        return max(380.0, self._c + self._rng.gauss(0.0, 8.0))


class Mhz19bSimulator(SerialSimulator):
    """An MH-Z19B answering `FF 01 86 …` on `port`; `last_values` holds the co2 of the last reply."""

    checksum_at = 8
    out_of_range: ClassVar[Mapping[str, float]] = {"co2": 65000.0}

    def __init__(
        self,
        seed: int = 1,
        period_s: float = 1.0,
        faults: FaultPlan | None = None,
        warmup_s: float = 0.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._co2 = Co2OccupancySignal(seed)
        self.warmup_s = warmup_s
        self._powered_at = time.monotonic()
        self.abc_on = True  # factory default
        self.zero_calibrations = 0
        self.span_ppm: int | None = None
        self.range_ppm = 5000
        self.internal_temperature_c = 27
        super().__init__(seed=seed, period_s=period_s, faults=faults, streaming=False, clock=clock)

    def plug(self) -> None:
        """Reconnect; the sensor preheats again."""
        self._powered_at = time.monotonic()
        super().plug()

    def _next_values(self, now_s: float) -> dict[str, float]:
        return {"co2": float(round(min(self.range_ppm, self._co2.value_at(now_s))))}

    def _encode(self, values: Mapping[str, float]) -> bytes:
        return mhz19b.encode(values, self.internal_temperature_c)

    def _wire_values(self, values: Mapping[str, float]) -> dict[str, float]:
        return {"co2": float(max(0, min(0xFFFF, round(values.get("co2", 0)))))}

    def warming_up(self) -> bool:
        """True while the sensor still preheats (replies are all zeros)."""
        return time.monotonic() - self._powered_at < self.warmup_s

    def _on_bytes(self, data: bytes) -> list[bytes]:
        buf = self._rx(data)
        replies: list[bytes] = []
        while True:
            start = buf.find(b"\xff")
            if start < 0:
                buf.clear()
                return replies
            del buf[:start]
            if len(buf) < mhz19b.FRAME_LEN:
                return replies
            frame = bytes(buf[: mhz19b.FRAME_LEN])
            if mhz19b.checksum(frame) != frame[8]:
                del buf[:1]  # ignored, like the real sensor
                continue
            del buf[: mhz19b.FRAME_LEN]
            self.requests.append(frame)
            replies += self._command(frame)

    def _command(self, frame: bytes) -> list[bytes]:
        cmd = frame[2]
        if cmd == mhz19b.CMD_READ:
            if self.warming_up():
                body = bytes((0xFF, mhz19b.CMD_READ, 0, 0, 0, 0, 0, 0))
                return [body + bytes((mhz19b.checksum(body + b"\x00"),))]
            return [self.make_frame()]
        if cmd == mhz19b.CMD_ABC:
            self.abc_on = frame[3] == 0xA0
        elif cmd == mhz19b.CMD_ZERO:
            self.zero_calibrations += 1
        elif cmd == mhz19b.CMD_SPAN:
            self.span_ppm = int.from_bytes(frame[3:5], "big")
        elif cmd == mhz19b.CMD_RANGE:
            self.range_ppm = int.from_bytes(frame[6:8], "big")
        return []
