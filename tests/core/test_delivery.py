"""Delivery's cursor: durable when idle, not written for every commit of entries the sink does not take."""

from __future__ import annotations

import time
from pathlib import Path

from devices.reading import Reading
from gateway.journal import KIND_KPI, Journal
from gateway.metrics import Metrics
from gateway.sinks.base import Delivery
from gateway.sinks.local_store import LocalStoreSink

T0 = 1_767_225_600 * 10**9


def test_a_kpi_only_sink_does_not_write_its_cursor_for_every_commit_of_readings(tmp_path: Path) -> None:
    # Each cursor write takes the journal's write lock, which the ingest thread then waits for (SQLite's busy
    # handler sleeps a millisecond or more): a KPI-only sink wrote one after every commit of readings.
    journal = Journal(tmp_path / "j.sqlite")
    sink = LocalStoreSink("kpis", tmp_path / "store")
    sink.only_kind = KIND_KPI
    delivery = Delivery(sink, Journal(tmp_path / "j.sqlite"), Metrics(), flush_interval_s=2.0, cursor_persist_s=60)
    written: list[int] = []
    set_cursor = delivery.journal.set_cursor

    def counted(name: str, seq: int) -> None:
        written.append(seq)
        set_cursor(name, seq)

    delivery.journal.set_cursor = counted  # type: ignore[method-assign,assignment]
    delivery.start()
    try:
        for i in range(20):
            journal.append([Reading("dev", "pm2_5", 1.0, "ug/m3", T0 + i)])
            delivery.wake.set()
            deadline = time.monotonic() + 5
            while delivery.cursor < journal.last_seq() and time.monotonic() < deadline:
                time.sleep(0.005)
            assert delivery.cursor == journal.last_seq()  # the readings count as delivered at once
    finally:
        delivery.stop()
    assert len(written) <= 2, f"{len(written)} cursor writes for 20 commits"
    assert journal.cursor("kpis") == journal.last_seq() == 20  # durable once idle or stopped
