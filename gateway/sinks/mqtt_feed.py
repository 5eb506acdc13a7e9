"""The live indicator feed: KPI points as retained JSON under the gateway's own topic prefix.

Topic tree (documented in README.md):
  <prefix>/status                                   "online" / "offline" (retained; "offline" is the last will)
  <prefix>/kpi/<device_id>/<name>/<window>          latest KPI point (retained, QoS 1)
  <prefix>/reading/<device_id>/<quantity>           every raw reading (not retained; only when feed.raw = true)
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Sequence

import orjson
import paho.mqtt.client as mqtt

from gateway.journal import KIND_KPI, Entry
from gateway.sinks.base import Action, SinkError
from gateway.sinks.local_store import entry_dict
from ingest.mqtt_client import MqttOptions, build_client, connect_properties, set_nodelay

__all__ = ["MqttFeedSink", "topic_level"]

log = logging.getLogger("citygw.feed")

# What may not stand in one topic level: the separator and wildcards, and what MQTT forbids in any UTF-8 string
# (Mosquitto drops the connection as a "malformed packet"): C0 and C1 control characters including DEL, UTF-16
# surrogates (a str decoded with surrogateescape holds them) and the Unicode non-characters.
_NONCHARACTERS = "".join(chr(plane << 16 | low) for plane in range(17) for low in (0xFFFE, 0xFFFF))
_UNSAFE = re.compile("[/+#\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef" + _NONCHARACTERS + "]")


def topic_level(text: str) -> str:
    """Make a value safe as one topic level: separators, wildcards and characters MQTT forbids become '_'."""
    return _UNSAFE.sub("_", text) or "_"


class MqttFeedSink:
    """Publishes through its own connection, with a last will that marks the gateway offline."""

    def __init__(self, name: str, opts: MqttOptions, prefix: str, raw: bool = False, qos: int = 1,
                 publish_timeout_s: float = 10.0) -> None:
        self.name = name
        self.prefix = prefix.rstrip("/")
        self.raw = raw
        self.only_kind = None if raw else KIND_KPI  # raw readings only when configured
        self.qos = qos
        self.publish_timeout_s = publish_timeout_s
        self.status_topic = f"{self.prefix}/status"
        self._opts = opts
        self._connected = threading.Event()
        self.client = build_client(opts)
        self.client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(opts.host, opts.port, keepalive=opts.keepalive, clean_start=False,
                                  properties=connect_properties(opts))
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: mqtt.ReasonCode,
                    props: object) -> None:
        if reason.is_failure:
            log.error("feed: broker refused the connection: %s", reason)
            return
        set_nodelay(client)
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       props: object) -> None:
        self._connected.clear()

    def topic_for(self, e: Entry) -> str:
        """Where an entry is published; always under the prefix."""
        if e.kind == KIND_KPI:
            window = str((e.extra or {}).get("window", ""))
            topic = f"{self.prefix}/kpi/{topic_level(e.device_id)}/{topic_level(e.quantity)}/{topic_level(window)}"
        else:
            topic = f"{self.prefix}/reading/{topic_level(e.device_id)}/{topic_level(e.quantity)}"
        if not topic.startswith(self.prefix + "/"):  # defence in depth: never publish outside our prefix
            raise SinkError(Action.DROP, f"topic {topic!r} is outside the feed prefix")
        return topic

    def body(self, entry: Entry) -> str:
        """The JSON payload."""
        return orjson.dumps(entry_dict(entry)).decode()

    def write(self, entries: Sequence[Entry]) -> None:
        """Publish the batch and wait for every PUBACK before reporting success."""
        if not self._connected.wait(timeout=self.publish_timeout_s):
            raise SinkError(Action.RETRY, f"not connected to the MQTT broker {self._opts.host}:{self._opts.port}")
        infos = []
        for e in entries:
            retain = e.kind == KIND_KPI
            infos.append(self.client.publish(self.topic_for(e), orjson.dumps(entry_dict(e)), qos=self.qos,
                                             retain=retain))
        for info in infos:
            if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
                raise SinkError(Action.RETRY, f"publish failed: {mqtt.error_string(info.rc)}")
            try:
                info.wait_for_publish(timeout=self.publish_timeout_s)
            except (RuntimeError, ValueError) as exc:
                raise SinkError(Action.RETRY, f"publish not acknowledged: {exc}") from None
            if not info.is_published():
                raise SinkError(Action.RETRY, "broker did not acknowledge the publish in time")

    def close(self) -> None:
        """Mark the gateway offline (a clean stop does not fire the last will), then disconnect."""
        if self._connected.is_set():
            info = self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()
