"""What the central-tier tests and bench/fleet.py share: the device partition, the network server's publisher,
one central instance's config, the uplink timing and the InfluxDB counts they compare."""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tests.servers import InfluxV1, Mosquitto

__all__ = ["UPLINK_OFFSETS_S", "central_config", "kpi_count", "kpis", "partition", "publish_uplinks", "reading_count"]

# Each device's uplinks, seconds after the minute `base`, published one right after the other (a network server
# forwarding a device's queued uplinks): the first 1-minute window gets two and is closed by the third's event
# time (62 s, grace 1 s); the second window, with one reading, is closed by the wall clock once the device has
# been quiet for the idle time — the same in every run, as no device falls quiet between its own uplinks.
UPLINK_OFFSETS_S = (0, 30, 62)


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
        c.loop_stop()
        c.disconnect()


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


def reading_count(influx: InfluxV1, db: str, where: str = "") -> int:
    """Readings in the database; -1 when influxd, busy taking the writes, does not answer in time."""
    try:
        rows = influx.query(f"SELECT count(value) FROM reading {where}", db=db)
    except OSError:
        return -1
    return int(rows[0]["count"]) if rows else 0


def kpis(influx: InfluxV1, db: str, before_ns: int) -> list[dict[str, Any]]:
    """KPI points before `before_ns`, with what the tests compare (value, count, min, max, gateway, device, name)."""
    return influx.query(f'SELECT value, "count", "min", "max", gateway, device_id, "name" FROM kpi '
                        f"WHERE time < {before_ns}", db=db)


def kpi_count(influx: InfluxV1, db: str, before_ns: int) -> int:
    """KPI points before `before_ns`; -1 when influxd does not answer in time."""
    try:
        return len(kpis(influx, db, before_ns))
    except OSError:
        return -1
