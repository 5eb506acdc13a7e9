"""Simulated BSWA 308/309 sound level meter on a pty: the ASCII block protocol with DMA main-screen data.

Answers `DMAp1 ?` for its address: p1 = 1 single return (one answer), 2 continuous (an answer every
`period_s`), 0 stop, 3 integral-end return (treated as single). Other commands get ACK (`STA1`, `OUT…`, …);
unknown ones get NAK; broadcasts (address 0) are executed without an answer. The main screen shows LEQ by
default: the running energetic mean of the instantaneous A-weighted level, which follows a seeded
day/night traffic curve. Levels above `overload_db` set overload indicator 1.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Mapping
from typing import ClassVar

from devices import bswa_slm
from simulators.faults import FaultPlan, SerialSimulator
from simulators.signals import DiurnalSignal

__all__ = ["BswaSlmSimulator"]

_ACKED = ("STA", "OUT", "ALM", "ETF", "RES", "INT", "TIM")


class BswaSlmSimulator(SerialSimulator):
    """A BSWA 308 at `address` on `port`; `last_values` holds the level of the last answer."""

    checksum_at = -3  # the BCC byte
    out_of_range: ClassVar[Mapping[str, float]] = {
        "noise_laeq": 175.0, "noise_lamax": 185.0, "noise_lamin": 170.0, "noise_spl": 185.0,
    }

    def __init__(
        self,
        seed: int = 1,
        period_s: float = 1.0,
        faults: FaultPlan | None = None,
        address: int = 1,
        mode: int = 2,
        detector: int = 0,
        integration_samples: int = 60,
        overload_db: float = 140.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if mode not in (0, 1, 2, 3, 4):
            raise ValueError(f"mode {mode} not in 0..4 (SPL, PEAK, LEQ, MAX, MIN)")
        self.address = address
        self.mode = mode
        self.detector = detector
        self.overload_db = overload_db
        self._level = DiurnalSignal(base=42.0, amplitude=26.0, noise=2.5, seed=seed, shape="rush")
        self._samples: collections.deque[float] = collections.deque(maxlen=integration_samples)
        self._framer = bswa_slm.BswaFramer()
        super().__init__(seed=seed, period_s=period_s, faults=faults, streaming=False, clock=clock)

    def _quantity(self) -> str:
        return {0: "noise_spl", 2: "noise_laeq", 3: "noise_lamax", 4: "noise_lamin"}.get(self.mode, "noise_laeq")

    def _next_values(self, now_s: float) -> dict[str, float]:
        self._samples.append(self._level.value_at(now_s))
        if self.mode == 2:
            level = 10.0 * math.log10(sum(10.0 ** (s / 10.0) for s in self._samples) / len(self._samples))
        elif self.mode == 3:
            level = max(self._samples)
        elif self.mode == 4:
            level = min(self._samples)
        else:
            level = self._samples[-1]
        return {self._quantity(): round(level, 1)}

    def _encode(self, values: Mapping[str, float]) -> bytes:
        level = next(iter(values.values()))
        overload = 1 if level > self.overload_db else 0
        text = f"0,{self.detector},{self.mode},{max(0.0, min(999.9, level)):05.1f},{overload}"
        return bswa_slm.answer(text, self.address)

    def _wire_values(self, values: Mapping[str, float]) -> dict[str, float]:
        return {q: round(max(0.0, min(999.9, v)), 1) for q, v in values.items()}

    def _on_bytes(self, data: bytes) -> list[bytes]:
        replies: list[bytes] = []
        # The block framer (bounded) finds commands; the meter only acts on blocks with a valid BCC.
        for item in self._framer.feed(data):
            if isinstance(item, bytes) and item[2] == bswa_slm.TYPE_COMMAND:
                self.requests.append(item)
                replies += self._command(item[1], item[3:-4].decode("ascii"))
        return replies

    def _command(self, address: int, text: str) -> list[bytes]:
        if address not in (0, self.address):
            return []
        broadcast = address == 0
        reply: list[bytes]
        if text.startswith("DMA") and text.endswith("?") and len(text) >= 4 and text[3] in "0123":
            manner = int(text[3])
            self.streaming = manner == 2
            reply = [self.make_frame()] if manner in (1, 2, 3) else [self._ack()]
        elif text[:3] in _ACKED:
            reply = [self._ack()]
        else:
            reply = [bswa_slm.block(self.address, bswa_slm.TYPE_NAK)]
        return [] if broadcast else reply

    def _ack(self) -> bytes:
        return bswa_slm.block(self.address, bswa_slm.TYPE_ACK)
