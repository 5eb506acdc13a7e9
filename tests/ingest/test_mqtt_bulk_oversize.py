"""Issue 10 item 11: a PUBLISH larger than the bulk input's limit is a poison packet no more. A real 17 MiB
publish through Mosquitto is skipped as it streams in (never held whole), counted, reported once and
acknowledged; the good messages behind it arrive, on the same connection. `qos = 2` with the bulk input is a
config error naming file:line."""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.settings import ConfigError, load_settings
from ingest.mqtt_codec import MAX_PACKET
from tests.ingest.bulk_support import Collector, messages, source, wait_for
from tests.servers import Mosquitto

BIG = 17 * 1024 * 1024  # payload bytes: over the 16 MiB limit, under Mosquitto's default (no limit)


def _publisher(port: int) -> mqtt.Client:
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    return pub


def test_17_mib_publish_is_skipped_counted_acked_and_the_good_messages_arrive(mosquitto: Mosquitto) -> None:
    prefix = f"big{time.time_ns() % 10**9}"
    got = Collector()
    src = source(got, mosquitto.port, f"{prefix}-in", prefix)
    pub = _publisher(mosquitto.port)
    try:
        wait_for(lambda: src.connected, 10, "the bulk input to connect")
        time.sleep(0.3)  # the SUBSCRIBE is sent with the CONNECT exchange; let the broker register it
        infos = [pub.publish(f"{prefix}/poison/json", b"\x7b" * BIG, qos=1)]
        infos += [pub.publish(t, p, qos=1) for t, p in messages(prefix, 100)]
        for info in infos:
            info.wait_for_publish(timeout=60)
        wait_for(lambda: got.count() >= 100, 60, "the 100 good messages behind the big one")
        wait_for(lambda: src.oversized >= 1, 10, "the big one to be counted")
        assert got.count() == 100
        assert src.oversized == 1 and src.protocol_errors == 0
        assert src.generation == 1, "the connection was never dropped"
        assert src.peak_buffered < 2 * 1024 * 1024 < MAX_PACKET, "the big packet was never held whole"
        (reason,) = got.rejections
        assert reason.startswith("oversized MQTT message: ")
        topic = f"{prefix}/poison/json"
        size = 1 + 4 + 2 + len(topic) + 2 + BIG  # fixed header, 4-byte length, topic, packet id, payload
        assert f"a {size}-byte PUBLISH on '{topic}'" in reason
    finally:
        src.stop()
    # Acknowledged: the persistent session does not hand it over again on the next connection.
    again = Collector()
    src2 = source(again, mosquitto.port, f"{prefix}-in", prefix)
    try:
        wait_for(lambda: src2.connected, 10, "the reconnection")
        pub.publish(*messages(prefix, 1, start=500)[0], qos=1).wait_for_publish(timeout=10)
        wait_for(lambda: again.count() >= 1, 15, "the marker message")
        assert src2.oversized == 0 and again.rejections == []
    finally:
        src2.stop()
        pub.loop_stop()
        pub.disconnect()


def test_qos_2_route_with_the_bulk_input_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[mqtt]\nhost = "127.0.0.1"\ninput_client = "bulk"\n\n[[mqtt.routes]]\n'
                      'topic = "a/+/json"\nformat = "json"\n\n[[mqtt.routes]]\ntopic = "b/+/json"\n'
                      'format = "json"\nqos = 2\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.key) == (str(config), 12, "mqtt.routes[1].qos")
    assert "bulk" in problem.message and "qos = 1" in problem.message and 'input_client = "paho"' in problem.message
    config.write_text(config.read_text().replace('input_client = "bulk"', 'input_client = "paho"'))
    assert load_settings(config).mqtt.routes[1].qos == 2  # paho speaks QoS 2
