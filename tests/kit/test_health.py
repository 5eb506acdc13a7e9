"""Health that means something: `/healthz` answers 503 with a JSON list of reasons for each fault, injected
against real servers — the broker killed, a sink answering 401, the journal stalled by another process's lock,
the journal at its cap during an outage — and 200 again once the fault is gone. The same reasons are on
/status.json and in the retained `<prefix>/health` topic published through the feed's connection. (A thread
that keeps crashing: tests/reliability/test_supervision.py; a full disk: tests/reliability/test_disk_full.py.)
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from devices import json_mapping
from tests.feeds.mqtt_feed_support import validators
from tests.integration.helpers import FeedSubscriber, publish_all
from tests.reliability.support import FaultProxy, GatewayProcess, StatusPage, kit_config, metric, wait_for
from tests.servers import InfluxV1, Mosquitto

S = 10**9
HEALTH = """
[health]
mqtt_down_after = "2s"
sink_lag_after = "2s"
ingest_stall_after = "2s"
"""


def reasons_about(status: StatusPage, prefix: str) -> list[str]:
    """The /healthz reasons that start with `prefix` (empty while healthy)."""
    code, body = status.healthz()
    if code != 503:
        return []
    return [r for r in body["reasons"] if r.startswith(prefix)]


def test_broker_killed_makes_healthz_503_then_200_when_it_is_back(tmp_path: Path,
                                                                   fresh_mosquitto: Mosquitto) -> None:
    gw_id = f"hb{time.time_ns() % 10**8}"
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=fresh_mosquitto.port, route_topic=f"{gw_id}/+/json",
                        extra=HEALTH)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        assert status.healthz() == (200, "ok")
        assert metric(status.metrics(), "citygw_healthy") == 1
        fresh_mosquitto.kill()
        reasons = wait_for(lambda: reasons_about(status, "mqtt:"), 30, "an MQTT reason")
        assert f"127.0.0.1:{fresh_mosquitto.port}" in reasons[0] and "health.mqtt_down_after = 2 s" in reasons[0]
        assert any(r.startswith("mqtt:") for r in status.status()["health"])
        wait_for(lambda: metric(status.metrics(), "citygw_healthy") == 0, 10, "the gauge (set once a second)")
        fresh_mosquitto.restart()
        wait_for(lambda: status.healthz() == (200, "ok"), 60, "healthy again after the broker came back")
    finally:
        code = gateway.stop()
    assert code == 0, gateway.log()
    log = gateway.log()
    assert log.count("unhealthy: mqtt:") == 1, log


def test_sink_answering_401_is_a_reason_on_healthz_status_and_the_health_topic(
        tmp_path: Path, mosquitto: Mosquitto, influx_v1: InfluxV1) -> None:
    gw_id = f"hs{time.time_ns() % 10**8}"
    db = f"db_{gw_id}"
    influx_v1.create_database(db)
    # A real HTTP server in front of the real influxd that refuses our (absent) credentials with a 401.
    proxy = FaultProxy(influx_v1.url, authorization="Bearer not-what-citygw-sends")
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json",
                        influx_url=proxy.url, database=db, extra=HEALTH)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    health_topic = f"citygw/{gw_id}/health"
    feed = FeedSubscriber(mosquitto.port, health_topic)
    now_s = time.time_ns() // S
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        publish_all(mosquitto.port, [(f"{gw_id}/hs-1/json", json_mapping.encode("hs-1", (now_s - 60 + i) * S,
                                                                                {"pm10": 20.0 + i}))
                                     for i in range(10)])
        reasons = wait_for(lambda: reasons_about(status, "sink influx:"), 30, "a sink reason")
        assert "health.sink_lag_after = 2 s" in reasons[0]
        assert "refused our credentials (HTTP 401)" in reasons[0]  # explained, not a raw "HTTP 401: {...}"
        assert any(r.startswith("sink influx:") for r in status.status()["health"])
        sink = next(s for s in status.status()["sinks"] if s["name"] == "influx")
        assert sink["failing"] and sink["oldest_undelivered_s"] >= 2 and sink["lag"] >= 10

        def published() -> list[Any]:
            return feed.snapshot().get(health_topic, [])

        unhealthy = wait_for(lambda: [m for m in published() if not m["healthy"]], 30, "an unhealthy document")
        assert unhealthy[-1]["gateway"] == gw_id
        assert any(r.startswith("sink influx:") for r in unhealthy[-1]["reasons"])

        health_schema = validators()["health"]  # the shipped JSON Schema, checked by jsonschema
        for document in published():
            health_schema.validate(document)
        proxy.authorization = None  # credentials "fixed": the proxy forwards to influxd
        wait_for(lambda: status.healthz() == (200, "ok"), 30, "healthy again after the sink recovered")
        wait_for(lambda: published() and published()[-1]["healthy"], 30, "a healthy document")
        assert len(influx_v1.query("SELECT value FROM reading", db=db)) == 10
    finally:
        feed.close()
        code = gateway.stop()
        proxy.close()
    assert code == 0, gateway.log()
    # A new subscriber gets the last state: the topic is retained.
    late = FeedSubscriber(mosquitto.port, health_topic)
    try:
        wait_for(lambda: late.snapshot().get(health_topic), 10, "the retained health document")
        last = late.snapshot()[health_topic][-1]
        assert last["healthy"] is True and last["reasons"] == []
        validators()["health"].validate(last)
    finally:
        late.close()


def test_stalled_journal_makes_healthz_503_while_input_waits(tmp_path: Path, mosquitto: Mosquitto) -> None:
    gw_id = f"hj{time.time_ns() % 10**8}"
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json",
                        extra=HEALTH)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    now_s = time.time_ns() // S
    locker: sqlite3.Connection | None = None
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        assert status.healthz() == (200, "ok")
        # Another process holds the journal's write lock: the ingest thread's commit waits (busy timeout).
        locker = sqlite3.connect(tmp_path / "data" / "journal.sqlite", isolation_level=None, timeout=30)
        locker.execute("BEGIN IMMEDIATE")
        publish_all(mosquitto.port, [(f"{gw_id}/hj-1/json", json_mapping.encode("hj-1", (now_s - 30 + i) * S,
                                                                                {"pm10": 10.0 + i}))
                                     for i in range(5)])
        reasons = wait_for(lambda: reasons_about(status, "ingest:"), 20, "an ingest reason")
        assert "nothing committed to the journal" in reasons[0] and "ingest_stall_after = 2 s" in reasons[0]
        wait_for(lambda: "unhealthy: ingest:" in gateway.log(), 10, "the stall logged (checked once a second)")
        locker.execute("ROLLBACK")
        wait_for(lambda: status.healthz() == (200, "ok"), 30, "healthy again after the lock was released")
        wait_for(lambda: "healthy again" in gateway.log(), 10, "the recovery logged")
        wait_for(lambda: status.status().get("accepted") == 5, 30, "the 5 readings journaled after the stall")
    finally:
        if locker is not None:
            locker.close()
        code = gateway.stop()
    assert code == 0, gateway.log()
    assert gateway.log().count("unhealthy: ingest:") == 1


def test_journal_at_its_cap_is_a_reason(tmp_path: Path, mosquitto: Mosquitto, fresh_influx_v1: InfluxV1) -> None:
    influx = fresh_influx_v1
    influx.stop()  # the uplink is down: nothing leaves the journal, which fills up to its cap
    gw_id = f"hc{time.time_ns() % 10**8}"
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json",
                        influx_url=influx.url, database=influx.database,
                        extra=f'\n[journal]\nmax_size = "{96 * 1024}B"\n' + HEALTH.replace('"2s"', '"1h"'))
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    base = (time.time_ns() // S - 3 * 3600) * S
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        assert status.healthz() == (200, "ok")
        publish_all(mosquitto.port, [(f"{gw_id}/hc-1/json", json_mapping.encode("hc-1", base + i * S,
                                                                                {"noise_laeq": 40 + i % 30}))
                                     for i in range(3000)])
        reasons = wait_for(lambda: reasons_about(status, "journal: at its cap"), 60, "the cap reason")
        assert "journal.max_size" in reasons[0]
        assert any(r.startswith("journal: at its cap") for r in status.status()["health"])
    finally:
        code = gateway.stop()
    assert code == 0, gateway.log()


def test_every_device_unavailable_is_a_reason(tmp_path: Path, mosquitto: Mosquitto) -> None:
    gw_id = f"hd{time.time_ns() % 10**8}"
    status = StatusPage()
    missing = tmp_path / "ttyUSB-unplugged"  # the serial device's port does not exist: it is unavailable
    extra = f'\n[[devices]]\nid = "pm-1"\nkind = "pms5003"\nport = "{missing}"\n'
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json",
                        extra=extra)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    try:
        reasons = wait_for(lambda: reasons_about(status, "devices:"), 30, "the devices reason")
        assert reasons[0].startswith("devices: all 1 device(s) unavailable (pm-1: cannot open")
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        # One device producing again is enough: the other one's state is on the page, not a gateway fault.
        publish_all(mosquitto.port, [(f"{gw_id}/hd-2/json", json_mapping.encode("hd-2", time.time_ns(),
                                                                                {"pm10": 5.0}))])
        wait_for(lambda: status.healthz() == (200, "ok"), 30, "healthy once a device is heard")
        assert next(d for d in status.status()["devices"] if d["id"] == "pm-1")["state"] == "unavailable"
    finally:
        code = gateway.stop()
    assert code == 0, gateway.log()
