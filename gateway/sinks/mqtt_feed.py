"""The live indicator feed: KPI points as retained JSON under the gateway's own topic prefix.

Topic tree (README.md; payloads in docs/feeds.md, JSON Schemas in schemas/feed/):
  <prefix>/status                                   "online" / "offline" (retained; "offline" is the last will)
  <prefix>/meta                                     birth information: version, devices, windows (retained JSON)
  <prefix>/health                                   {"healthy": bool, "reasons": [...]} as /healthz (retained)
  <prefix>/kpi/<device_id>/<name>/<window>          latest KPI point (retained, QoS 1)
  <prefix>/reading/<device_id>/<quantity>           raw readings (not retained; only when feed.raw = true),
                                                    by exception when the quantity has a deadband
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from gateway.journal import KIND_KPI, Entry
from gateway.sinks.base import Action, SinkError
from gateway.sinks.local_store import entry_dict
from ingest.mqtt_client import MqttOptions, build_client, connect_failure_message, connect_properties, set_nodelay

__all__ = ["MqttFeedSink", "ReportByException", "topic_level"]

log = logging.getLogger("citygw.feed")

# What may not stand in one topic level: the separator and wildcards, and what MQTT forbids in any UTF-8 string
# (Mosquitto drops the connection as a "malformed packet"): C0 and C1 control characters including DEL, UTF-16
# surrogates (a str decoded with surrogateescape holds them) and the Unicode non-characters.
_NONCHARACTERS = "".join(chr(plane << 16 | low) for plane in range(17) for low in (0xFFFE, 0xFFFF))
_UNSAFE = re.compile("[/+#\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef" + _NONCHARACTERS + "]")


def topic_level(text: str) -> str:
    """Make a value safe as one topic level: separators, wildcards and characters MQTT forbids become '_'."""
    return _UNSAFE.sub("_", text) or "_"


_Series = tuple[str, str]  # (device_id, quantity): one raw topic
_Last = tuple[float, int, str]  # value, event time (ns) and quality of the series' last published reading


class ReportByException:
    """Which raw readings the feed publishes: ThingsBoard's ON_CHANGE_OR_REPORT_PERIOD, per quantity.

    A quantity with a deadband (the key "*" covers every quantity) is published when its value moved by more
    than the deadband since the series' last published reading, when its quality changed, or when its event
    time is `max_interval` or more after that reading (the heartbeat). Quantities without a deadband are
    always published. State is kept for at most `max_series` series (least recently seen evicted: its next
    reading is published), so memory stays bounded whatever devices appear.
    """

    def __init__(self, deadband: Mapping[str, float], max_interval_s: Mapping[str, float],
                 max_series: int = 10_000) -> None:
        self.deadband = dict(deadband)
        self.max_interval_ns = {q: int(s * 1e9) for q, s in max_interval_s.items()}
        self.max_series = max_series
        self._last: OrderedDict[_Series, _Last] = OrderedDict()
        self.suppressed = 0  # readings not published because they stayed inside their deadband

    @property
    def active(self) -> bool:
        """Whether any quantity is reported by exception."""
        return bool(self.deadband)

    def select(self, entries: Sequence[Entry]) -> tuple[list[Entry], dict[_Series, _Last], int]:
        """The entries to publish, the state to remember once they are acknowledged, and how many were held back."""
        out: list[Entry] = []
        pending: dict[_Series, _Last] = {}
        held = 0
        for e in entries:
            band = self.deadband.get(e.quantity, self.deadband.get("*")) if e.kind != KIND_KPI else None
            if band is None:
                out.append(e)
                continue
            key = (e.device_id, e.quantity)
            last = pending.get(key) or self._last.get(key)
            heartbeat = self.max_interval_ns.get(e.quantity, self.max_interval_ns.get("*"))
            if (last is None or abs(e.value - last[0]) > band or e.quality != last[2]
                    or (heartbeat is not None and e.ts - last[1] >= heartbeat)):
                out.append(e)
                pending[key] = (e.value, e.ts, e.quality)
            else:
                held += 1
        return out, pending, held

    def commit(self, pending: Mapping[_Series, _Last], held: int) -> None:
        """Remember what was published (call only after the broker acknowledged it)."""
        for key, last in pending.items():
            self._last[key] = last
            self._last.move_to_end(key)
        while len(self._last) > self.max_series:
            self._last.popitem(last=False)
        self.suppressed += held


class MqttFeedSink:
    """Publishes through its own connection, with a last will that marks the gateway offline.

    Nothing touches the network before `start()` (or the first write): constructing the sink only configures
    the client. On every connection it publishes the retained birth information (`meta`), then `online`.
    """

    def __init__(self, name: str, opts: MqttOptions, prefix: str, raw: bool = False, qos: int = 1,
                 publish_timeout_s: float = 10.0, meta: Mapping[str, Any] | None = None,
                 report: ReportByException | None = None, historical_after_s: float = 60.0,
                 grace_s: float = 0.0, clock_ns: Callable[[], int] = time.time_ns,
                 on_suppressed: Callable[[int], None] | None = None) -> None:
        self.name = name
        self.prefix = prefix.rstrip("/")
        self.raw = raw
        self.only_kind = None if raw else KIND_KPI  # raw readings only when configured
        self.qos = qos
        self.publish_timeout_s = publish_timeout_s
        self.status_topic = f"{self.prefix}/status"
        self.meta_topic = f"{self.prefix}/meta"
        self.meta = dict(meta) if meta is not None else None
        self.report = report or ReportByException({}, {})
        self.historical_after_ns = int(historical_after_s * 1e9)
        self.grace_ns = int(grace_s * 1e9)
        self.clock_ns = clock_ns
        self.on_suppressed = on_suppressed
        self._opts = opts
        self._connected = threading.Event()
        self._started = False
        self._start_lock = threading.Lock()
        self.client = self._new_client()
        self.failed_attempts = 0
        # The gateway's health (gateway/health.py), retained under <prefix>/health; re-sent on every connection.
        self.health_topic = f"{self.prefix}/health"
        self._health: bytes | None = None

    def _new_client(self) -> mqtt.Client:
        client = build_client(self._opts)
        client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        return client

    def _fresh_client(self) -> None:
        """Replace the client after a publish went unacknowledged.

        paho keeps an unacknowledged QoS 1 publish and sends it again first on every reconnect: one the broker
        refuses by dropping the connection would block every later publish for ever. Delivery sends again
        what was not acknowledged, and dead-letters an entry refused over and over (gateway/sinks/base.py).
        """
        old = self.client
        self.client = self._new_client()
        self._connected.clear()
        old.disconnect()
        old.loop_stop()
        self.client.connect_async(self._opts.host, self._opts.port, keepalive=self._opts.keepalive,
                                  clean_start=False, properties=connect_properties(self._opts))
        self.client.loop_start()

    @property
    def connected(self) -> bool:
        """Whether the feed's connection is up."""
        return self._connected.is_set()

    def publish_health(self, payload: bytes) -> None:
        """Publish the health document, retained (now if connected, else on the next connection)."""
        self._health = payload
        if self._connected.is_set():
            self.client.publish(self.health_topic, payload, qos=1, retain=True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # Called inside paho's `except OSError`: the error is still at hand. Once per outage, not per retry.
        self.failed_attempts += 1
        if self.failed_attempts == 1:
            log.error("%s", connect_failure_message("feed", self._opts, sys.exc_info()[1]))

    def start(self) -> None:
        """Connect in the background (paho's network thread reconnects forever with backoff)."""
        with self._start_lock:
            if self._started:
                return
            self._started = True
        self.client.connect_async(self._opts.host, self._opts.port, keepalive=self._opts.keepalive,
                                  clean_start=False, properties=connect_properties(self._opts))
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: mqtt.ReasonCode,
                    props: object) -> None:
        if client is not self.client:
            return  # a client replaced by _fresh_client
        if reason.is_failure:
            self.failed_attempts += 1  # logged once per outage, like an unreachable broker
            if self.failed_attempts == 1:
                log.error("feed: broker %s:%d refused the connection: %s (check mqtt.username and "
                          "password_env/password_file, and the broker's ACL); retrying", self._opts.host,
                          self._opts.port, reason)
            return
        set_nodelay(client)
        if self.meta is not None:  # before "online", so a subscriber that sees the kit online can describe it
            client.publish(self.meta_topic, orjson.dumps(self.meta), qos=1, retain=True)
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        if self._health is not None:
            client.publish(self.health_topic, self._health, qos=1, retain=True)
        if self.failed_attempts:
            log.info("feed: connected to MQTT broker %s:%d after %d failed attempt(s)", self._opts.host,
                     self._opts.port, self.failed_attempts)
            self.failed_attempts = 0
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       props: object) -> None:
        if client is self.client:
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

    def historical(self, e: Entry, now_ns: int) -> bool:
        """Whether the entry is sent more than `historical_after` after it could first have been sent.

        A KPI point can be sent once its window closed (window end + grace), a raw reading at its event time.
        """
        if e.kind == KIND_KPI:
            extra = e.extra or {}
            ready = int(extra.get("end_ns") or e.ts) + self.grace_ns
        else:
            ready = e.ts
        return now_ns - ready > self.historical_after_ns

    def payload(self, e: Entry, now_ns: int) -> dict[str, Any]:
        """The JSON object published for an entry (schemas/feed/kpi.schema.json, reading.schema.json)."""
        out = entry_dict(e)
        out["historical"] = self.historical(e, now_ns)
        return out

    def body(self, entry: Entry) -> str:
        """The JSON payload."""
        return orjson.dumps(self.payload(entry, self.clock_ns())).decode()

    def write(self, entries: Sequence[Entry]) -> None:
        """Publish the batch and wait for every PUBACK before reporting success."""
        self.start()
        if not self._connected.wait(timeout=self.publish_timeout_s):
            raise SinkError(Action.RETRY, f"not connected to the MQTT broker {self._opts.host}:{self._opts.port}")
        chosen, pending, held = self.report.select(entries)
        now = self.clock_ns()
        infos = []
        for e in chosen:
            retain = e.kind == KIND_KPI
            infos.append(self.client.publish(self.topic_for(e), orjson.dumps(self.payload(e, now)), qos=self.qos,
                                             retain=retain))
        for info in infos:
            if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
                raise SinkError(Action.RETRY, f"publish failed: {mqtt.error_string(info.rc)}")
            try:
                info.wait_for_publish(timeout=self.publish_timeout_s)
            except (RuntimeError, ValueError) as exc:
                raise SinkError(Action.RETRY, f"publish not acknowledged: {exc}") from None
            if not info.is_published():
                self._fresh_client()
                raise SinkError(Action.RETRY, "broker did not acknowledge the publish in time")
        self.report.commit(pending, held)
        if held and self.on_suppressed is not None:
            self.on_suppressed(held)

    def close(self) -> None:
        """Mark the gateway offline (a clean stop does not fire the last will), then disconnect."""
        if not self._started:
            return
        if self._connected.is_set():
            info = self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()
