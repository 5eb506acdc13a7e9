"""`mqtt.input_client = "bulk"` in a whole gateway: the setting (and its environment override) picks the bulk
input, and messages published at QoS 1 reach the journal exactly once and are acknowledged."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devices import json_mapping
from gateway.app import Gateway
from gateway.settings import load_settings
from ingest.mqtt_bulk import BulkMqttSource
from ingest.mqtt_source import MqttSource
from tests.integration.helpers import publish_all
from tests.servers import Mosquitto

S = 10**9


def _config(tmp: Path, port: int, gw_id: str, extra: str = "") -> Path:
    path = tmp / "kit.toml"
    path.write_text(f"""
[gateway]
id = "{gw_id}"
data_dir = "{tmp / 'data'}"
status_listen = ""

[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_max = "1s"
{extra}

[mqtt.feed]
enabled = false

[[mqtt.routes]]
topic = "{gw_id}/+/json"
format = "json"
device_id = "{{1}}"

[aggregation]
windows = ["1m"]
""")
    return path


def test_setting_and_environment_pick_the_input_class(tmp_path: Path) -> None:
    """"auto" (the default) is bulk for MQTT 3.1.1 without a QoS 2 route, paho for MQTT 5 or QoS 2."""
    cfg = _config(tmp_path, 1883, "pick")
    assert load_settings(cfg, env={}).mqtt.input_client == "auto"
    (tmp_path / "v5").mkdir()
    v5 = _config(tmp_path / "v5", 1883, "pick5", extra='protocol = "5"')
    qos2 = tmp_path / "qos2.toml"
    qos2.write_text(cfg.read_text().replace('format = "json"', 'format = "json"\nqos = 2'))
    for settings, cls in [(load_settings(cfg, env={}), BulkMqttSource),
                          (load_settings(v5, env={}), MqttSource),
                          (load_settings(qos2, env={}), MqttSource),
                          (load_settings(cfg, env={"CITYGW_MQTT_INPUT_CLIENT": "paho"}), MqttSource),
                          (load_settings(cfg, env={"CITYGW_MQTT_INPUT_CLIENT": "bulk"}), BulkMqttSource)]:
        gateway = Gateway(settings)
        try:
            assert type(gateway.mqtt_source) is cls
        finally:
            gateway.stop()  # never started: only closes the journals


def test_bulk_input_with_mqtt5_is_refused_at_construction(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 1883, "v5", extra='protocol = "5"\ninput_client = "bulk"')
    with pytest.raises(ValueError, match=r"MQTT 3\.1\.1 only"):
        Gateway(load_settings(cfg, env={}))


def test_gateway_with_the_bulk_input_journals_every_message_once(tmp_path: Path, mosquitto: Mosquitto) -> None:
    gw_id = f"bulk{time.time_ns() % 10**8}"
    gateway = Gateway(load_settings(_config(tmp_path, mosquitto.port, gw_id, 'input_client = "bulk"'), env={}))
    gateway.start()
    n = 2000
    base = (time.time_ns() // S - 1800) * S
    try:
        deadline = time.monotonic() + 10
        while not (gateway.mqtt_source and gateway.mqtt_source.connected) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        publish_all(mosquitto.port, [(f"{gw_id}/s{i % 5}/json",
                                      json_mapping.encode(f"s{i % 5}", base + i * 10**7, {"no2": float(i % 90)}))
                                     for i in range(n)])
        deadline = time.monotonic() + 20
        while gateway.pipeline.accepted < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        # Exactly once: a redelivered copy would be rejected as a duplicate, and counted.
        assert gateway.pipeline.accepted == n and gateway.pipeline.rejected_count == 0
        assert gateway.status()["mqtt_connected"] is True
    finally:
        gateway.stop()
