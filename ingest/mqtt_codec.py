"""MQTT 3.1.1 packets, as the bulk input reads and writes them: a parser for a whole read, and the encoders.

Pure functions on bytes (no socket, no thread): `parse_packets` splits a read into PUBLISHes and the control
packets a server may send (checking what section 2.2 requires of each); the encoders build CONNECT, SUBSCRIBE,
UNSUBSCRIBE and batches of PUBACKs. Section numbers refer to the MQTT 3.1.1 OASIS standard.
"""

from __future__ import annotations

import struct

from ingest.mqtt_client import MqttOptions
from ingest.routes import Route

__all__ = ["CONNACK", "CONNACK_CODES", "DISCONNECT_PACKET", "MAX_PACKET", "PINGREQ_PACKET", "PINGRESP", "PUBLISH",
           "SUBACK", "SUBSCRIBE_ID", "UNSUBACK", "UNSUBSCRIBE_ID", "Control", "Oversized", "ProtocolError",
           "Publish", "connect_packet", "encode_remaining_length", "packet_size", "parse_packets",
           "puback_packets", "subscribe_packet", "unsubscribe_packet"]

# Packet types (MQTT 3.1.1 section 2.2.1).
CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP = 2, 3, 4, 5, 6, 7, 9, 11, 13
# Required low nibble of the fixed header for the packets a server may send us (section 2.2.2).
_FLAGS = {CONNACK: 0, PUBACK: 0, PUBREC: 0, PUBREL: 2, PUBCOMP: 0, SUBACK: 0, UNSUBACK: 0, PINGRESP: 0}
CONNACK_CODES = {1: "unacceptable protocol version", 2: "client identifier rejected", 3: "server unavailable",
                 4: "bad user name or password", 5: "not authorized"}
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
# Bounds the reassembly buffer. A larger PUBLISH is skipped as it streams in (never held whole), counted and
# acknowledged: closing the connection instead would have the broker resend it for ever, blocking the queue.
MAX_PACKET = 16 * 1024 * 1024
SUBSCRIBE_ID = 1
UNSUBSCRIBE_ID = 2

# (qos, packet id, topic bytes, payload, retain flag)
Publish = tuple[int, int, bytes, bytes, bool]
# A PUBLISH over the size limit, parsed up to its packet id: (qos, packet id, topic bytes, packet size)
Oversized = tuple[int, int, bytes, int]
# (packet type, variable header + payload)
Control = tuple[int, bytes]


class ProtocolError(Exception):
    """The broker sent something that is not valid MQTT 3.1.1 (the connection is closed and reopened)."""


