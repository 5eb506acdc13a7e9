"""Fault: the journal's disk cap is reached during an InfluxDB outage.

The gateway stays up and keeps accepting data; the oldest entries are dropped; the number dropped is exact
and reported the same in /metrics, in the journal's meta table and in the log; once InfluxDB is back it
receives exactly every entry that was not dropped. The MQTT feed keeps delivering KPI points meanwhile, so
the feed's cursor runs ahead of InfluxDB's (which has none yet): the count must follow the slowest sink.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from devices import json_mapping
from gateway.journal import wal_budget
from tests.integration.helpers import publish_all
from tests.reliability.support import GatewayProcess, StatusPage, journal_snapshot, kit_config, metric, wait_for
from tests.servers import InfluxV1, Mosquitto

S = 10**9
CAP = 96 * 1024
N = 3000


def test_disk_cap_drops_oldest_counts_exactly_and_stays_up(tmp_path: Path, mosquitto: Mosquitto,
                                                          fresh_influx_v1: InfluxV1) -> None:
    influx = fresh_influx_v1
    influx.stop()  # the outage
    gw_id = f"cap{time.time_ns() % 10**8}"
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json",
                        influx_url=influx.url, database=influx.database,
                        extra=f'\n[journal]\nmax_size = "{CAP}B"\n')
    journal = tmp_path / "data" / "journal.sqlite"
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    base = (time.time_ns() // S - 3 * 3600) * S
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        publish_all(mosquitto.port, [(f"{gw_id}/cap-1/json", json_mapping.encode("cap-1", base + i * S,
                                                                                 {"noise_laeq": 40 + i % 30}))
                                     for i in range(N)])
        wait_for(lambda: metric(status.metrics(), "citygw_journal_dropped_total") > 0, 30,
                 "the cap to drop entries")
        # Still up and still ingesting after the cap bit.
        publish_all(mosquitto.port, [(f"{gw_id}/cap-2/json", json_mapping.encode("cap-2", base + i * S,
                                                                                 {"noise_laeq": 50.0}))
                                     for i in range(100)])
        wait_for(lambda: status.status().get("accepted") == N + 100, 30, "the readings after the cap")
        # Entries get the cap minus the WAL's budget (the cap counts the WAL): under that, the cap is done.
        entries_cap = CAP - wal_budget(CAP)
        wait_for(lambda: status.status().get("journal_bytes", CAP + 1) <= entries_cap, 30,
                 "the journal back under its cap")
        assert gateway.proc is not None and gateway.proc.poll() is None
        feed = [s for s in status.status()["sinks"] if s["name"] == "mqtt-feed"]
        assert feed and feed[0]["delivered"] > 0  # the feed ran ahead of InfluxDB

        last, kept, meta, oldest = journal_snapshot(
            # entries, not rows: a pack row holds n, and its seq is its last entry's (gateway/journal.py)
            journal, "SELECT seq FROM sqlite_sequence WHERE name='entries'",
            "SELECT total(coalesce(n, 1)) FROM entries", "SELECT value FROM meta WHERE key='dropped_undelivered'",
            "SELECT min(seq - coalesce(n, 1) + 1) FROM entries")
        dropped = int(meta[0][0])
        # Nothing reached InfluxDB, so every entry missing from the journal was dropped undelivered.
        assert dropped == last[0][0] - kept[0][0]
        assert metric(status.metrics(), "citygw_journal_dropped_total") == dropped
        assert oldest[0][0] == dropped + 1  # the oldest went first, and only as many as the cap required
        assert 0 < dropped < last[0][0]
        influx.start()  # the uplink is back

        def count(measurement: str) -> int:
            rows = influx.query(f"SELECT count(value) FROM {measurement}")
            return int(rows[0]["count"]) if rows else 0

        wait_for(lambda: [s["lag"] for s in status.status()["sinks"] if s["name"] == "influx"] == [0], 60,
                 "the InfluxDB backlog drained")

        def delivered_all_kept() -> bool:
            ((last_seq,),), ((still_dropped,),) = journal_snapshot(
                journal, "SELECT seq FROM sqlite_sequence WHERE name='entries'",
                "SELECT value FROM meta WHERE key='dropped_undelivered'")
            assert int(still_dropped) == dropped  # under the cap since: nothing more was dropped
            return bool(count("reading") + count("kpi") == last_seq - dropped)

        wait_for(delivered_all_kept, 30, "exactly the entries that were not dropped in InfluxDB")
    finally:
        code = gateway.stop()
    log = gateway.log()
    assert code == 0, log
    logged = sum(int(n) for n in re.findall(r"dropped the (\d+) oldest undelivered entries", log))
    assert logged == dropped
    assert f"total dropped: {dropped})" in log
    # Exactly the newest readings survived: the last reading of cap-1 and every reading of cap-2.
    newest = influx.query("SELECT last(value) FROM reading WHERE device_id='cap-1'")
    assert newest[0]["last"] == 40 + (N - 1) % 30
    assert int(influx.query("SELECT count(value) FROM reading WHERE device_id='cap-2'")[0]["count"]) == 100
