"""A 3-node NATS cluster with JetStream and the MQTT listener, on loopback ports in a temp dir (Debian's
`nats-server` 2.9). Each node is a `tests.servers.Server`; `NatsCluster` picks every port before the first start
(the nodes name each other's route ports) and waits until JetStream has a meta leader, without which the MQTT
listener refuses sessions.

JetStream helpers for the nats-py path (tests/fleet/test_central_jetstream.py, bench/fleet.py): the stream of
the partitions, its leader, a network server publishing with JetStream acknowledgements, and NATS's own
`partition()` hash to check which instance owns a device."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nats

from tests.servers import HOST, Server, ServerError, free_port

__all__ = ["JetStreamServer", "NatsCluster", "NatsNode", "jetstream_config", "nats_partition",
           "ttn_partition_mapping"]


def ttn_partition_mapping(k: int) -> dict[str, str]:
    """TTN v3 uplinks (`v3.<app>@<tenant>.devices.<device>.up`) into k partitions by device id. The `@` is split
    off into its own token: NATS 2.9.10 mangles subjects holding `@` when it delivers them across its cluster
    (the subject is cut at the `@` and the rest glued onto the reply; docs/fleet.md)."""
    return {"v3.*.devices.*.up":
            f"part.{{{{partition({k},2)}}}}.v3.{{{{split(1,@)}}}}.devices.{{{{wildcard(2)}}}}.up"}


def jetstream_config(path: Path, gw_id: str, servers: Sequence[str], influx_url: str, db: str, stream: str,
                     subject: str, route: str = "part/+/v3/#", ack_wait: str = "30s") -> Path:
    """One central instance on a JetStream partition (durable = gateway id): TTN v3, 1-minute windows, InfluxDB 1.x."""
    path.mkdir(parents=True, exist_ok=True)
    file = path / "central.toml"
    file.write_text(f"""
[gateway]
id = "{gw_id}"
data_dir = "{path / 'data'}"
status_listen = "127.0.0.1:0"

[nats]
servers = [{", ".join(json.dumps(u) for u in servers)}]
stream = "{stream}"
durable = "{gw_id}"
subject = "{subject}"
batch = 500
max_ack_pending = 4000
ack_wait = "{ack_wait}"

[[nats.routes]]
topic = "{route}"
format = "ttn_v3"

[aggregation]
windows = ["1m"]
grace = "1s"

[[influx]]
api = "v1"
url = "{influx_url}"
database = "{db}"
batch_size = 5000
""")
    return file


def _msg_id(topic: str, payload: bytes) -> str:
    return hashlib.sha1(topic.encode() + payload).hexdigest()


def nats_partition(token: str, k: int) -> int:
    """NATS's `partition(k, …)` of one token: FNV-1a (32 bit) of its bytes, mod k."""
    h = 0x811C9DC5
    for byte in token.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % k


def _server_head(name: str, port: int, monitor_port: int, workdir: Path, max_file_store: str) -> str:
    """The part of a nats-server config every test server has: name, client and monitoring ports, JetStream."""
    return f"""
server_name: {name}
listen: {HOST}:{port}
http: {HOST}:{monitor_port}
jetstream {{
  store_dir: "{workdir / 'js'}"
  max_memory_store: 64MB
  max_file_store: {max_file_store}
}}
"""


class NatsNode(Server):
    """One nats-server: client port, MQTT port, cluster route port, HTTP monitoring port."""

    name = "nats"
    binary = "/usr/sbin/nats-server"
    package = "nats-server"

    def __init__(self, workdir: Path, server_name: str, cluster_port: int, routes: Sequence[int],
                 mappings: Mapping[str, str]) -> None:
        super().__init__(workdir, startup_timeout=60.0)
        self.server_name = server_name
        self.mqtt_port = free_port()
        self.monitor_port = free_port()
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.mappings = dict(mappings)

    def _reassign_ports(self) -> None:
        # The cluster port is known to the other nodes: only the node's own ports can move.
        self.port, self.mqtt_port, self.monitor_port = free_port(), free_port(), free_port()

    def _prepare(self) -> None:
        routes = ", ".join(f"nats-route://{HOST}:{p}" for p in self.routes)
        mappings = "\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in self.mappings.items())
        (self.workdir / "nats.conf").write_text(_server_head(self.server_name, self.port, self.monitor_port,
                                                             self.workdir, "2GB") + f"""
cluster {{
  name: citygw-test
  listen: {HOST}:{self.cluster_port}
  routes: [{routes}]
}}
mqtt {{
  listen: {HOST}:{self.mqtt_port}
  # the MQTT sessions' and QoS 1 messages' JetStream streams on every node: any one node may die
  stream_replicas: 3
  # how long a QoS 1 message waits for its PUBACK before it is sent again
  ack_wait: "30s"
  max_ack_pending: 10000
}}
mappings = {{
{mappings}
}}
""")

    def _command(self, executable: str) -> list[str]:
        return [executable, "-c", str(self.workdir / "nats.conf")]

    def monitor(self, path: str) -> dict[str, Any]:
        """GET a monitoring endpoint (varz, jsz, healthz …) as JSON."""
        with urllib.request.urlopen(f"http://{HOST}:{self.monitor_port}/{path}", timeout=5) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
        return doc

    def _ready(self) -> bool:
        try:
            self.monitor("varz")
        except OSError:
            return False
        return True

    def jetstream_ready(self) -> bool:
        """Whether this node sees a JetStream meta leader (it can then serve MQTT sessions)."""
        try:
            info = self.monitor("jsz")
        except (OSError, ValueError):
            return False
        return bool((info.get("meta_cluster") or {}).get("leader"))


