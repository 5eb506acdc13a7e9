"""The bulk MQTT input's faults against real servers: TLS with a password and a wrong password, a silent
(frozen) broker found by keepalive, a broker sending garbage, and a prompt stop while no CONNACK comes."""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from devices.registry import get_kind
from ingest.mqtt_bulk import BulkMqttSource
from ingest.mqtt_client import MqttOptions
from ingest.mqtt_source import Route
from tests.ingest.bulk_support import BASE, Collector, messages, source, wait_for
from tests.integration.helpers import publish_all
from tests.servers import MQTT_PASSWORD, MQTT_USER, Mosquitto


def test_tls_with_password_and_a_wrong_password(mosquitto_tls: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    broker = mosquitto_tls
    assert broker.tls is not None and broker.tls_port is not None
    got = Collector()
    opts = MqttOptions(host="127.0.0.1", port=broker.tls_port, client_id="tls-in", username=MQTT_USER,
                       password=MQTT_PASSWORD, tls=True, ca_file=broker.tls.ca_cert)
    src = BulkMqttSource(got, opts, [Route("tls/+/json", get_kind("json"), "{1}")])
    src.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    pub.username_pw_set(MQTT_USER, MQTT_PASSWORD)
    pub.tls_set(ca_certs=str(broker.tls.ca_cert))
    try:
        wait_for(lambda: src.connected, 10, "the TLS connection")
        time.sleep(0.3)
        pub.connect("127.0.0.1", broker.tls_port)
        pub.loop_start()
        infos = [pub.publish(t, p, qos=1) for t, p in messages("tls", 500)]
        for info in infos:
            info.wait_for_publish(timeout=10)
        wait_for(lambda: got.count() >= 500, 15, "500 messages over TLS")
        assert sorted(got.keys) == sorted((f"d{i % 7}", BASE + i * 1_000_000) for i in range(500))
    finally:
        pub.loop_stop()
        pub.disconnect()
        src.stop()
    # A wrong password: the refusal is logged (once), the input keeps retrying, nothing crashes.
    bad = BulkMqttSource(Collector(), MqttOptions(host="127.0.0.1", port=broker.tls_port, client_id="tls-bad",
                                                  username=MQTT_USER, password="wrong", tls=True,
                                                  ca_file=broker.tls.ca_cert, reconnect_max_s=0.3),
                         [Route("tls/+/json", get_kind("json"), "{1}")])
    with caplog.at_level(logging.INFO, logger="citygw.mqtt"):
        bad.start()
        try:
            wait_for(lambda: bad.connect_attempts >= 4, 15, "several attempts")
            assert not bad.connected and bad._thread is not None and bad._thread.is_alive()
        finally:
            bad.stop()
    refusals = [r for r in caplog.records if "refused the connection" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
    assert "not authorized" in refusals[0].getMessage() or "bad user name" in refusals[0].getMessage()
    assert all("wrong" not in r.getMessage() for r in caplog.records)  # the password is never logged
    assert bad._thread is not None and not bad._thread.is_alive()


def test_silent_broker_is_detected_by_keepalive(fresh_mosquitto: Mosquitto) -> None:
    broker = fresh_mosquitto
    got = Collector()
    src = source(got, broker.port, "ka-in", "ka", keepalive=2, reconnect=0.5)
    try:
        wait_for(lambda: src.connected, 10, "the connection")
        time.sleep(3.5)  # idle for longer than 1.5 × keepalive: PINGREQ/PINGRESP keep the connection
        assert src.connected and src.generation == 1
        broker.freeze()
        t0 = time.monotonic()
        wait_for(lambda: not src.connected, 8, "the dead connection to be noticed")
        assert time.monotonic() - t0 < 6  # 1.5 × keepalive, plus polling
        broker.thaw()
        wait_for(lambda: src.connected, 20, "the reconnection")
        publish_all(broker.port, messages("ka", 50))
        wait_for(lambda: got.count() >= 50, 10, "messages after the reconnection")
    finally:
        with contextlib.suppress(Exception):
            broker.thaw()
        src.stop()


class GarbageBroker:
    """A TCP server that answers CONNECT with (mostly) a CONNACK, then random bytes (a new mix each time)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="garbage-broker")
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(1024)
                    # A valid PUBLISH (topic g/a/j, packet id 1, payload {}) half the time; a quarter of the
                    # connections get garbage instead of the CONNACK (20 02 00 00, MQTT 3.1.1 section 3.2).
                    valid = b"\x32\x0b\x00\x05g/a/j\x00\x01{}" if self.rng.random() < 0.5 else b""
                    connack = b"\x20\x02\x00\x00" if self.rng.random() < 0.75 else b""
                    conn.sendall(connack + valid + self.rng.randbytes(self.rng.randint(1, 300)))
                    time.sleep(0.05)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.server.close()


def test_garbage_from_the_broker_closes_the_connection_and_never_kills_the_thread(
        caplog: pytest.LogCaptureFixture) -> None:
    fake = GarbageBroker(seed=7)
    got = Collector()
    src = BulkMqttSource(got, MqttOptions(host="127.0.0.1", port=fake.port, client_id="g-in", reconnect_max_s=0.05),
                         [Route("g/+/j", get_kind("json"), "{1}")])
    try:
        with caplog.at_level(logging.WARNING, logger="citygw.mqtt"):
            src.start()
            wait_for(lambda: fake.connections >= 15, 20, "15 connections")
            assert src._thread is not None and src._thread.is_alive()
    finally:
        src.stop()
        fake.close()
    assert src._thread is not None and not src._thread.is_alive()
    assert src.protocol_errors >= 1
    assert any("protocol error from the broker" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]  # no unexpected crash


def test_stop_is_prompt_while_waiting_for_a_connack_that_never_comes() -> None:
    # A listening socket nobody accepts from: the kernel completes the TCP handshake, nothing ever answers.
    with socket.create_server(("127.0.0.1", 0)) as mute:
        src = BulkMqttSource(Collector(), MqttOptions(host="127.0.0.1", port=mute.getsockname()[1], client_id="m"),
                             [Route("m/+/json", get_kind("json"), "{1}")])
        src.start()
        wait_for(lambda: src.connect_attempts >= 1, 5, "the connection attempt")
        time.sleep(0.3)  # now blocked reading the CONNACK
        t0 = time.monotonic()
        src.stop()
        assert time.monotonic() - t0 < 2.5
        assert src._thread is not None and not src._thread.is_alive() and not src.connected
