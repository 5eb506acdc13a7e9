"""MQTT input: QoS 1 on a persistent session; a message is acknowledged only after its readings are journaled.

paho's network thread decodes each message with its route's format and hands the readings to the emitter
with an `ack` callback; the pipeline calls it after the journal commit. paho reconnects forever (backoff
up to reconnect_max) and the broker redelivers unacknowledged messages on the persistent session.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from ingest.base import Emitter
from ingest.mqtt_client import MqttOptions, build_client, connect_failure_message, connect_properties, set_nodelay
from ingest.mqtt_session import SESSION_TAKEN_OVER, SubscriptionMemory, TakeoverWatch
from ingest.routes import RETAINED_REASON, Rejected, Route, RouteTable, decode_for_route

__all__ = ["RETAINED_REASON", "MqttSource", "Route", "decode_for_route"]

log = logging.getLogger("citygw.mqtt")

_KEEPALIVE_TIMEOUT = 0x8D  # DISCONNECT reason paho reports when our keepalive expired (no answer from the broker)


class MqttSource:
    """Subscribes the routes' topics and feeds decoded readings to the emitter."""

    def __init__(self, emitter: Emitter, opts: MqttOptions, routes: list[Route],
                 clock_ns: Callable[[], int] = time.time_ns,
                 on_connection: Callable[[bool], None] = lambda up: None,
                 session_file: Path | None = None, on_takeover: Callable[[], None] = lambda: None) -> None:
        self.emitter = emitter
        self.opts = opts
        self.routes = routes
        self.table = RouteTable(routes, log)
        self.clock_ns = clock_ns
        self.on_connection = on_connection
        self.connected = False
        self.stopping = False
        self.messages = 0
        # Counts connections: an ack owed to a message of an earlier connection is not sent on a later one,
        # where its packet id may already name another message (the broker redelivers the first anyway).
        self.generation = 0
        # The session's subscriptions (unsubscribe routes removed from the config) and its other users.
        self.memory = SubscriptionMemory(session_file, opts.host, opts.port, opts.client_id)
        self.takeover = TakeoverWatch("MQTT input", opts.client_id, opts.host, opts.port, on_takeover)
        self._unsubscribing: dict[int, list[str]] = {}  # UNSUBSCRIBE packet id -> filters, until UNSUBACK
        self.client = build_client(opts, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_connect_fail = self._on_connect_fail
        self.failed_attempts = 0  # TCP/TLS connects that failed since the last connection (logged once each run)

    @property
    def device_kinds(self) -> dict[str, str]:
        """The route format each device was last decoded with (the status page's "kind"); bounded."""
        return self.table.device_kinds

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
            self.failed_attempts += 1  # logged once per outage, like an unreachable broker
            if self.failed_attempts == 1:
                log.error("MQTT broker %s:%d refused the connection: %s (check mqtt.username and "
                          "password_env/password_file, and the broker's ACL); retrying", self.opts.host,
                          self.opts.port, reason)
            return
        self.generation += 1
        set_nodelay(client)
        # Subscribe first: "connected" (the flag, the health check, the log line) then means the routes' SUBSCRIBE
        # is on its way, as with the bulk client, so a publisher that waits for it loses nothing on a new session.
        stale = self.memory.before_subscribe([r.topic for r in self.routes])
        if self.routes:
            client.subscribe([(r.topic, r.qos) for r in self.routes])
        if stale:
            _, mid = client.unsubscribe(stale)
            if mid is not None:
                self._unsubscribing[mid] = stale
        self.connected = True
        self.on_connection(True)
        log.info("connected to MQTT broker %s:%d (session present: %s)%s", self.opts.host, self.opts.port,
                 getattr(flags, "session_present", "?"),
                 f" after {self.failed_attempts} failed attempt(s)" if self.failed_attempts else "")
        self.takeover.connected(self.failed_attempts)
        self.failed_attempts = 0

    def _on_unsubscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        stale = self._unsubscribing.pop(mid, None)
        if stale:
            self.memory.unsubscribed(stale)
            log.info("unsubscribed from %s: no longer configured (the persistent session kept them)",
                     ", ".join(repr(f) for f in stale))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError`, so the error is still at hand.
        self.failed_attempts += 1
        if self.failed_attempts == 1 and not self.stopping:
            log.error("%s", connect_failure_message("MQTT input", self.opts, sys.exc_info()[1]))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected and not self.stopping and getattr(reason, "value", None) != _KEEPALIVE_TIMEOUT:
            # Our keepalive expiring is a silent network; anything else ended by the other side may be a
            # second client with our id (MQTT 5 says so; under 3.1.1 the broker just closes the socket).
            taken = getattr(flags, "is_disconnect_packet_from_server", False) and reason.value == SESSION_TAKEN_OVER
            self.takeover.closed_by_broker(definite=taken)
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

        outcome = self.table.decode(msg.topic, payload, msg.retain, self.clock_ns())
        if isinstance(outcome, Rejected):
            self.emitter.rejected(*outcome)
            ack()  # a bad payload will not get better on redelivery
            return
        self.emitter.readings(outcome, ack if qos > 0 else None)  # QoS 0: nothing to hold, drop when full
