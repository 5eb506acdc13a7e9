"""What the bulk MQTT input's tests against a real Mosquitto share: canonical JSON messages with unique event
times, an Emitter that records what arrives, a started bulk source, and a poll-until helper."""

from __future__ import annotations

import threading
import time
from typing import Any

from devices import json_mapping
from devices.reading import Reading
from devices.registry import get_kind
from ingest.mqtt_bulk import BulkMqttSource
from ingest.mqtt_client import MqttOptions
from ingest.mqtt_source import Route

S = 10**9
BASE = (time.time_ns() // S - 3600) * S  # an hour ago: inside the validator's accepted range


def wait_for(cond: Any, timeout: float, what: str) -> None:
    """Poll until `cond()` is true."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Collector:
    """An Emitter recording (device, ts) of every reading; acks at once (as after a commit) unless told not to."""

    def __init__(self, ack: bool = True) -> None:
        self.ack = ack
        self.lock = threading.Lock()
        self.keys: list[tuple[str, int]] = []
        self.rejections: list[str] = []
        self.calls = 0

    def readings(self, readings: list[Reading], ack: Any = None) -> None:
        with self.lock:
            self.calls += 1
            self.keys.extend((r.device_id, r.ts) for r in readings)
        if self.ack and ack is not None:
            ack()

    def rejected(self, device_id: str, reason: str, data: bytes | None = None) -> None:
        with self.lock:
            self.rejections.append(reason)

    def device_state(self, device_id: str, available: bool, reason: str = "") -> None:
        raise AssertionError("no device state from MQTT")

    def count(self) -> int:
        with self.lock:
            return len(self.keys)


def messages(prefix: str, n: int, start: int = 0) -> list[tuple[str, bytes]]:
    """n canonical JSON messages on `<prefix>/<device>/json`, unique event times."""
    return [(f"{prefix}/d{i % 7}/json", json_mapping.encode(f"d{i % 7}", BASE + i * 1_000_000,
                                                              {"pm2_5": float(i % 50)}))
            for i in range(start, start + n)]


def source(emitter: Any, port: int, client_id: str, prefix: str, **kw: Any) -> BulkMqttSource:
    """A started bulk source subscribed to `<prefix>/+/json` at QoS 1."""
    opts = MqttOptions(host="127.0.0.1", port=port, client_id=client_id, reconnect_max_s=kw.pop("reconnect", 1.0),
                       keepalive=kw.pop("keepalive", 30))
    src = BulkMqttSource(emitter, opts, [Route(f"{prefix}/+/json", get_kind("json"), "{1}")], **kw)
    src.start()
    return src
