"""What the central-tier tests and bench/fleet.py share: the device partition, the network server's publisher and
one central instance's config."""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import paho.mqtt.client as mqtt

from tests.servers import InfluxV1, Mosquitto

__all__ = ["central_config", "partition", "publish_uplinks"]


def partition(device: str, k: int) -> int:
    """The publisher-side partition of a device: a stable hash, so one device always lands on one instance."""
    return zlib.crc32(device.encode()) % k


def publish_uplinks(port: int, messages: list[tuple[str, bytes]], inflight: int = 200, timeout_s: float = 300.0,
                    keepalive: int = 30) -> None:
    """The network server's side: QoS 1 publishes, every PUBACK awaited (paho reconnects and resends)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"lns-{time.time_ns() % 10**6}",
                    protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(inflight)
    c.connect("127.0.0.1", port, keepalive=keepalive)
    c.loop_start()
    try:
        infos = [c.publish(t, p, qos=1) for t, p in messages]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), f"the broker on port {port} did not acknowledge every uplink"
    finally:
        c.disconnect()
        c.loop_stop()


def central_config(path: Path, gw_id: str, broker: Mosquitto, influx: InfluxV1, db: str, topic: str) -> Path:
    """One central instance: its partition's topic, TTN v3, 1-minute windows, InfluxDB 1.x."""
    path.mkdir(parents=True, exist_ok=True)
    file = path / "central.toml"
    file.write_text(f"""
[gateway]
id = "{gw_id}"
data_dir = "{path / 'data'}"
status_listen = "127.0.0.1:0"

[mqtt]
host = "127.0.0.1"
port = {broker.port}

[[mqtt.routes]]
topic = "{topic}"
format = "ttn_v3"

[mqtt.feed]
enabled = false

[aggregation]
windows = ["1m"]
grace = "1s"

[[influx]]
api = "v1"
url = "{influx.url}"
database = "{db}"
batch_size = 5000
""")
    return file
