"""MQTT input: QoS 1 on a persistent session; a message is acknowledged only after its readings are journaled.

paho's network thread decodes each message with its route's format and hands the readings to the emitter
with an `ack` callback; the pipeline calls it after the journal commit. paho reconnects forever (backoff
up to reconnect_max) and the broker redelivers unacknowledged messages on the persistent session.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from devices.kind import DeviceKind
from devices.reading import EMPTY_TAGS, DecodeContext, DecodeError
from ingest.base import Emitter
from ingest.mqtt_client import MqttOptions, build_client, connect_properties, set_nodelay

__all__ = ["MqttSource", "Route"]

log = logging.getLogger("citygw.mqtt")

_LEVEL = re.compile(r"\{(\d+)\}")


@dataclass(frozen=True, slots=True)
class Route:
    """Topic filter → payload format, device-id template, tags and options."""

    topic: str
    kind: DeviceKind
    device_id: str = ""
    qos: int = 1
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def match_filter(self) -> str:
        """The filter without a `$share/<group>/` prefix (what topics are matched against)."""
        if self.topic.startswith("$share/"):
            return self.topic.split("/", 2)[2]
        return self.topic

    def device_for(self, topic: str) -> str:
        """Fill the device-id template from topic levels ({1} = second level)."""
        if not self.device_id:
            return ""
        levels = topic.split("/")
        return _LEVEL.sub(lambda m: levels[int(m.group(1))] if int(m.group(1)) < len(levels) else "",
                          self.device_id)


class MqttSource:
    """Subscribes the routes' topics and feeds decoded readings to the emitter."""

    def __init__(self, emitter: Emitter, opts: MqttOptions, routes: list[Route],
                 clock_ns: Callable[[], int] = time.time_ns,
                 on_connection: Callable[[bool], None] = lambda up: None) -> None:
        self.emitter = emitter
        self.opts = opts
        self.routes = routes
        self.clock_ns = clock_ns
        self.on_connection = on_connection
        self.connected = False
        self.stopping = False
        self.messages = 0
        # Counts connections: an ack owed to a message of an earlier connection is not sent on a later one,
        # where its packet id may already name another message (the broker redelivers the first anyway).
        self.generation = 0
        self.client = build_client(opts, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting until stop()."""
        self.client.connect_async(self.opts.host, self.opts.port, keepalive=self.opts.keepalive,
                                  clean_start=False, properties=connect_properties(self.opts))
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect (the broker keeps our session and unacknowledged messages) and stop the thread."""
        self.stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker %s:%d refused the connection: %s", self.opts.host, self.opts.port, reason)
            return
        self.generation += 1
        set_nodelay(client)
        self.connected = True
        self.on_connection(True)
        log.info("connected to MQTT broker %s:%d (session present: %s)", self.opts.host, self.opts.port,
                 getattr(flags, "session_present", "?"))
        if self.routes:
            client.subscribe([(r.topic, r.qos) for r in self.routes])

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected and not self.stopping:
            log.warning("disconnected from MQTT broker %s:%d (%s); reconnecting", self.opts.host,
                        self.opts.port, reason)
        self.connected = False
        self.on_connection(False)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages += 1
        mid, qos = msg.mid, msg.qos
        payload = bytes(msg.payload)
        generation = self.generation

        def ack() -> None:
            if qos > 0 and generation == self.generation and self.connected:
                client.ack(mid, qos)

        route = next((r for r in self.routes if mqtt.topic_matches_sub(r.match_filter, msg.topic)), None)
        if route is None:
            self.emitter.rejected("", f"no route matches topic {msg.topic!r}")
            ack()
            return
        device_id = route.device_for(msg.topic)
        ctx = DecodeContext(device_id=device_id, received_ns=self.clock_ns(), topic=msg.topic,
                            tags=route.tags, options=route.options)
        try:
            readings = route.kind.decode(payload, ctx)
        except DecodeError as exc:
            self.emitter.rejected(device_id or msg.topic, f"{route.kind.name} payload on {msg.topic}: "
                                  f"{exc.reason}", payload)
            ack()  # a bad payload will not get better on redelivery
            return
        except Exception as exc:
            log.exception("decoder %s raised %s (a bug: decoders may only raise DecodeError)",
                          route.kind.name, type(exc).__name__)
            self.emitter.rejected(device_id or msg.topic, f"decoder error {type(exc).__name__}: {exc}",
                                  payload)
            ack()
            return
        self.emitter.readings(readings, ack)
