"""Issue 10 item 15: what the broker must be configured for, shown on a real Mosquitto 2. 3,000 QoS 1
messages, each acknowledged by the broker, are published while the gateway's MQTT input is away: with
Mosquitto's default `max_queued_messages 1000` the broker drops most of them (and says so in its log); with
the settings docs/reliability.md gives (read from the page itself), every one arrives."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from devices import json_mapping
from devices.registry import get_kind
from ingest.mqtt_client import MqttOptions
from ingest.mqtt_source import MqttSource, Route
from tests.ingest.bulk_support import BASE, Collector, wait_for
from tests.servers import Mosquitto

RELIABILITY = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
N = 3000
# Mosquitto 2.0's own defaults for what the test harness sets otherwise (tests/servers.py lifts the limits).
MOSQUITTO_DEFAULTS = "max_inflight_messages 20\nmax_queued_messages 1000\n"


def documented_broker_config() -> str:
    """The mosquitto.conf block of docs/reliability.md's broker section, as a technician would copy it."""
    text = RELIABILITY.read_text(encoding="utf-8")
    section = text[text.index("## The MQTT broker: what it must be configured for"):]
    block = re.search(r"```conf\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the broker section has a ```conf block"
    return block.group(1)


def _publish(port: int, items: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 and wait for every PUBACK: each message is the broker's responsibility from then on."""
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    pub.max_inflight_messages_set(100)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        infos = [pub.publish(t, p, qos=1) for t, p in items]
        for info in infos:
            info.wait_for_publish(timeout=30)
        assert all(info.is_published() for info in infos)
    finally:
        pub.loop_stop()
        pub.disconnect()


def _message(device: str, i: int) -> tuple[str, bytes]:
    return f"kit/{device}/json", json_mapping.encode(device, BASE + i * 1_000_000, {"pm2_5": float(i % 90)})


def _input(got: Any, port: int) -> MqttSource:
    src = MqttSource(got, MqttOptions(host="127.0.0.1", port=port, client_id="gw-in", reconnect_max_s=1.0),
                     [Route("kit/+/json", get_kind("json"), "{1}")])
    src.start()
    wait_for(lambda: src.connected, 10, "the gateway's MQTT input to connect")
    return src


def backlog_delivered(broker: Mosquitto) -> int:
    """Messages of a 3,000-message backlog published while the input was away that reach it afterwards."""
    got = Collector()
    src = _input(got, broker.port)
    try:
        _publish(broker.port, [_message("probe", 0)])  # proves the session's subscription is in place
        wait_for(lambda: got.count() == 1, 10, "the probe message")
    finally:
        src.stop()  # the gateway is down; the broker keeps its persistent session
    _publish(broker.port, [_message("d", i) for i in range(1, N + 1)])
    after = Collector()
    src = _input(after, broker.port)
    try:
        _publish(broker.port, [_message("marker", N + 1)])  # queued behind whatever the session holds
        wait_for(lambda: any(d == "marker" for d, _ in after.keys), 60, "the marker behind the backlog")
        time.sleep(0.5)  # nothing may follow the marker; a short look for stragglers
        return sum(1 for d, _ in after.keys if d == "d")
    finally:
        src.stop()


def test_default_queue_limit_drops_a_backlog_and_the_documented_config_keeps_it(server_factory: Any) -> None:
    default = server_factory(Mosquitto, extra_config=MOSQUITTO_DEFAULTS)
    delivered = backlog_delivered(default)
    assert delivered < N, "Mosquitto's default max_queued_messages 1000 should have dropped part of 3,000"
    assert "Outgoing messages are being dropped for client gw-in" in default.log_path.read_text()
    documented = server_factory(Mosquitto, extra_config=MOSQUITTO_DEFAULTS + documented_broker_config())
    assert backlog_delivered(documented) == N
    print(f"\nbacklog of {N}: {delivered} delivered with Mosquitto's defaults, {N} with the documented config")
