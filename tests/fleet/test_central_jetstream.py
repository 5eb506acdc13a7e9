"""The central tier end to end on NATS JetStream (issue 14 parts 3 and 4): a 3-node NATS 2.9 cluster, the
account's subject mapping `partition(3, <device id>)` and one JetStream stream (3 replicas) holding the three
partitions; three `citygw run` instances each read one partition through a durable pull consumer
(`[nats]`, ingest/nats_source.py), and a single instance reads all three through its own consumer: the
reference, fed the same messages at the same time. influxd 1.6.7 receives both.

The network server publishes a simulated LoRaWAN application's TTN v3 uplinks (1,000 devices by default,
FLEET_TEST_DEVICES=5000 for the issue's fleet size): the first third over MQTT to NATS's MQTT listener, the rest
over core NATS with JetStream acknowledgements (as The Things Stack's NATS pub/sub integration can), while:
- instance 1 is SIGKILLed once it has delivered part of its partition, and restarted (systemd's
  Restart=always): its consumer kept its messages;
- the NATS node leading the stream is killed: the stream elects another leader and traffic goes on.

Checked: every reading arrives once; every device's KPI points come from exactly one instance, the one NATS's
hash gives it; no KPI point is written twice; every instance, the one SIGKILLed and restarted included, equals
the single instance exactly.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from devices.reading import DecodeContext
from devices.registry import get_kind
from simulators.mqtt_publishers import make_payload
from tests.fleet.central_support import UPLINK_OFFSETS_S, kpi_count, kpis, publish_uplinks, reading_count
from tests.fleet.nats_cluster import NatsCluster, jetstream_config, nats_partition, ttn_partition_mapping
from tests.integration.helpers import GatewayProcess, wait_for
from tests.servers import InfluxV1

S = 10**9
PARTITIONS = 3
STREAM = "UPLINKS"
# 1,000 devices keep this test well under 90 s on the loaded 2-core CI machine; FLEET_TEST_DEVICES=5000 runs the
# issue's fleet size.
N_DEVICES = int(os.environ.get("FLEET_TEST_DEVICES", "1000"))


def test_three_jetstream_instances_equal_one(tmp_path: Path, influx_v1: InfluxV1) -> None:
    run = f"js{time.time_ns() % 10**9}"
    central_db, single_db = f"{run}_central", f"{run}_single"
    influx_v1.create_database(central_db)
    influx_v1.create_database(single_db)
    cluster = NatsCluster(tmp_path / "nats", ttn_partition_mapping(PARTITIONS))
    processes: list[GatewayProcess] = []
    base = (time.time_ns() // (60 * S)) * 60 * S - 180 * S
    devices = [f"lora-{d:05d}" for d in range(N_DEVICES)]
    messages = [make_payload("ttn_v3", 14, base + off * S, dev) for dev in devices for off in UPLINK_OFFSETS_S]
    # What the decoder makes of them: the readings, and one KPI point per device, quantity and 1-minute window.
    ttn = get_kind("ttn_v3")
    per_message = [ttn.decode(p, DecodeContext("", 0, t)) for t, p in messages]
    expected = sum(len(rs) for rs in per_message)
    n_kpis = len({(r.device_id, r.quantity, r.ts // (60 * S)) for rs in per_message for r in rs})
    # The first wave is the first third of the devices, whole: a device whose uplinks straddled the pause between
    # the waves would be idle in between, and the wall clock would close its window (in either run).
    first_wave = len(UPLINK_OFFSETS_S) * (N_DEVICES // 3)
    first_wave_not_1 = sum(len(rs) for rs in per_message[:first_wave]
                           if rs and nats_partition(rs[0].device_id, PARTITIONS) != 1)
    try:
        cluster.start()  # before the configs: a port taken meanwhile moves a node on its first start
        cluster.add_stream(STREAM, ["part.*.>"], replicas=3)
        urls = cluster.client_urls()
        # ack_wait 10 s: what the SIGKILLed instance had fetched comes back this long after its delivery.
        instances = [GatewayProcess(jetstream_config(tmp_path / f"c{i}", f"{run}-c{i}", urls, influx_v1.url,
                                                     central_db, STREAM, f"part.{i}.>", ack_wait="10s"),
                                    tmp_path / f"c{i}.log") for i in range(PARTITIONS)]
        single = GatewayProcess(jetstream_config(tmp_path / "single", f"{run}-single", urls, influx_v1.url,
                                                 single_db, STREAM, "part.*.>", ack_wait="10s"),
                                tmp_path / "single.log")
        processes += [*instances, single]
        leader = cluster.stream_info(STREAM).cluster.leader
        victim = next(n for n in cluster.nodes if n.server_name == leader)
        publisher = next(n for n in cluster.nodes if n is not victim)  # the network server's node stays up
        for p in processes:
            p.start()
        for p in processes:
            wait_for(lambda p=p: "connected to NATS" in p.log(), 90,  # type: ignore[misc]
                     f"{p.config.parent.name} to bind its consumer")
        started = time.monotonic()
        publish_uplinks(publisher.mqtt_port, messages[:first_wave], inflight=500)  # over NATS's MQTT listener
        wait_for(lambda: reading_count(influx_v1, central_db, f"WHERE gateway = '{run}-c1'") > 0, 120,
                 "instance 1 to deliver its first readings")
        instances[1].kill()  # SIGKILL: no shutdown work; its consumer keeps what it had not acknowledged
        wait_for(lambda: reading_count(influx_v1, central_db, f"WHERE gateway != '{run}-c1'") == first_wave_not_1, 120,
                 "instances 0 and 2 to deliver the first wave", interval=0.5)
        victim.kill()  # the stream's leader: JetStream elects another one from the two replicas left
        cluster.js_publish(publisher, messages[first_wave:])  # over core NATS, JetStream acks, to a live node
        instances[1].start()
        wait_for(lambda: reading_count(influx_v1, single_db) == expected, 300, f"{expected} readings (single instance)",
                 interval=1.0)
        wait_for(lambda: reading_count(influx_v1, central_db) == expected, 300, f"{expected} readings (3 instances)",
                 interval=1.0)
        end = base + 120 * S
        wait_for(lambda: kpi_count(influx_v1, single_db, end) == n_kpis, 300,
                 "both KPI windows of every device (single instance)", interval=1.0)
        wait_for(lambda: kpi_count(influx_v1, central_db, end) >= n_kpis, 300,
                 "both KPI windows of every device (3 instances)", interval=1.0)
        print(f"{N_DEVICES} devices, {len(messages)} uplinks, {expected} readings through JetStream, 3 instances "
              f"(one SIGKILLed and restarted, the stream leader {leader} killed) and a single one: "
              f"{time.monotonic() - started:.0f} s")

        single_kpis = {(r["device_id"], r["name"], r["time"]): r for r in kpis(influx_v1, single_db, end)}
        central = kpis(influx_v1, central_db, end)
        keys = Counter((r["device_id"], r["name"], r["time"]) for r in central)
        assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1][:5]  # no KPI point twice
        assert set(keys) == set(single_kpis)
        assert {d for d, _, _ in keys} == set(devices)  # both windows of every device closed
        differ = []
        for r in central:
            want = single_kpis[(r["device_id"], r["name"], r["time"])]
            # The device's partition is NATS's hash of its id: one instance per device.
            assert r["gateway"] == f"{run}-c{nats_partition(r['device_id'], PARTITIONS)}", r
            if not ((r["count"], r["min"], r["max"]) == (want["count"], want["min"], want["max"])
                    and r["value"] == pytest.approx(want["value"], rel=1e-12)):
                differ.append((r["gateway"], r["device_id"], r["name"], r["time"], r["count"], want["count"]))
        assert differ == [], f"{len(differ)} windows differ from the single run; first: {differ[:3]}"
        assert reading_count(influx_v1, central_db) == reading_count(influx_v1, single_db) == expected
    finally:
        codes = [p.stop(timeout=60) for p in processes if p.proc is not None and p.proc.poll() is None]
        cluster.close()
    assert all(c == 0 for c in codes), "\n".join(p.log()[-2000:] for p in processes)
