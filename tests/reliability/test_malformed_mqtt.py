"""Fault: malformed MQTT payloads, on every route format.

In-process, 100k+ cases go through the real `MqttSource._on_message` (topic routing, device-id template,
decoder, error handling) with a recording emitter: a seeded mutation fuzzer (bit flips, cuts, splices,
hostile values, non-UTF-8, deep nesting, big payloads) over valid payloads of every format, plus hypothesis
strategies. Each message ends in exactly one outcome: readings handed over with an ack, or a rejection with
a non-empty reason and an ack (a bad payload will not improve on redelivery); never an exception, and never
the "decoder bug" path. Then a smaller batch goes through a real broker to a running gateway, which keeps
running and counts each rejection exactly once.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import json_mapping
from devices.reading import Reading
from devices.registry import get_kind
from ingest.mqtt_client import MqttOptions
from ingest.mqtt_source import MqttSource, Route
from ingest.validate import Validator
from simulators.mqtt_publishers import make_payload
from tests.integration.helpers import publish_all
from tests.reliability.mutations import FORMATS, HOSTILE, TS, mutate
from tests.reliability.support import GatewayProcess, StatusPage, kit_config, metric, wait_for
from tests.servers import Mosquitto

CASES = 105_000


class FakeClient:
    """Stands in for paho's client: records acks."""

    def __init__(self) -> None:
        self.acks: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append(mid)


@dataclass
class Recorder:
    """An Emitter that records each outcome and acks readings at once (as the pipeline does after commit)."""

    outcomes: dict[int, list[str]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    current: int = 0
    validator: Validator = field(default_factory=lambda: Validator(lambda: TS + 10**15))

    def readings(self, readings: list[Reading], ack: Any = None) -> None:
        self.outcomes.setdefault(self.current, []).append("readings")
        for r in readings:
            assert isinstance(r, Reading) and isinstance(r.value, float) and math.isfinite(r.value)
            assert isinstance(r.ts, int) and r.device_id
            verdict = self.validator.check(r)  # the next stage: a reason or None, never an exception
            assert verdict is None or (isinstance(verdict, str) and verdict)
        if ack is not None:
            ack()

    def rejected(self, device_id: str, reason: str, data: bytes | None = None) -> None:
        self.outcomes.setdefault(self.current, []).append("rejected")
        assert isinstance(reason, str) and reason.strip()
        self.reasons.append(reason)

    def device_state(self, device_id: str, available: bool, reason: str = "") -> None:
        raise AssertionError("an MQTT source has no device state to report")


def _source() -> tuple[MqttSource, Recorder, FakeClient]:
    recorder = Recorder()
    routes = [Route(f"fz/{fmt}/#", get_kind(fmt), device_id="{2}") for fmt in FORMATS]
    routes.append(Route("fz/json/+", get_kind("json"), device_id="{2}"))
    source = MqttSource(recorder, MqttOptions(host="127.0.0.1", client_id="fuzz-in"), routes, clock_ns=lambda: TS)
    source.connected = True  # as if on a live connection, so acks are sent
    return source, recorder, FakeClient()


def _deliver(source: MqttSource, recorder: Recorder, client: FakeClient, mid: int, topic: str,
             payload: bytes) -> None:
    msg = mqtt.MQTTMessage(mid, topic.encode())
    msg.payload = payload
    msg.qos = 1
    recorder.current = mid
    source._on_message(client, None, msg)  # type: ignore[arg-type]  # the fake has what the source uses


def test_100k_mutated_payloads_through_the_mqtt_source() -> None:
    rng = random.Random(424242)
    source, recorder, client = _source()
    corpus: list[tuple[str, bytes]] = []
    for fmt in FORMATS:
        for seed in range(8):
            topic, payload = make_payload(fmt, seed, TS + seed * 10**9, f"dev-{seed}")
            corpus.append((f"fz/{fmt}/{topic}", payload))
    corpus += [(f"fz/json/dev-{i}", json_mapping.encode(f"dev-{i}", TS + i, {"pm2_5": 12.5, "temperature": 20.0}))
               for i in range(8)]
    started = time.monotonic()
    for mid in range(1, CASES + 1):
        topic, payload = rng.choice(corpus)
        _, other = rng.choice(corpus)
        _deliver(source, recorder, client, mid, topic, mutate(rng, payload, other))
    elapsed = time.monotonic() - started
    assert source.messages == CASES
    # Exactly one outcome per message, and every message acknowledged exactly once.
    assert len(recorder.outcomes) == CASES and all(len(v) == 1 for v in recorder.outcomes.values())
    assert client.acks == list(range(1, CASES + 1))
    rejected = sum(1 for v in recorder.outcomes.values() if v == ["rejected"])
    assert rejected > CASES // 3  # the fuzzer mostly produces garbage...
    assert CASES - rejected > CASES // 20  # ...and some still-valid payloads, which flow on
    # No decoder raised anything but DecodeError (that path is logged as a bug and says "decoder error").
    assert not [r for r in recorder.reasons if r.startswith("decoder error")]
    assert not Path("/tmp/citygw-pwned").exists()
    assert elapsed < 60


_SHARED = _source()  # one source for every hypothesis example: building a paho client is the slow part


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.binary(max_size=400), fmt=st.sampled_from((*FORMATS, "json")),
       level=st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="/+#\x00"),
                     max_size=12))
