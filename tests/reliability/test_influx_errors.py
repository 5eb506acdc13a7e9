"""Fault: InfluxDB answers 429/503 with Retry-After, or 400 for one bad point among good ones.

429 and 5xx are retried after the server's Retry-After (not sooner); a point influxd refuses for good (a field
type conflict gives a real HTTP 400) is isolated by splitting, kept in the journal's dead_letters table,
and does not hold up the points behind it.
"""

from __future__ import annotations

import time
from pathlib import Path

from devices import json_mapping
from tests.integration.helpers import publish_all
from tests.reliability.support import FaultProxy, GatewayProcess, StatusPage, journal_rows, kit_config, metric, wait_for
from tests.servers import InfluxV1, Mosquitto

S = 10**9


def _messages(gw_id: str, device: str, stamps: list[int]) -> list[tuple[str, bytes]]:
    return [(f"{gw_id}/{device}/json", json_mapping.encode(device, ts, {"pm10": 30.0 + i}))
            for i, ts in enumerate(stamps)]


def test_429_and_503_wait_for_retry_after(tmp_path: Path, mosquitto: Mosquitto, influx_v1: InfluxV1) -> None:
    gw_id = f"ra{time.time_ns() % 10**8}"
    db = f"db_{gw_id}"
    influx_v1.create_database(db)
    proxy = FaultProxy(f"{influx_v1.url}", script=[(429, {"Retry-After": "2"}), (503, {"Retry-After": "1"})])
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json",
                        influx_url=proxy.url, database=db)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    stamps = [(time.time_ns() // S - 7200 + i) * S for i in range(20)]
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        publish_all(mosquitto.port, _messages(gw_id, "ra-1", stamps))
        wait_for(lambda: len(influx_v1.query("SELECT value FROM reading", db=db)) == 20, 30, "20 readings")
    finally:
        code = gateway.stop()
        proxy.close()
    assert code == 0, gateway.log()
    writes = [(t, st) for t, path, st in proxy.log if path.startswith("/write")]
    assert [st for _, st in writes[:3]] == [429, 503, 204]
    assert writes[1][0] - writes[0][0] >= 2.0  # Retry-After: 2 honoured (backoff alone would be < 1 s)
    assert writes[2][0] - writes[1][0] >= 1.0  # Retry-After: 1 honoured
    assert "HTTP 429" in gateway.log()


def test_400_point_is_dead_lettered_and_does_not_block(tmp_path: Path, mosquitto: Mosquitto,
                                                       influx_v1: InfluxV1) -> None:
    gw_id = f"dl{time.time_ns() % 10**8}"
    db = f"db_{gw_id}"
    influx_v1.create_database(db)
    # `value` is a string in the 2021 shard: a float reading stamped then makes real influxd answer 400.
    bad_ts = 1_610_000_000 * S
    influx_v1.write(f'reading,device_id=other,quantity=pm10,unit=ug/m3 value="text" {bad_ts - S}', db=db)
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json",
                        influx_url=influx_v1.url, database=db)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    now_s = time.time_ns() // S
    before = [(now_s - 7200 + i) * S for i in range(30)]
    after = [(now_s - 7000 + i) * S for i in range(30)]
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        publish_all(mosquitto.port, [*_messages(gw_id, "dl-1", before),
                                     (f"{gw_id}/dl-bad/json", json_mapping.encode("dl-bad", bad_ts, {"pm10": 1.5})),
                                     *_messages(gw_id, "dl-2", after)])

        def good() -> int:
            return len(influx_v1.query("SELECT value FROM reading WHERE device_id='dl-1' OR device_id='dl-2'", db=db))

        wait_for(lambda: good() == 60, 30, "the 60 good readings around the bad one")
        wait_for(lambda: metric(status.metrics(), "citygw_sink_dead_letters_total", sink="influx") == 1, 30,
                 "one dead letter")
        wait_for(lambda: [s["lag"] for s in status.status()["sinks"] if s["name"] == "influx"] == [0], 30,
                 "no backlog behind the bad point")
    finally:
        code = gateway.stop()
    assert code == 0, gateway.log()
    assert influx_v1.query("SELECT value FROM reading WHERE device_id='dl-bad'", db=db) == []
    (row,) = journal_rows(tmp_path / "data" / "journal.sqlite", "SELECT sink, seq, reason, body FROM dead_letters")
    assert row[0] == "influx"
    assert "HTTP 400" in row[2] and "field type conflict" in row[2]
    assert row[3].startswith("reading,device_id=dl-bad,") and row[3].endswith(f" {bad_ts}")
    assert "refused 1 entry for good" in gateway.log()