class JetStreamServer(Server):
    """One nats-server with JetStream and nothing else (no cluster, no MQTT listener): starts in well under a
    second, for tests of the NATS input itself (tests/fleet/test_nats_observability.py). Its port is chosen at
    construction, so a gateway can be pointed at it before it starts; `restart()` keeps port and streams."""

    name = "nats"
    binary = "/usr/sbin/nats-server"
    package = "nats-server"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.monitor_port = free_port()

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://{HOST}:{self.port}"

    def _reassign_ports(self) -> None:
        self.port, self.monitor_port = free_port(), free_port()

    def _prepare(self) -> None:
        (self.workdir / "nats.conf").write_text(_server_head("js-single", self.port, self.monitor_port,
                                                             self.workdir, "256MB"))

    def _command(self, executable: str) -> list[str]:
        return [executable, "-c", str(self.workdir / "nats.conf")]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.monitor_port}/healthz?js-enabled-only=true",
                                        timeout=5) as resp:
                return int(resp.status) == 200
        except OSError:
            return False


class NatsCluster:
    """Three nodes routed to each other, with the same account mappings."""

    def __init__(self, workdir: Path, mappings: Mapping[str, str], size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [NatsNode(workdir / f"n{i}", f"n{i}", cluster_ports[i],
                               [p for j, p in enumerate(cluster_ports) if j != i], mappings) for i in range(size)]

    def start(self, timeout: float = 90.0) -> NatsCluster:
        """Start every node and wait for JetStream to elect its meta leader."""
        for node in self.nodes:
            node.start()
        self.wait_jetstream(timeout)
        return self

    def wait_jetstream(self, timeout: float = 90.0) -> None:
        """Wait until every running node sees a meta leader."""
        deadline = time.monotonic() + timeout
        while not all(n.jetstream_ready() for n in self.nodes if n.running):
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n.server_name}\n{n.log_tail(15)}" for n in self.nodes)
                raise ServerError(f"NATS JetStream elected no meta leader within {timeout:.0f} s:\n{tails}")
            time.sleep(0.2)

    def client_urls(self) -> list[str]:
        """The NATS client URL of every node."""
        return [f"nats://{HOST}:{n.port}" for n in self.nodes]

    def add_stream(self, name: str, subjects: Sequence[str], replicas: int = 3) -> None:
        """Create a file-backed JetStream stream (the operator's one-time setup)."""
        from nats.js.api import StreamConfig

        async def create() -> None:
            nc = await nats.connect(servers=self.client_urls())
            try:
                await nc.jetstream(timeout=30).add_stream(StreamConfig(
                    name=name, subjects=list(subjects), num_replicas=replicas))
            finally:
                await nc.close()

        asyncio.run(create())

    def stream_info(self, name: str) -> Any:
        """The stream's info (state, cluster leader) from any running node."""
        async def info() -> Any:
            nc = await nats.connect(servers=[f"nats://{HOST}:{n.port}" for n in self.nodes if n.running])
            try:
                return await nc.jetstream(timeout=30).stream_info(name)
            finally:
                await nc.close()

        return asyncio.run(info())

    def js_publish(self, node: NatsNode, messages: Sequence[tuple[str, bytes]], window: int = 500,
                   timeout_s: float = 120.0) -> None:
        """A network server publishing over core NATS with JetStream acks: every message awaited, a timed-out one
        sent again (its Nats-Msg-Id lets the stream drop a copy it already stored)."""
        async def publish() -> None:
            nc = await nats.connect(servers=[f"nats://{HOST}:{node.port}"], max_reconnect_attempts=-1)
            js = nc.jetstream(timeout=5)
            deadline = time.monotonic() + timeout_s
            try:
                for start in range(0, len(messages), window):
                    todo = list(messages[start:start + window])
                    while todo:
                        results = await asyncio.gather(
                            *[js.publish(t.replace("/", "."), p, headers={"Nats-Msg-Id": _msg_id(t, p)})
                              for t, p in todo], return_exceptions=True)
                        todo = [m for m, r in zip(todo, results, strict=True) if isinstance(r, Exception)]
                        if todo and time.monotonic() > deadline:
                            raise ServerError(f"JetStream did not acknowledge {len(todo)} publishes: {results[0]}")
            finally:
                await nc.close()

        asyncio.run(publish())

    def mqtt_ports(self) -> list[int]:
        """The MQTT listener of every node."""
        return [n.mqtt_port for n in self.nodes]

    def close(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            node.close()
