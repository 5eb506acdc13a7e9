"""Walking skeleton, end to end with real parts: a pty PMS5003 and an MQTT JSON device feed `citygw run`;
the exact readings and KPI points are read back from real influxd 1.6.7 and VictoriaMetrics, and a real
MQTT subscriber receives the KPI feed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from devices import json_mapping, pms5003
from simulators.pty_device import StreamingPtyDevice
from tests.integration.helpers import FeedSubscriber, GatewayProcess, port_open_by, publish_all, wait_for
from tests.servers import InfluxV1, Mosquitto, VictoriaMetrics

S = 10**9


def _pms_frames(n: int) -> tuple[list[bytes], list[float]]:
    frames, pm25 = [], []
    for i in range(n):
        values = {q: float(10 + i + k) for k, (q, _) in enumerate(pms5003.FIELDS)}
        frames.append(pms5003.encode(values))
        pm25.append(values["pm2_5"])
    return frames, pm25


def _config(tmp: Path, gw_id: str, pms_port: str, mosquitto: Mosquitto, influx: InfluxV1, db: str,
            victoria: VictoriaMetrics) -> Path:
    text = f"""
[gateway]
id = "{gw_id}"
data_dir = "{tmp / 'data'}"
status_listen = "127.0.0.1:0"

[[devices]]
id = "air-pm-1"
kind = "pms5003"
port = "{pms_port}"
tags = {{ site = "plaza mayor" }}

[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}

[[mqtt.routes]]
topic = "{gw_id}/sensors/+/json"
format = "json"
device_id = "{{2}}"

[aggregation]
windows = ["10s"]
grace = "1s"

[[influx]]
api = "v1"
url = "{influx.url}"
database = "{db}"

[[influx]]
api = "v2"
url = "{victoria.url}"
org = "city"
bucket = "citygw"
token_env = "E2E_TOKEN"

