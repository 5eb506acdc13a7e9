"""Fault: the gateway's wall clock jumps back an hour, then forward a day (an NTP step, a bad RTC).

Driven in-process through the real Gateway with injected clocks (wall and monotonic), readings stamped with
the gateway's receipt time like a serial device's. Expected: each jump is detected and reported (log,
/metrics counter, status page); no KPI window is corrupted: every window is emitted once, from exactly the
readings that belong to it; readings stamped an hour back, for windows already closed, are counted late and
kept raw (in the journal, hence in the sinks), never folded into a published window.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from devices.reading import Reading
from gateway.app import Gateway
from gateway.clock import ClockWatch
from gateway.journal import KIND_KPI, KIND_READING
from gateway.settings import load_settings
from tests.reliability.support import metric

S = 10**9
HOUR = 3600 * S
DAY = 24 * HOUR
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z, a window boundary


class Clocks:
    """Simulated true time; the wall clock is true time plus an offset the test changes (the jumps)."""

    def __init__(self) -> None:
        self.true = T0
        self.offset = 0

    def wall(self) -> int:
        """The wall clock (time.time_ns stand-in)."""
        return self.true + self.offset

    def mono(self) -> int:
        """The monotonic clock, which never jumps."""
        return self.true


def test_clock_jumps_are_reported_and_no_window_is_corrupted(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    cfg = tmp_path / "kit.toml"
    cfg.write_text(f"""
[gateway]
id = "clock"
data_dir = "{tmp_path / 'data'}"
status_listen = ""
[aggregation]
windows = ["10s"]
grace = "2s"
""")
    clocks = Clocks()
    gateway = Gateway(load_settings(cfg, env={}), clock_ns=clocks.wall)
    gateway.clock = ClockWatch(wall_ns=clocks.wall, mono_ns=clocks.mono)
    pipeline = gateway.pipeline
    accepted: list[Reading] = []

    def run(seconds: int, start_value: float) -> list[Reading]:
        """One reading a second, stamped with the (possibly wrong) wall clock at receipt."""
        sent = []
        for i in range(seconds):
            clocks.true += S
            r = Reading("noise-1", "noise_laeq", start_value + (i % 7), "dBA", clocks.wall())
            pipeline.process([([r], None)])
            pipeline.tick()
            gateway.tick()  # what `citygw run` calls every second: the clock check
            sent.append(r)
        return sent

    with caplog.at_level(logging.WARNING, logger="citygw.clock"):
        normal = run(45, 50.0)
        clocks.offset = -HOUR  # NTP steps the clock back an hour
        back = run(30, 60.0)
        clocks.offset = DAY  # ... then a bad RTC puts it a day ahead
        ahead = run(30, 70.0)
        clocks.true += 60 * S  # input idle: the last windows close on wall time
        pipeline.tick()
    # Reported: twice, with size and direction, in the log, the counter and the status page.
    assert gateway.clock.jumps == [-HOUR, DAY + HOUR]
    messages = [r.getMessage() for r in caplog.records]
    assert any("jumped back by 3600.0 s" in m for m in messages)
    assert any("jumped forward by 90000.0 s" in m for m in messages)
    from prometheus_client import generate_latest

    assert metric(generate_latest(gateway.metrics.registry).decode(), "citygw_clock_jumps_total") == 2
    assert gateway.status()["clock"] == "ok, 2 jump(s) seen"

    # The readings stamped an hour back fall in windows closed long ago: late, counted, kept raw.
    assert pipeline.engine.late == len(back)
    journal = gateway.journal
    raw = [(e.ts, e.value) for e in journal.read_after(0, 10_000) if e.kind == KIND_READING]
    accepted = normal + back + ahead
    assert raw == [(r.ts, r.value) for r in accepted]

    # Every window emitted once, with exactly the readings of its own 10 s (none of the late ones).
    kpis = [e.as_kpi() for e in journal.read_after(0, 10_000) if e.kind == KIND_KPI]
    starts = [k.start_ns for k in kpis]
    assert len(starts) == len(set(starts))
    expected: dict[int, list[float]] = defaultdict(list)
    for r in normal + ahead:
        expected[r.ts - r.ts % (10 * S)].append(r.value)
    assert sorted(starts) == sorted(expected)
    for k in kpis:
        values = np.array(expected[k.start_ns])
        assert k.fields["count"] == len(values)
        assert k.value == pytest.approx(10 * np.log10(np.mean(10 ** (values / 10))), abs=1e-9)
    # The window open when the clock went back (readings at T0+40..45 s) closed a day later, with its own
    # six readings only, flagged incomplete (6 of 10 one-second slots covered).
    straddling = next(k for k in kpis if k.start_ns == T0 + 40 * S)
    assert straddling.fields["count"] == 6 and straddling.valid is False
    for d in gateway.deliveries:  # never started (the test drives the pipeline itself): just close
        d.sink.close()
        d.journal.close()
    gateway.journal.close()