def encode_remaining_length(n: int) -> bytes:
    """The MQTT variable-length integer (1 to 4 bytes, 7 bits each, least significant first)."""
    if not 0 <= n <= 268_435_455:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def parse_packets(data: bytes, publishes: list[Publish], controls: list[Control],
                  max_packet: int = MAX_PACKET, oversized: list[Oversized] | None = None) -> int:
    """Parse every complete packet at the start of `data`; return the bytes consumed (the rest is partial).

    PUBLISHes go to `publishes`, every other packet to `controls`. A PUBLISH longer than `max_packet` is a
    ProtocolError, unless `oversized` is given: then, once its header up to the packet id is in `data`, it
    goes to `oversized`, and the count returned includes all of it, so it may exceed len(data) (the caller
    discards that many more bytes as they arrive). Raises only ProtocolError.
    """
    pos = 0
    n = len(data)
    append_pub = publishes.append
    while pos + 2 <= n:
        b0 = data[pos]
        p = pos + 1
        b = data[p]
        p += 1
        if b < 0x80:
            length = b
        else:
            length = b & 0x7F
            shift = 7
            while True:
                if p >= n:
                    return pos  # the length itself is not complete yet
                b = data[p]
                p += 1
                length |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("remaining length longer than 4 bytes")
        end = p + length
        if length > max_packet:
            if b0 >> 4 != PUBLISH or oversized is None:
                raise ProtocolError(f"packet of {length} bytes exceeds the {max_packet}-byte limit")
            qos = (b0 >> 1) & 3
            if qos > 1:
                raise ProtocolError(f"PUBLISH with QoS {qos} (we subscribe at QoS 0 or 1)")
            if p + 2 > n:
                return pos  # wait for the topic length
            topic_end = p + 2 + ((data[p] << 8) | data[p + 1])
            header_end = topic_end + (2 if qos else 0)
            if header_end > n:
                return pos  # wait for the topic and packet id (at most 64 KiB)
            pid = (data[topic_end] << 8) | data[topic_end + 1] if qos else 0
            oversized.append((qos, pid, data[p + 2:topic_end], end - pos))
            if end > n:
                return end
            pos = end
            continue
        if end > n:
            return pos
        kind = b0 >> 4
        if kind == PUBLISH:
            qos = (b0 >> 1) & 3
            if qos > 1:
                raise ProtocolError(f"PUBLISH with QoS {qos} (we subscribe at QoS 0 or 1)")
            if length < 2:
                raise ProtocolError("PUBLISH shorter than its topic length")
            topic_end = p + 2 + ((data[p] << 8) | data[p + 1])
            if qos:
                body = topic_end + 2
                if body > end:
                    raise ProtocolError("PUBLISH topic and packet id run past the packet")
                pid = (data[topic_end] << 8) | data[topic_end + 1]
                if pid == 0:
                    raise ProtocolError("PUBLISH QoS 1 with packet id 0")
            else:
                body = topic_end
                if body > end:
                    raise ProtocolError("PUBLISH topic runs past the packet")
                pid = 0
            append_pub((qos, pid, data[p + 2:topic_end], data[body:end], bool(b0 & 1)))
        else:
            flags = _FLAGS.get(kind)
            if flags is None:
                raise ProtocolError(f"packet type {kind} is not sent by a server")
            if b0 & 0x0F != flags:
                raise ProtocolError(f"packet type {kind} with reserved flags {b0 & 0x0F:#x}")
            if kind == PINGRESP:
                if length:
                    raise ProtocolError("PINGRESP with a body")
            elif kind == SUBACK:
                if length < 3:
                    raise ProtocolError("SUBACK without return codes")
            elif length != 2:
                raise ProtocolError(f"packet type {kind} with a {length}-byte body (2 expected)")
            controls.append((kind, data[p:end]))
        pos = end
    return pos


def packet_size(data: bytes | bytearray) -> int | None:
    """Total size of the packet starting `data` once its header is complete (None before that)."""
    length, shift = 0, 0
    for i in range(1, min(len(data), 5)):
        b = data[i]
        length |= (b & 0x7F) << shift
        if b < 0x80:
            return i + 1 + length
        shift += 7
    return None


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack(">H", len(raw)) + raw


def connect_packet(opts: MqttOptions) -> bytes:
    """CONNECT (3.1.1): a persistent session when we have a client id, keepalive, user name and password."""
    flags = 0 if opts.client_id else 0x02  # clean session only without an id (the broker could not find it)
    payload = _utf8(opts.client_id)
    if opts.username:
        flags |= 0x80
        payload += _utf8(opts.username)
        if opts.password:
            flags |= 0x40
            payload += _utf8(opts.password)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack(">H", opts.keepalive) + payload
    return b"\x10" + encode_remaining_length(len(body)) + body


def subscribe_packet(routes: list[Route], packet_id: int = SUBSCRIBE_ID) -> bytes:
    """One SUBSCRIBE for every route, QoS capped at 1 (QoS 2 is not supported here)."""
    body = struct.pack(">H", packet_id) + b"".join(_utf8(r.topic) + bytes([min(r.qos, 1)]) for r in routes)
    return b"\x82" + encode_remaining_length(len(body)) + body


def unsubscribe_packet(filters: list[str], packet_id: int = UNSUBSCRIBE_ID) -> bytes:
    """One UNSUBSCRIBE for `filters` (section 3.10: fixed header 0xA2, packet id, the filters)."""
    body = struct.pack(">H", packet_id) + b"".join(_utf8(f) for f in filters)
    return b"\xa2" + encode_remaining_length(len(body)) + body


def puback_packets(pids: list[int]) -> bytes:
    """PUBACKs for `pids`, concatenated (0x40 0x02 <id>, section 3.4)."""
    return struct.pack(f">{len(pids)}I", *[0x40020000 | pid for pid in pids])
