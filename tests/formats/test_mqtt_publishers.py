"""MQTT simulators: deterministic realistic payloads, injected faults, and a publisher round trip through a
real Mosquitto broker (the `mosquitto` / `fresh_mosquitto` fixtures of tests/conftest.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from devices.reading import DecodeContext, DecodeError, Reading
from devices.registry import get_kind
from devices.vocabulary import QUANTITIES
from simulators.mqtt_publishers import (
    FAULTS,
    FORMATS,
    MqttPublisher,
    make_faulty_payload,
    make_payload,
    run_publisher,
)
from tests.servers import Mosquitto, free_port

TS = 1_717_000_000_123_456_789  # 2024-05-29T16:26:40Z


def _decode(fmt: str, topic: str, payload: bytes) -> list[Reading]:
    return get_kind(fmt).decode(payload, DecodeContext(received_ns=TS, topic=topic))


@pytest.mark.parametrize("fmt", FORMATS)
def test_make_payload_deterministic_and_decodable(fmt: str) -> None:
    """Same arguments → same bytes; the format's decoder reads it; values lie in the vocabulary's ranges."""
    topic, payload = make_payload(fmt, 7, TS, "dev-1")
    assert make_payload(fmt, 7, TS, "dev-1") == (topic, payload)
    assert make_payload(fmt, 8, TS, "dev-1")[1] != payload
    assert make_payload(fmt, 7, TS, "dev-2")[1] != payload
    readings = _decode(fmt, topic, payload)
    assert len(readings) >= 4
    for r in readings:
        q = QUANTITIES[r.quantity]
        assert r.unit in q.units
        assert q.low <= r.value <= q.high, (r.quantity, r.value)
    assert len({r.device_id for r in readings}) == 1


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("fault", FAULTS)
def test_injected_faults_are_rejected_except_unknown_keys(fmt: str, fault: str) -> None:
    """Every fault but unknown_keys makes the decoder raise DecodeError; unknown keys still decode."""
    for seed in range(12):
        topic, payload = make_faulty_payload(fmt, seed, TS + seed, f"dev-{seed}", fault)
        assert payload != make_payload(fmt, seed, TS + seed, f"dev-{seed}")[1]
        if fault == "unknown_keys":
            good_topic, good = make_payload(fmt, seed, TS + seed, f"dev-{seed}")
            assert _decode(fmt, topic, payload) == _decode(fmt, good_topic, good)
        else:
            with pytest.raises(DecodeError):
                _decode(fmt, topic, payload)


def test_unknown_format_and_fault() -> None:
    """Unknown names are programming errors (ValueError), not silent no-ops."""
    with pytest.raises(ValueError, match="unknown simulated format"):
        make_payload("nope", 1, TS, "d")
    with pytest.raises(ValueError, match="unknown fault"):
        make_faulty_payload("json", 1, TS, "d", "gremlins")


class _Collector:
    """A QoS 1 subscriber that records every (topic, payload) it receives."""

    def __init__(self, broker: Mosquitto, topic_filter: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"col-{uuid.uuid4()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def wait_for(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_publisher_round_trip_with_faults(mosquitto: Mosquitto) -> None:
    """Every format through a real broker: all messages acked and received intact; rejections = faults."""
    run_id = uuid.uuid4().hex[:8]
    collector = _Collector(mosquitto, f"rt-{run_id}/#")
    try:
        for fmt in FORMATS:
            prefix = f"rt-{run_id}/{fmt}"
            stats = run_publisher(mosquitto.host, mosquitto.port, fmt, rate_hz=400, count=24, seed=11,
                                  topic_prefix=prefix, faults=0.35, keep=24)
            assert (stats.published, stats.acked, stats.failed, stats.unacked) == (24, 24, 0, 0), stats.errors
            assert sorted(stats.acked_mids) == sorted(stats.sent_mids) and len(set(stats.sent_mids)) == 24
            assert sum(stats.faults.values()) == sum(1 for _, _, f in stats.sent if f) > 0
            received = [m for m in collector.wait_for(24 * (FORMATS.index(fmt) + 1)) if m[0].startswith(prefix)]
            assert Counter(received) == Counter((t, p) for t, p, _ in stats.sent)
            rejected = 0
            for topic, payload in received:
                try:
                    readings = _decode(fmt, topic[len(prefix) + 1:], payload)
                except DecodeError:
                    rejected += 1
                else:
                    assert readings
            assert rejected == sum(n for fault, n in stats.faults.items() if fault != "unknown_keys")
    finally:
        collector.close()


def test_duration_mode_and_rate(mosquitto: Mosquitto) -> None:
    """With a duration and no count, the publisher runs about rate × duration messages, all acked."""
    stats = run_publisher(mosquitto.host, mosquitto.port, "json", rate_hz=40, count=None, seed=3,
                          topic_prefix=f"dur-{uuid.uuid4().hex[:8]}", duration_s=0.5)
    assert 12 <= stats.published <= 22
    assert stats.acked == stats.published
    assert 0.45 <= stats.elapsed_s < 3.0


def test_acks_counted_only_when_broker_answers(fresh_mosquitto: Mosquitto) -> None:
    """While the broker is frozen nothing is acknowledged; after it resumes, every mid is."""
    publisher = MqttPublisher(fresh_mosquitto.host, fresh_mosquitto.port, client_id="ack-test")
    publisher.connect()
    try:
        fresh_mosquitto.freeze()
        try:
            mids = [publisher.publish("ack/test", b"%d" % i) for i in range(5)]
            assert None not in mids and len(set(mids)) == 5
            assert publisher.wait_acked(0.5) is False
            assert publisher.acked == 0
        finally:
            fresh_mosquitto.thaw()
        assert publisher.wait_acked(10.0) is True
        assert publisher.acked == 5
        assert sorted(publisher.acked_mids) == sorted(m for m in mids if m is not None)
    finally:
        publisher.close()


def test_unreachable_broker_raises_connection_error() -> None:
    """A broker that is not there is a ConnectionError naming host and port."""
    port = free_port()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        run_publisher("127.0.0.1", port, "tasmota", rate_hz=10, count=1, seed=1)
