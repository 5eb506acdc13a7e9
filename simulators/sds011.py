"""Simulated Nova Fitness SDS011 on a pty: active-mode C0 frames and the 19-byte command set.

Behaviour as the real sensor: streams a C0 frame every `period_s` in active mode (every N × 60 s once a
working period N is set); answers reporting-mode, query, set-id, sleep/work, firmware and working-period
commands with C5 replies; in query mode only `query` produces a C0 frame; asleep, it hears only `work`.
Commands addressed to another sensor id are ignored. PM follows a seeded traffic-shaped diurnal curve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

from devices import sds011
from simulators.faults import FaultPlan, SerialSimulator
from simulators.signals import DiurnalSignal

__all__ = ["Sds011Simulator"]

FIRMWARE = (18, 11, 16)  # year, month, day reported by the firmware command


class Sds011Simulator(SerialSimulator):
    """An SDS011 streaming on `port`; `last_values` holds the µg/m³ values of the last C0 frame."""

    checksum_at = 8
    out_of_range: ClassVar[Mapping[str, float]] = {"pm2_5": 3000.0, "pm10": 6000.0}

    def __init__(
        self,
        seed: int = 1,
        period_s: float = 1.0,
        faults: FaultPlan | None = None,
        sensor_id: int = 0xA160,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.sensor_id = sensor_id
        self.query_mode = False
        self.awake = True
        self.working_period_min = 0
        self._base_period_s = period_s
        self._pm25 = DiurnalSignal(base=5.0, amplitude=25.0, noise=1.5, seed=seed, shape="rush")
        self._coarse = DiurnalSignal(base=4.0, amplitude=6.0, noise=1.0, seed=seed + 7, shape="sine")
        super().__init__(seed=seed, period_s=period_s, faults=faults, streaming=True, clock=clock)

    def _next_values(self, now_s: float) -> dict[str, float]:
        pm25 = self._pm25.value_at(now_s)
        return {"pm2_5": round(pm25, 1), "pm10": round(pm25 + self._coarse.value_at(now_s), 1)}

    def _encode(self, values: Mapping[str, float]) -> bytes:
        return sds011.encode(values, self.sensor_id)

    def _wire_values(self, values: Mapping[str, float]) -> dict[str, float]:
        return {q: max(0, min(0xFFFF, round(values.get(q, 0) * 10))) / 10.0 for q, _ in sds011.FIELDS}

    def _update(self) -> None:
        self.streaming = self.awake and not self.query_mode
        self.period_s = self.working_period_min * 60.0 if self.working_period_min else self._base_period_s

    def _reply(self, cmd: int, d1: int = 0, d2: int = 0, d3: int = 0) -> bytes:
        return sds011.encode_reply(cmd, d1, d2, d3, self.sensor_id)

    def _on_bytes(self, data: bytes) -> list[bytes]:
        buf = self._rx(data)
        replies: list[bytes] = []
        while True:
            start = buf.find(b"\xaa\xb4")
            if start < 0:
                del buf[:-1]
                return replies
            del buf[:start]
            if len(buf) < sds011.COMMAND_LEN:
                return replies
            frame = bytes(buf[: sds011.COMMAND_LEN])
            if sds011.command_error(frame) is not None:
                del buf[:1]  # the real sensor ignores malformed commands
                continue
            del buf[: sds011.COMMAND_LEN]
            target = int.from_bytes(frame[15:17], "big")
            if target not in (0xFFFF, self.sensor_id):
                continue
            self.requests.append(frame)
            replies += self._command(frame)

    def _command(self, frame: bytes) -> list[bytes]:
        cmd, is_set, value = frame[2], frame[3] == 1, frame[4]
        if not self.awake and not (cmd == sds011.CMD_SLEEP_WORK and is_set and value == 1):
            return []
        if cmd == sds011.CMD_QUERY:
            return [self.make_frame()]
        if cmd == sds011.CMD_REPORTING_MODE:
            if is_set:
                self.query_mode = value == 1
                self._update()
            return [self._reply(cmd, int(is_set), int(self.query_mode))]
        if cmd == sds011.CMD_SLEEP_WORK:
            if is_set:
                self.awake = value == 1
                self._update()
            return [self._reply(cmd, int(is_set), int(self.awake))]
        if cmd == sds011.CMD_WORKING_PERIOD:
            if is_set and value <= 30:
                self.working_period_min = value
                self._update()
            return [self._reply(cmd, int(is_set), self.working_period_min)]
        if cmd == sds011.CMD_SET_ID:
            self.sensor_id = int.from_bytes(frame[13:15], "big")
            return [self._reply(cmd)]
        if cmd == sds011.CMD_FIRMWARE:
            return [self._reply(cmd, *FIRMWARE)]
        return []