def test_hypothesis_payloads_and_topics(payload: bytes, fmt: str, level: str) -> None:
    source, recorder, client = _SHARED
    recorder.outcomes.clear()
    recorder.reasons.clear()
    client.acks.clear()
    _deliver(source, recorder, client, 7, f"fz/{fmt}/{level or 'x'}", payload)
    assert list(recorder.outcomes.values()) in ([["readings"]], [["rejected"]])
    assert client.acks == [7]
    assert not [r for r in recorder.reasons if r.startswith("decoder error")]


def test_unrouted_topic_is_rejected_with_a_reason_and_acked() -> None:
    source, recorder, client = _source()
    _deliver(source, recorder, client, 9, "elsewhere/x", b"{}")
    assert recorder.outcomes == {9: ["rejected"]} and client.acks == [9]
    assert recorder.reasons == ["no route matches topic 'elsewhere/x'"]


def test_running_gateway_survives_malformed_payloads_and_counts_them(tmp_path: Path, mosquitto: Mosquitto) -> None:
    rng = random.Random(99)
    gw_id = f"mal{time.time_ns() % 10**8}"
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json")
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    now = time.time_ns()
    bad: list[bytes] = []
    for i in range(300):
        good = json_mapping.encode("m-1", now - i * 10**9, {"pm2_5": 10.0})
        if i % 3 == 0:  # a proper prefix of a JSON object is never valid JSON
            bad.append(good[: rng.randrange(1, len(good) - 1)])
        elif i % 3 == 1:  # cannot start a JSON document
            bad.append(b"\xff" + rng.randbytes(rng.randint(0, 40)))
        else:
            bad.append(rng.choice(HOSTILE[:6] + HOSTILE[12:16]))
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        publish_all(mosquitto.port, [(f"{gw_id}/m-1/json", p) for p in bad])
        publish_all(mosquitto.port, [(f"{gw_id}/m-1/json", json_mapping.encode("m-1", now - 3600 * 10**9,
                                                                                 {"pm2_5": 33.0}))])
        wait_for(lambda: status.status().get("accepted") == 1, 30, "the valid reading after the bad ones")
        st = status.status()
        assert st["rejected"] == len(bad)
        assert metric(status.metrics(), "citygw_rejected_total", device="m-1") == len(bad)
        assert gateway.proc is not None and gateway.proc.poll() is None
    finally:
        code = gateway.stop()
    log = gateway.log()
    assert code == 0, log
    assert "decoder error" not in log and "Traceback" not in log
    assert "device m-1: rejected" in log
