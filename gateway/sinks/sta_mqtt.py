"""SensorThings MQTT create: Observations published on `v1.1/Datastreams(<id>)/Observations` (STA v1.1 §14.2).

The broker is the one the SensorThings server listens on (FROST's built-in MQTT port, or a broker it bridges).
These topics are fixed by the standard, so this is the one place citygw publishes outside its own prefix,
and only when `transport = "mqtt"` is configured. A PUBACK means the broker has the message; SensorThings'
MQTT create has no answer, so a refusal by the server is not seen here (docs/feeds.md).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as mqtt

from gateway.sinks.base import Action, SinkError
from gateway.sinks.sta_http import entity_path
from ingest.mqtt_client import MqttOptions, build_client, set_nodelay

if TYPE_CHECKING:
    from gateway.settings import SensorThingsSection

__all__ = ["StaMqttPublisher", "observation_topic"]

log = logging.getLogger("citygw.sensorthings")


def observation_topic(version: str, datastream_id: Any) -> str:
    """The MQTT create topic of a Datastream's Observations."""
    return f"{version}/{entity_path('Datastreams', datastream_id)}/Observations"


class StaMqttPublisher:
    """Its own paho connection to the SensorThings server's broker; a batch counts only after every PUBACK.

    Nothing touches the network before `start()` (or the first publish): constructing it only configures the client.
    """

    def __init__(self, cfg: SensorThingsSection, gateway_id: str, username: str, password: str,
                 publish_timeout_s: float = 10.0) -> None:
        parts = urlsplit(cfg.url)
        self.version = parts.path.rstrip("/").rsplit("/", 1)[-1] or "v1.1"
        self.host = cfg.mqtt_host or parts.hostname or "localhost"
        self.port = cfg.mqtt_port
        self.publish_timeout_s = publish_timeout_s
        opts = MqttOptions(host=self.host, port=self.port, client_id=f"citygw-{gateway_id}-sta",
                           username=username, password=password, tls=cfg.mqtt_tls,
                           ca_file=cfg.ca_file if cfg.mqtt_tls else None)
        self._connected = threading.Event()
        self._started = False
        self._start_lock = threading.Lock()
        self.client = build_client(opts)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        """Connect in the background (paho's network thread reconnects with backoff); later calls do nothing."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: mqtt.ReasonCode,
                    props: object) -> None:
        if reason.is_failure:
            log.error("sensorthings: broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        set_nodelay(client)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       props: object) -> None:
        self._connected.clear()

    def publish(self, observations: list[tuple[Any, dict[str, Any]]]) -> None:
        """Publish (datastream id, observation) pairs at QoS 1 and wait for every PUBACK."""
        self.start()
        if not self._connected.wait(timeout=self.publish_timeout_s):
            raise SinkError(Action.RETRY, f"not connected to the SensorThings MQTT broker {self.host}:{self.port}")
        infos = [self.client.publish(observation_topic(self.version, ds), orjson.dumps(obs), qos=1)
                 for ds, obs in observations]
        for info in infos:
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise SinkError(Action.RETRY, f"publish failed: {mqtt.error_string(info.rc)}")
            try:
                info.wait_for_publish(timeout=self.publish_timeout_s)
            except (RuntimeError, ValueError) as exc:
                raise SinkError(Action.RETRY, f"publish not acknowledged: {exc}") from None
            if not info.is_published():
                raise SinkError(Action.RETRY, "the SensorThings broker did not acknowledge the publish in time")

    def close(self) -> None:
        """Disconnect and stop the network thread (nothing to do if it never started)."""
        if not self._started:
            return
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()
