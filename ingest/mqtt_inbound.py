"""The bulk MQTT input's packet handling: a read's packets become emitter calls, rejections and log lines.

`InboundPackets.consume` parses every complete packet of the reassembly buffer (ingest/mqtt_codec.py), routes and
decodes each PUBLISH through the input's `RouteTable`, and hands the readings over in bounded batches, each with
one `ack` for all its messages (ingest/mqtt_acks.py). A PUBLISH too large to hold is skipped as it streams in,
counted, rejected and acknowledged. SUBACK and UNSUBACK are logged and recorded. Used from the socket's thread.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable

from devices.reading import Reading
from ingest.base import Emitter
from ingest.mqtt_acks import AckFlow
from ingest.mqtt_client import MqttOptions
from ingest.mqtt_codec import (
    CONNACK,
    MAX_PACKET,
    SUBACK,
    UNSUBACK,
    UNSUBSCRIBE_ID,
    Control,
    Oversized,
    ProtocolError,
    Publish,
    encode_remaining_length,
    packet_size,
    parse_packets,
)
from ingest.mqtt_session import SubscriptionMemory
from ingest.routes import Rejected, RouteTable

__all__ = ["BATCH_MESSAGES", "BATCH_READINGS", "InboundPackets"]

log = logging.getLogger("citygw.mqtt")

# Per emitter call, at most this many messages or (once reached) readings: one read of many multi-reading
# messages must not become one huge journal transaction (a fifth of the pipeline's default batch_max, 10,000).
BATCH_MESSAGES = 1000
BATCH_READINGS = 2000


class InboundPackets:
    """Turns the packets of each read into emitter calls (batched, acknowledged together) and rejections."""

    def __init__(self, emitter: Emitter, table: RouteTable, acks: AckFlow, memory: SubscriptionMemory,
                 opts: MqttOptions, clock_ns: Callable[[], int], batch_messages: int = BATCH_MESSAGES) -> None:
        self.emitter = emitter
        self.table = table
        self.acks = acks
        self.memory = memory
        self.opts = opts
        self.clock_ns = clock_ns
        self.batch_messages = max(1, batch_messages)
        self.messages = 0
        self.oversized = 0  # PUBLISHes over MAX_PACKET skipped (each counted as a rejection and acknowledged)
        self.skip = 0  # bytes of an oversized PUBLISH still to discard as they arrive
        self.unsubscribing: list[str] = []  # filters of our UNSUBSCRIBE, until its UNSUBACK
        self.last_ns = 0

    def consume(self, pending: bytearray) -> int:
        """Parse and handle every complete packet in `pending`, drop them from it; return the size needed next."""
        data = bytes(pending)
        publishes: list[Publish] = []
        controls: list[Control] = []
        oversized: list[Oversized] = []
        used = parse_packets(data, publishes, controls, oversized=oversized)
        if used > len(pending):
            self.skip = used - len(pending)
            pending.clear()
        else:
            del pending[:used]
        for kind, body in controls:
            if kind == SUBACK:
                self.on_suback(body)
            elif kind == CONNACK:
                raise ProtocolError("CONNACK on an established connection")
            elif kind == UNSUBACK and body == struct.pack(">H", UNSUBSCRIBE_ID) and self.unsubscribing:
                stale, self.unsubscribing = self.unsubscribing, []
                self.memory.unsubscribed(stale)
                log.info("unsubscribed from %s: no longer configured (the persistent session kept them)",
                         ", ".join(repr(f) for f in stale))
            # PINGRESP only proves the broker is alive (any received byte does); PUBACK/PUBREC/PUBCOMP answer
            # packets we never send and are ignored.
        if publishes:
            self.handle(publishes)
        for item in oversized:
            self.skip_oversized(*item)
        size = packet_size(pending) if pending else None
        if size is not None and size - len(encode_remaining_length(min(size, 268_435_455))) - 1 > MAX_PACKET:
            return len(pending) + 1  # an oversized PUBLISH: parse again once its header has come in
        return size if size is not None else len(pending) + 1

    def skip_oversized(self, qos: int, pid: int, raw_topic: bytes, size: int) -> None:
        """Count, report and acknowledge a PUBLISH too large to hold (its bytes are discarded unread)."""
        self.oversized += 1
        self.messages += 1
        topic = raw_topic.decode("utf-8", "replace")
        _, device_id = self.table.lookup(topic)
        self.emitter.rejected(device_id or topic, f"oversized MQTT message: a {size}-byte PUBLISH on {topic!r} "
                              f"exceeds the bulk input's {MAX_PACKET}-byte limit; skipped unread and "
                              "acknowledged (limit what publishers send with the broker's max_packet_size)")
        if qos:
            self.acks.queue([pid])

    def on_suback(self, body: bytes) -> None:
        """Log the subscriptions the broker refused or granted at a lower QoS (section 3.9.3)."""
        codes = body[2:]
        for route, code in zip(self.table.routes, codes, strict=False):
            if code == 0x80:
                log.error("MQTT broker %s:%d refused the subscription to %r", self.opts.host, self.opts.port,
                          route.topic)
            elif code < route.qos:
                log.info("MQTT broker granted QoS %d for %r (asked %d)", code, route.topic, route.qos)

    def handle(self, publishes: list[Publish]) -> None:
        """Decode a read's PUBLISHes and hand them over in batches, each with one ack for all its messages."""
        emitter = self.emitter
        decode = self.table.decode
        generation = self.acks.generation
        base = self.clock_ns()
        if base <= self.last_ns:
            base = self.last_ns + 1
        # Distinct receipt times, 1 ns apart: two timestamp-less payloads of one device in one read must not
        # look like duplicates of each other.
        self.last_ns = base + len(publishes) - 1
        self.messages += len(publishes)
        limit = self.batch_messages
        readings: list[Reading] = []
        pids: list[int] = []
        count = 0
        for i, (qos, pid, raw_topic, payload, retain) in enumerate(publishes):
            if qos:
                pids.append(pid)
            outcome = decode(raw_topic, payload, retain, base + i)
            if isinstance(outcome, Rejected):
                emitter.rejected(*outcome)
            else:
                readings += outcome
            count += 1
            if count >= limit or len(readings) >= BATCH_READINGS:
                self._emit(readings, pids, count, generation)
                readings, pids, count = [], [], 0
        if count:
            self._emit(readings, pids, count, generation)

    def _emit(self, readings: list[Reading], pids: list[int], messages: int, generation: int) -> None:
        count = max(len(readings), messages)
        self.acks.handed(count)  # before the call: the pipeline may ack before it returns
        self.emitter.readings(readings, self.acks.make_ack(pids, count, generation))
