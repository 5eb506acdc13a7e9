"""The central tier's engine (issue 14 part 3): a 3-node NATS 2.9 cluster with JetStream takes a simulated LoRaWAN
application's TTN v3 uplinks (5,000 devices) on its MQTT listener, and the account's subject mapping
`partition(3, <device id token>)` splits them into three partitions by device. Three partition consumers with
persistent MQTT sessions (QoS 1, what a `citygw run` instance's input is) check, from the payloads:

- every uplink reaches exactly one partition, and every device always the same one (a device's windows can
  then be computed by one instance only);
- a consumer that dies without a word (its socket closed, like a SIGKILLed process) finds its partition's
  uplinks held in JetStream when it comes back: nothing lost, no other partition got them;
- a NATS node killed mid-run does not stop the traffic (the MQTT sessions' streams have three replicas).

`citygw run` instances consume the partitions end to end through JetStream durable consumers in
tests/fleet/test_central_jetstream.py, the path chosen (docs/fleet.md "Central tier on NATS"). This test reads
the payloads, not the topics: its mapping keeps TTN's `<application>@<tenant>` in one token, and NATS 2.9.10
cuts a subject holding an `@` when it delivers it across the cluster's routes (e.g. `/lora-00001/up` for
`part/0/v3/…/devices/lora-00001/up`); the production mapping splits the `@` off (`{{split(1,@)}}`,
docs/fleet.md explains the cause). The MQTT-listener path was not run end to end with `citygw run`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest

from simulators.mqtt_publishers import make_payload
from tests.fleet.central_support import publish_uplinks
from tests.fleet.nats_cluster import NatsCluster
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration  # real nats-server processes (no shared server fixture)

S = 10**9
PARTITIONS = 3
# Devices of the simulated LoRaWAN application: the fleet size. FLEET_TEST_DEVICES makes it smaller for
# a quick local run.
N_DEVICES = int(os.environ.get("FLEET_TEST_DEVICES", "5000"))
# NATS subject of a TTN uplink: v3.<application>.devices.<device id>.up; the device id is wildcard 2.
MAPPINGS = {"v3.*.devices.*.up":
            f"part.{{{{partition({PARTITIONS},2)}}}}.v3.{{{{wildcard(1)}}}}.devices.{{{{wildcard(2)}}}}.up"}


class _PartitionConsumer:
    """One partition's subscriber: persistent session (clean_session=False), QoS 1, like citygw's MQTT input."""

    def __init__(self, partition: int, port: int, run: str) -> None:
        self.partition = partition
        self.port = port
        self.client_id = f"{run}-part-{partition}"
        self.received: list[tuple[str, int]] = []  # (device id, event time) from each payload
        self.lock = threading.Lock()
        self.client: mqtt.Client | None = None

    def connect(self) -> None:
        """Connect and (re)subscribe to the partition."""
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.on_connect = lambda cl, u, f, r, p: cl.subscribe(f"part/{self.partition}/v3/+/devices/+/up", qos=1)
        c.on_message = self._on_message
        c.connect("127.0.0.1", self.port, keepalive=10)
        c.loop_start()
        self.client = c

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        doc = orjson.loads(msg.payload)
        with self.lock:
            self.received.append((doc["end_device_ids"]["device_id"], doc["uplink_message"]["received_at"]))

    def die(self) -> None:
        """Close the socket under the client, no DISCONNECT: what the broker sees of a SIGKILLed process."""
        assert self.client is not None
        sock = self.client.socket()
        self.client.loop_stop()
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.client = None

    def close(self) -> None:
        """Disconnect cleanly."""
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()
            self.client = None

    def unique(self) -> set[tuple[str, int]]:
        """What arrived, without QoS 1's redeliveries."""
        with self.lock:
            return set(self.received)


def test_nats_partitions_uplinks_by_device(tmp_path: Path) -> None:
    run = f"p{time.time_ns() % 10**8}"
    cluster = NatsCluster(tmp_path / "nats", MAPPINGS).start()
    node0, node1, node2 = cluster.nodes
    consumers = [_PartitionConsumer(i, (node0, node1)[i % 2].mqtt_port, run) for i in range(PARTITIONS)]
    devices = [f"lora-{d:05d}" for d in range(N_DEVICES)]
    base = (time.time_ns() // (60 * S)) * 60 * S - 180 * S
    waves = [[make_payload("ttn_v3", 14, base + off * S, dev) for dev in devices] for off in (0, 30, 62)]
    try:
        for c in consumers:
            c.connect()
        wait_for(lambda: all(c.client is not None and c.client.is_connected() for c in consumers), 60,
                 "the partition consumers to connect")
        time.sleep(2.0)  # the SUBSCRIBE follows the CONNACK; NATS creates each session's JetStream consumer
        started = time.monotonic()
        publish_uplinks(node0.mqtt_port, waves[0])
        consumers[1].die()  # partition 1's instance dies; its uplinks must wait in JetStream
        node2.kill()  # and a NATS node dies: two of three keep JetStream's quorum
        publish_uplinks(node0.mqtt_port, waves[1] + waves[2])
        consumers[1].connect()  # the restarted instance resumes its session
        total = N_DEVICES * len(waves)
        wait_for(lambda: sum(len(c.unique()) for c in consumers) >= total, 300,
                 f"{total} uplinks in the partitions")
        elapsed = time.monotonic() - started
        print(f"{total} uplinks of {N_DEVICES} devices through 3 partitions (one consumer killed and back, "
              f"one NATS node killed): {elapsed:.1f} s")

        got = [c.unique() for c in consumers]
        sent = {(dev, orjson.loads(p)["uplink_message"]["received_at"]) for wave in waves for _, p in wave
                for dev in [orjson.loads(p)["end_device_ids"]["device_id"]]}
        assert set().union(*got) == sent  # nothing lost
        assert sum(len(g) for g in got) == len(sent)  # no uplink in two partitions
        owner: dict[str, int] = {}
        for i, g in enumerate(got):
            for dev, _ in g:
                assert owner.setdefault(dev, i) == i, f"{dev} in partitions {owner[dev]} and {i}"
        assert len(owner) == N_DEVICES
        spread = Counter(owner.values())
        # The hash spreads devices evenly: each partition within 15 % of a third at this size.
        assert all(abs(n - N_DEVICES / PARTITIONS) < 0.15 * N_DEVICES / PARTITIONS for n in spread.values()), spread
    finally:
        for c in consumers:
            c.close()
        cluster.close()
