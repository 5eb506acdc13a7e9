"""Our MQTT connections turn Nagle's algorithm off (paho leaves it on; small PUBACKs would then wait)."""

from __future__ import annotations

import socket

from devices.registry import get_kind
from ingest.mqtt_client import MqttOptions
from ingest.mqtt_source import MqttSource, Route
from tests.integration.helpers import wait_for
from tests.servers import Mosquitto


class _NullEmitter:
    def readings(self, readings: object, ack: object = None) -> None: ...

    def rejected(self, device_id: str, reason: str, data: bytes | None = None) -> None: ...

    def device_state(self, device_id: str, available: bool, reason: str = "") -> None: ...


def test_input_socket_has_tcp_nodelay(mosquitto: Mosquitto) -> None:
    source = MqttSource(_NullEmitter(), MqttOptions("127.0.0.1", mosquitto.port, client_id="nodelay-test"),
                        [Route("nodelay/#", get_kind("json"))])
    source.start()
    try:
        wait_for(lambda: source.connected, 10, "the MQTT connection")
        sock = source.client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        source.stop()
