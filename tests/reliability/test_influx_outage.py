"""Fault: InfluxDB is down for a long stretch (hours of event time), then comes back.

The gateway keeps ingesting and aggregating into its journal while every write fails; once InfluxDB is back
every raw reading and every KPI point arrives, with exact values, and the sink's backlog drains to zero.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from devices import json_mapping
from tests.integration.helpers import publish_all
from tests.reliability.support import GatewayProcess, StatusPage, kit_config, metric, wait_for
from tests.servers import InfluxV1, Mosquitto

S = 10**9
WINDOW = 15 * 60 * S
STEP = 30 * S
HOURS = 3


def test_influx_down_for_hours_then_everything_arrives(tmp_path: Path, mosquitto: Mosquitto,
                                                      fresh_influx_v1: InfluxV1) -> None:
    influx = fresh_influx_v1
    gw_id = f"out{time.time_ns() % 10**8}"
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json",
                        influx_url=influx.url, database=influx.database, windows='["15m"]', grace="10s")
    influx.stop()  # the uplink is down before the gateway even starts
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    # Three hours of readings (every 30 s, event-timestamped) ending an hour ago, published in a burst.
    now = time.time_ns()
    base = (now - (HOURS + 1) * 3600 * S) // WINDOW * WINDOW
    n = HOURS * 3600 * S // STEP
    stamps = [base + i * STEP for i in range(n)]
    values = [round(10 + 5 * math.sin(i / 20) + (i % 3) * 0.1, 3) for i in range(n)]
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected to the broker")
        publish_all(mosquitto.port, [(f"{gw_id}/pm-1/json", json_mapping.encode("pm-1", ts, {"pm2_5": v}))
                                     for ts, v in zip(stamps, values, strict=True)])
        windows = HOURS * 3600 * S // WINDOW
        # While InfluxDB is down: everything is accepted, every window closes, nothing is delivered.
        wait_for(lambda: metric(status.metrics(), "citygw_kpi_points_total") >= windows, 30,
                 f"{windows} KPI windows closed into the journal")
        wait_for(lambda: metric(status.metrics(), "citygw_sink_errors_total", sink="influx") >= 3, 30,
                 "repeated failed writes to InfluxDB")
        st = status.status()
        assert st["accepted"] == n
        (sink,) = [s for s in st["sinks"] if s["name"] == "influx"]
        assert sink["delivered"] == 0 and sink["lag"] >= n + windows
        assert "cannot reach" in sink["last_error"]
        influx.start()  # same port, same data directory

        def count(measurement: str) -> int:
            rows = influx.query(f"SELECT count(value) FROM {measurement}")
            return int(rows[0]["count"]) if rows else 0

        wait_for(lambda: count("reading") == n and count("kpi") == windows, 60,
                 "every reading and KPI point in InfluxDB")
        wait_for(lambda: [s["lag"] for s in status.status()["sinks"] if s["name"] == "influx"] == [0], 30,
                 "the InfluxDB backlog drained")
    finally:
        code = gateway.stop()
    assert code == 0, gateway.log()
    assert "sink influx recovered" in gateway.log()
    rows = influx.query("SELECT value FROM reading WHERE device_id='pm-1'")
    assert [r["time"] for r in rows] == stamps
    assert [r["value"] for r in rows] == values
    kpis = influx.query('SELECT value, "count", "min", "max" FROM kpi WHERE device_id=\'pm-1\'')
    per_window = [values[i:i + WINDOW // STEP] for i in range(0, n, WINDOW // STEP)]
    assert [k["time"] for k in kpis] == [base + w * WINDOW for w in range(len(per_window))]
    assert [k["value"] for k in kpis] == pytest.approx([float(np.mean(c)) for c in per_window], rel=1e-12)
    assert [k["count"] for k in kpis] == [len(c) for c in per_window]
    assert [(k["min"], k["max"]) for k in kpis] == [(min(c), max(c)) for c in per_window]
