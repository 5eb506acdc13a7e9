"""A 3-node NATS cluster with JetStream and the MQTT listener, on loopback ports in a temp dir (Debian's
`nats-server` 2.9). Each node is a `tests.servers.Server`; `NatsCluster` picks every port before the first start
(the nodes name each other's route ports) and waits until JetStream has a meta leader, without which the MQTT
listener refuses sessions."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.servers import HOST, Server, ServerError, free_port

__all__ = ["NatsCluster", "NatsNode"]


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
        (self.workdir / "nats.conf").write_text(f"""
server_name: {self.server_name}
listen: {HOST}:{self.port}
http: {HOST}:{self.monitor_port}
jetstream {{
  store_dir: "{self.workdir / 'js'}"
  max_memory_store: 64MB
  max_file_store: 2GB
}}
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

    def mqtt_ports(self) -> list[int]:
        """The MQTT listener of every node."""
        return [n.mqtt_port for n in self.nodes]

    def close(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            node.close()
