"""Fault: a crash before the first window closed (issue 10, item 4), and the duplicate window's size (item 16).

Before any window has closed, no horizon is committed (`closed_until` is written with the first KPI
points), so a restart used to rebuild nothing: the readings before the crash were missing from the first
KPI and a redelivered copy was journaled again. The open windows and the duplicate check must come back
from the journal whatever happened before the crash.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson

from aggregators.windows import WindowEngine, WindowSpec
from devices import json_mapping
from devices.reading import Reading
from gateway.journal import KIND_KPI, KIND_READING, Journal
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from ingest.validate import DUPLICATE_WINDOW, Validator
from tests.integration.helpers import publish_all
from tests.reliability.support import GatewayProcess, StatusPage, journal_rows, kit_config, wait_for
from tests.servers import Mosquitto

S = 10**9
REPO = Path(__file__).resolve().parents[2]


def _pipeline(path: Path, now: list[int]) -> Pipeline:
    engine = WindowEngine([WindowSpec.parse("1m")], grace_ns=2 * S)
    return Pipeline(Journal(path), engine, Metrics(), clock_ns=lambda: now[0])


def test_restart_before_any_window_closed_rebuilds_windows_and_duplicates(tmp_path: Path) -> None:
    minute = (time.time_ns() // (60 * S) - 10) * 60 * S  # a minute 10 minutes ago
    now = [minute + 30 * S]
    readings = [Reading("late-1", "noise_laeq", 40.0 + i, "dBA", minute + i * S) for i in range(60)]
    first = _pipeline(tmp_path / "journal.sqlite", now)
    first.rebuild()
    first.process([(readings[:30], None)])
    assert first.journal.get_meta("closed_until") is None  # no window closed: no horizon committed
    # The crash: the first pipeline is dropped without stop(); only what it committed survives.
    second = _pipeline(tmp_path / "journal.sqlite", now)
    second.rebuild()
    second.process([([readings[28]], None), (readings[30:], None)])  # the 29th again, then 30 more
    assert second.rejected_count == 1  # the copy is a duplicate, not journaled twice
    assert second.journal.count(KIND_READING) == 60
    now[0] = minute + 120 * S
    second.tick()
    kpis = [e.as_kpi() for e in second.journal.read_after(0, 1000, KIND_KPI)]
    counts = {k.fields["count"] for k in kpis if k.name.startswith("noise_laeq")}
    assert counts == {60}, kpis


def test_duplicate_check_after_restart_covers_readings_of_closed_windows(tmp_path: Path) -> None:
    minute = (time.time_ns() // (60 * S) - 10) * 60 * S
    now = [minute + 30 * S]
    first = _pipeline(tmp_path / "journal.sqlite", now)
    old = Reading("d", "noise_laeq", 50.0, "dBA", minute + S)
    first.process([([old], None)])
    now[0] = minute + 5 * 60 * S
    first.tick()  # its window closed and a horizon committed
    assert first.journal.get_meta("closed_until") is not None
    second = _pipeline(tmp_path / "journal.sqlite", now)
    second.rebuild()
    second.process([([old], None)])  # redelivered after the restart, for a window closed long ago
    assert second.rejected_count == 1
    assert second.journal.count(KIND_READING) == 1


def test_sigkill_before_the_first_window_closed(tmp_path: Path, mosquitto: Mosquitto) -> None:
    gw_id = f"early{time.time_ns() % 10**8}"
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json",
                        windows='["1m"]', grace="2s")
    journal = tmp_path / "data" / "journal.sqlite"
    store = tmp_path / "data" / "store"
    minute = (time.time_ns() // (60 * S) - 10) * 60 * S

    def message(i: int) -> tuple[str, bytes]:
        return f"{gw_id}/dev-1/json", json_mapping.encode("dev-1", minute + i * S, {"noise_laeq": 40.0 + i})

    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        publish_all(mosquitto.port, [message(i) for i in range(30)])
        wait_for(lambda: status.status().get("accepted") == 30, 30, "30 readings journaled")
        gateway.kill()  # within the idle time (5 s) after the last reading: no window has closed
        kpis_before = journal_rows(journal, "SELECT count(*) FROM entries WHERE kind=?", (KIND_KPI,))[0][0]
        assert kpis_before == 0, "precondition: the window closed before the kill (machine too slow?)"
        gateway = GatewayProcess(config, tmp_path / "gateway2.log").start()
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected again")
        publish_all(mosquitto.port, [message(28)] + [message(i) for i in range(30, 60)])

        # Read from the local store, which keeps what it was given: the journal trims a KPI point and the
        # readings a few seconds after every sink delivered them, before a poll on a loaded machine may look.
        def kpi_counts() -> list[int]:
            return [point["count"] for point in _store_lines(store, "kpi") if point["name"] == "noise_laeq"]

        counts = wait_for(kpi_counts, 60, "the 1-minute KPI")
        assert counts == [60], gateway.log()
        readings = _store_lines(store, "readings")
        # the re-sent 29th was recognised, not journaled (and so not delivered) twice
        assert (len(readings), len({r["ts"] for r in readings})) == (60, 60)
        assert status.status().get("rejected") == 1
    finally:
        gateway.stop()


def _store_lines(store: Path, kind: str) -> list[dict[str, Any]]:
    """Every line of the local store's `kind` files ("kpi", "readings"), whatever UTC day they are for."""
    return [orjson.loads(line) for path in sorted(store.glob(f"{kind}-*.jsonl"))
            for line in path.read_bytes().splitlines() if line]


def test_docs_quote_the_duplicate_window_the_code_uses() -> None:
    text = (REPO / "docs" / "reliability.md").read_text()
    quoted = re.search(r"remembers the \(device, quantity, timestamp\) of the last ([\d\s,]+) accepted", text)
    assert quoted is not None, "docs/reliability.md no longer states the duplicate window"
    assert int(re.sub(r"[\s,]", "", quoted.group(1))) == DUPLICATE_WINDOW
    assert Validator(time.time_ns).max_remembered == DUPLICATE_WINDOW
