"""Differential test: the bulk input and the paho input turn the same messages into the same outcomes.

30,000 seeded mutations of valid payloads of every MQTT format (the mutation fuzzer of
tests/reliability/mutations.py), delivered to `MqttSource._on_message` one by one and to
`BulkMqttSource.inbound.handle` in reads of 1 to 60 messages: the same readings (every field), the same rejections
(device and reason, in order), and the same messages acknowledged, each once.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import paho.mqtt.client as mqtt

from devices import json_mapping
from devices.reading import Reading
from devices.registry import get_kind
from ingest.mqtt_bulk import BulkMqttSource
from ingest.mqtt_client import MqttOptions
from ingest.mqtt_source import MqttSource, Route
from simulators.mqtt_publishers import make_payload
from tests.reliability.mutations import FORMATS, TS, mutate

CASES = 30_000


class Log:
    """An Emitter keeping readings and rejections in arrival order; acks at once (as after a commit)."""

    def __init__(self) -> None:
        self.readings_seen: list[Reading] = []
        self.rejections: list[tuple[str, str]] = []

    def readings(self, readings: list[Reading], ack: Any = None) -> None:
        self.readings_seen.extend(readings)
        if ack is not None:
            ack()

    def rejected(self, device_id: str, reason: str, data: bytes | None = None) -> None:
        self.rejections.append((device_id, reason))

    def device_state(self, device_id: str, available: bool, reason: str = "") -> None:
        raise AssertionError("no device state from MQTT")


class AckClient:
    """Stands in for paho's client in MqttSource: records acks."""

    def __init__(self) -> None:
        self.acks: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append(mid)

    def socket(self) -> None:
        return None


def _routes() -> list[Route]:
    routes = [Route(f"fz/{fmt}/#", get_kind(fmt), device_id="{2}") for fmt in FORMATS]
    routes.append(Route("fz/json/+", get_kind("json"), device_id="{2}", tags={"site": "plaza"}))
    return routes


def test_bulk_and_paho_inputs_agree_on_30k_mutated_messages() -> None:
    rng = random.Random(20261128)
    corpus: list[tuple[str, bytes]] = []
    for fmt in FORMATS:
        for seed in range(6):
            topic, payload = make_payload(fmt, seed, TS + seed * 10**9, f"dev-{seed}")
            corpus.append((f"fz/{fmt}/{topic}", payload))
    corpus += [(f"fz/json/dev-{i}", json_mapping.encode(f"dev-{i}", TS + i, {"pm2_5": 12.5})) for i in range(6)]
    corpus.append(("fz/json/no-ts", b'{"values": {"pm2_5": 3.0}}'))  # stamped with the receipt time
    corpus.append(("not/routed", b"{}"))
    messages = []
    for mid in range(1, CASES + 1):
        topic, payload = rng.choice(corpus)
        _, other = rng.choice(corpus)
        messages.append((mid, topic, mutate(rng, payload, other)))

    current = [0]  # the index of the message being delivered: its receipt time is TS + index

    paho_log = Log()
    paho = MqttSource(paho_log, MqttOptions(host="127.0.0.1", client_id="diff-paho"), _routes(),
                        clock_ns=lambda: TS + current[0])
    paho.connected = True
    client = AckClient()
    for index, (mid, topic, payload) in enumerate(messages):
        current[0] = index
        msg = mqtt.MQTTMessage(mid, topic.encode())
        msg.payload = payload
        msg.qos = 1
        paho._on_message(client, None, msg)  # type: ignore[arg-type]  # the fake has what the source uses

    first = [0]
    bulk_log = Log()
    bulk = BulkMqttSource(bulk_log, MqttOptions(host="127.0.0.1", client_id="diff-bulk"), _routes(),
                          clock_ns=lambda: TS + first[0], batch_messages=25)
    bulk.acks.connected = True
    try:
        pos = 0
        while pos < CASES:
            size = rng.randint(1, 60)
            first[0] = pos  # a read's receipt times start at its first message's index, 1 ns apart
            bulk.inbound.last_ns = 0
            bulk.inbound.handle([(1, mid, topic.encode(), payload, False)
                                 for mid, topic, payload in messages[pos:pos + size]])
            pos += size
        outbox = bytes(bulk.acks.outbox)
    finally:
        bulk.stop()

    assert bulk.messages == paho.messages == CASES
    assert bulk_log.rejections == paho_log.rejections
    assert len(paho_log.rejections) > CASES // 3 and len(paho_log.readings_seen) > CASES // 20  # both outcomes
    assert bulk_log.readings_seen == paho_log.readings_seen  # Reading is a dataclass: every field compared
    acked = [pid & 0xFFFF for pid in struct.unpack(f">{len(outbox) // 4}I", outbox)]
    assert sorted(acked) == client.acks == list(range(1, CASES + 1))
