"""The sample route snippets in config/devices/<format>.toml name registered MQTT formats, and their options
are accepted by the decoder on a realistic message (a misspelt option value would raise DecodeError)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from devices.reading import DecodeContext
from devices.registry import get_kind
from simulators.mqtt_publishers import make_payload

CONFIG = Path(__file__).resolve().parents[2] / "config" / "devices"

# A message from the simulator on the topic layout each sample subscribes to.
SAMPLE_TOPICS = {
    "ttn_v3": "v3/city-air@ttn/devices/node-1/up",
    "tasmota": "tele/kit-1/SENSOR",
    "zigbee2mqtt": "zigbee2mqtt/air 1",
    "airrohr": "airrohr/kit-1/data",
    "telraam": "telraam/348917/traffic",
    "line_protocol": "telegraf/host-1/air",
}


@pytest.mark.parametrize("fmt", sorted(SAMPLE_TOPICS))
def test_sample_route_decodes_with_its_options(fmt: str) -> None:
    """Each sample has one [[mqtt.routes]] block for its format whose options decode a simulated message."""
    doc = tomllib.loads((CONFIG / f"{fmt}.toml").read_text(encoding="utf-8"))
    (route,) = doc["mqtt"]["routes"]
    assert route["format"] == fmt
    assert get_kind(fmt).link == "mqtt"
    _, payload = make_payload(fmt, 5, 1_717_000_000_000_000_000, "air 1")
    topic = SAMPLE_TOPICS[fmt]
    template = route.get("device_id", "")
    device_id = topic.split("/")[int(template.strip("{}"))] if template else ""
    ctx = DecodeContext(device_id=device_id, received_ns=1_717_000_000_000_000_000, topic=topic,
                        tags=route.get("tags", {}), options=route.get("options", {}))
    readings = get_kind(fmt).decode(payload, ctx)
    assert readings
    assert all(r.tags.items() >= route.get("tags", {}).items() for r in readings)
