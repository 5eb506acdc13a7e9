"""Simulated Plantower PMS5003 (and PMS5003T) on a pty: active-mode streaming and the 7-byte commands.

Behaviour as the real sensor: streams a 32-byte frame every `period_s` in active mode; `mode_passive`
(acked) stops streaming and `read` then returns one frame; `sleep` (acked) stops everything until `wake`;
`mode_active` resumes streaming. PM follows a seeded traffic-shaped diurnal curve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

from devices import pms5003, pms5003t
from simulators.faults import FaultPlan, SerialSimulator
from simulators.signals import DiurnalSignal

__all__ = ["Pms5003Simulator", "Pms5003tSimulator"]

CMD_READ, CMD_MODE, CMD_SLEEP = 0xE2, 0xE1, 0xE4


def _ack(cmd: int, data: int) -> bytes:
    body = b"\x42\x4d\x00\x04" + bytes((cmd, data))
    return body + pms5003.checksum(body).to_bytes(2, "big")


class Pms5003Simulator(SerialSimulator):
    """A PMS5003 streaming frames on `port`; `last_values` holds what the last frame carried."""

    checksum_at = 31
    out_of_range: ClassVar[Mapping[str, float]] = {"pm2_5": 4000.0, "pm10": 9000.0}

    def __init__(
        self,
        seed: int = 1,
        period_s: float = 1.0,
        faults: FaultPlan | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._pm25 = DiurnalSignal(base=6.0, amplitude=22.0, noise=2.0, seed=seed, shape="rush")
        self.active_mode = True
        self.awake = True
        super().__init__(seed=seed, period_s=period_s, faults=faults, streaming=True, clock=clock)

    def _next_values(self, now_s: float) -> dict[str, float]:
        pm25 = round(self._pm25.value_at(now_s))
        pm1 = round(pm25 * 0.68)
        pm10 = round(pm25 * 1.35 + 1)
        # CF=1 equals the atmospheric value at low load and reads higher above ~30 µg/m³ (Plantower note).
        cf = 1.0 if pm25 < 30 else 1.45
        values = {
            "pm1_0": pm1, "pm2_5": pm25, "pm10": pm10,
            "pm1_0_cf1": round(pm1 * cf), "pm2_5_cf1": round(pm25 * cf), "pm10_cf1": round(pm10 * cf),
            "particles_0_3um": round(150 + pm25 * 95), "particles_0_5um": round(45 + pm25 * 28),
            "particles_1_0um": round(8 + pm25 * 5.5), "particles_2_5um": round(pm25 * 0.6),
            "particles_5_0um": round(pm10 * 0.12), "particles_10um": round(pm10 * 0.03),
        }
        return {k: float(v) for k, v in values.items()}

    def _encode(self, values: Mapping[str, float]) -> bytes:
        return pms5003.encode(values)

    def _wire_values(self, values: Mapping[str, float]) -> dict[str, float]:
        return {q: float(max(0, min(0xFFFF, round(values.get(q, 0))))) for q, _ in pms5003.FIELDS}

    def _update_streaming(self) -> None:
        self.streaming = self.active_mode and self.awake

    def _on_bytes(self, data: bytes) -> list[bytes]:
        buf = self._rx(data)
        replies: list[bytes] = []
        while True:
            start = buf.find(pms5003.HEADER)
            if start < 0:
                del buf[:-1]
                return replies
            del buf[:start]
            if len(buf) < 7:
                return replies
            frame = bytes(buf[:7])
            if pms5003.checksum(frame[:5]) != int.from_bytes(frame[5:7], "big"):
                del buf[:1]  # a real sensor ignores a command with a bad checksum
                continue
            del buf[:7]
            self.requests.append(frame)
            replies += self._command(frame[2], frame[4])

    def _command(self, cmd: int, data: int) -> list[bytes]:
        if cmd == CMD_READ:
            if self.awake and not self.active_mode:
                return [self.make_frame()]
            return []
        if not self.awake and not (cmd == CMD_SLEEP and data == 1):
            return []  # asleep: only wake is heard
        if cmd == CMD_MODE:
            self.active_mode = data == 1
            self._update_streaming()
            return [] if self.active_mode else [_ack(cmd, data)]
        if cmd == CMD_SLEEP:
            self.awake = data == 1
            self._update_streaming()
            return [] if self.awake else [_ack(cmd, data)]
        return []


class Pms5003tSimulator(Pms5003Simulator):
    """A PMS5003T: the PMS5003 behaviour plus temperature (°C) and relative humidity (%) in words 11-12."""

    out_of_range: ClassVar[Mapping[str, float]] = {"pm2_5": 4000.0, "temperature": 150.0}

    def __init__(
        self,
        seed: int = 1,
        period_s: float = 1.0,
        faults: FaultPlan | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._temp = DiurnalSignal(base=8.0, amplitude=12.0, noise=0.3, seed=seed + 1, shape="sine",
                                   floor=-40.0)
        self._rh = DiurnalSignal(base=40.0, amplitude=35.0, noise=1.5, seed=seed + 2, shape="sine",
                                 peak_hour=5.0)
        super().__init__(seed=seed, period_s=period_s, faults=faults, clock=clock)

    def _next_values(self, now_s: float) -> dict[str, float]:
        values = super()._next_values(now_s)
        values["temperature"] = round(self._temp.value_at(now_s) - 4.0, 1)  # below zero on winter nights
        values["relative_humidity"] = round(min(100.0, self._rh.value_at(now_s)), 1)
        return values

    def _encode(self, values: Mapping[str, float]) -> bytes:
        return pms5003t.encode(values)

    def _wire_values(self, values: Mapping[str, float]) -> dict[str, float]:
        out = {q: float(max(0, min(0xFFFF, round(values.get(q, 0))))) for q, _ in pms5003t.FIELDS[:10]}
        out["temperature"] = max(-0x8000, min(0x7FFF, round(values.get("temperature", 0) * 10))) / 10.0
        out["relative_humidity"] = max(0, min(0xFFFF, round(values.get("relative_humidity", 0) * 10))) / 10.0
        return out