[local_store]
enabled = true
"""
    path = tmp / "kit.toml"
    path.write_text(text)
    return path


def test_kit_end_to_end(tmp_path: Path, mosquitto: Mosquitto, influx_v1: InfluxV1,
                        victoria: VictoriaMetrics) -> None:
    gw_id = f"e2e-{time.time_ns() % 10**9}"
    db = gw_id.replace("-", "_")
    influx_v1.create_database(db)
    frames, pm25_sent = _pms_frames(25)
    queue: list[bytes] = []  # filled once the gateway has opened the port (pyserial flushes input on open)
    pms = StreamingPtyDevice(lambda now: queue.pop(0) if queue else b"", period_s=0.1)
    feed = FeedSubscriber(mosquitto.port, f"citygw/{gw_id}/#")
    config = _config(tmp_path, gw_id, pms.port, mosquitto, influx_v1, db, victoria)
    gateway = GatewayProcess(config, tmp_path / "gateway.log", env={"E2E_TOKEN": "s3cret-token"}).start()
    try:
        wait_for(lambda: "status" in str(feed.snapshot()), 30, "the gateway's online status on the feed")
        wait_for(lambda: gateway.input_connections() == 1, 30, "the MQTT input subscribed")
        assert gateway.proc is not None
        wait_for(lambda: port_open_by(gateway.proc.pid, pms.port), 30, "the gateway to open the pty")
        time.sleep(0.5)  # pyserial configures the port and flushes its input just after opening it
        queue.extend(frames)
        base = (time.time_ns() // (10 * S)) * 10 * S - 100 * S
        noise_ts = [base + i * S for i in range(30)]
        noise_values = [50.0 + (i % 7) for i in range(30)]
        publish_all(mosquitto.port, [
            (f"{gw_id}/sensors/noise-1/json", json_mapping.encode("noise-1", ts, {"noise_laeq": v}))
            for ts, v in zip(noise_ts, noise_values, strict=True)
        ])

        def influx_rows(sql: str) -> list[dict[str, object]]:
            return influx_v1.query(sql, db=db)

        wait_for(lambda: len(influx_rows("SELECT value FROM reading WHERE device_id='noise-1'")) == 30, 60,
                 "30 noise readings in influxd")
        wait_for(lambda: len(influx_rows(
            "SELECT value FROM reading WHERE device_id='air-pm-1' AND quantity='pm2_5'")) == 25, 60,
            f"25 PM2.5 readings in influxd (frames left unsent: {len(queue)}, sent: {pms.frames_sent})")
        wait_for(lambda: len(influx_rows("SELECT value FROM kpi WHERE device_id='noise-1'")) == 3, 60,
                 "3 noise KPI windows in influxd")

        # Raw readings: exact values and event timestamps from the MQTT device.
        rows = influx_rows("SELECT value FROM reading WHERE device_id='noise-1'")
        assert [r["time"] for r in rows] == noise_ts
        assert [r["value"] for r in rows] == noise_values
        # The pty device: every frame's value, in order, with the receipt timestamps the gateway journaled.
        rows = influx_rows("SELECT value, site FROM reading WHERE device_id='air-pm-1' AND quantity='pm2_5'")
        assert [r["value"] for r in rows] == pm25_sent
        assert {r["site"] for r in rows} == {"plaza mayor"}
        store = tmp_path / "data" / "store"
        stored = [orjson.loads(line) for f in sorted(store.glob("readings-*.jsonl"))
                  for line in f.read_bytes().splitlines()]
        stored_pm = [s for s in stored if s["device_id"] == "air-pm-1" and s["quantity"] == "pm2_5"]
        assert [s["ts"] for s in stored_pm] == [r["time"] for r in rows]
        assert len(influx_rows("SELECT value FROM reading WHERE device_id='air-pm-1'")) == 25 * 12

        # KPI points: 10 s windows, energetic mean of exactly the values in each window.
        kpis = influx_rows("SELECT value, \"count\", \"max\", \"min\", coverage, valid FROM kpi "
                           "WHERE device_id='noise-1' AND \"window\"='10s'")
        expected = []
        for w in range(3):
            chunk = np.array(noise_values[w * 10:(w + 1) * 10])
            expected.append(10 * np.log10(np.mean(10 ** (chunk / 10))))
        assert [k["time"] for k in kpis] == [base, base + 10 * S, base + 20 * S]
        assert [k["value"] for k in kpis] == pytest.approx(expected, abs=1e-9)
        assert [k["count"] for k in kpis] == [10, 10, 10]
        assert all(k["valid"] == "true" and k["coverage"] == 1.0 for k in kpis)

        # VictoriaMetrics through influxdb-client's v2 write API: the same readings (ms timestamps).
        def vm_noise() -> list[tuple[int, float]]:
            series = victoria.export('{__name__="reading_value",device_id="noise-1",db!~".+"}')
            series = [s for s in series if s.labels.get("quantity") == "noise_laeq"]
            return series[0].points() if series else []

        wait_for(lambda: len(vm_noise()) == 30, 60, "30 noise readings in VM")
        points = vm_noise()
        assert points == [(ts // 1_000_000, v) for ts, v in zip(noise_ts, noise_values, strict=True)]
        vm_kpi = wait_for(lambda: victoria.export('{__name__="kpi_value",device_id="noise-1"}'), 30,
                          "noise KPIs in VM")
        assert [v for _, v in vm_kpi[0].points()] == pytest.approx(expected, abs=1e-9)

        # The live feed: every KPI window of the noise device arrived as JSON, retained topic per series.
        topic = f"citygw/{gw_id}/kpi/noise-1/noise_laeq/10s"
        wait_for(lambda: len(feed.snapshot().get(topic, [])) >= 3, 30, "3 KPI messages on the feed")
        got = feed.snapshot()[topic]
        assert [m["value"] for m in got[-3:]] == pytest.approx(expected, abs=1e-9)
        assert got[-1]["start"] == base + 20 * S and got[-1]["window"] == "10s" and got[-1]["count"] == 10
        assert feed.snapshot()[f"citygw/{gw_id}/status"][-1] == "online"
    finally:
        code = gateway.stop()
        pms.close()
    log = gateway.log()
    assert code == 0, log
    assert "s3cret-token" not in log
    wait_for(lambda: feed.snapshot()[f"citygw/{gw_id}/status"][-1] == "offline", 10, "offline status")
    feed.close()
