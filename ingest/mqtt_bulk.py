"""Bulk MQTT input: MQTT 3.1.1 parsed in bulk, one emitter call and one PUBACK write per read.

A drop-in alternative to `ingest.mqtt_source.MqttSource` (same constructor and surface), chosen with
`mqtt.input_client = "bulk"`. paho-mqtt spends ~28 µs of Python per QoS 1 message (packet object, callback,
per-message ack); here one thread owns the socket, reads as much as the kernel holds, parses every complete
packet of that read, decodes each PUBLISH with its route's format and hands all the readings of the read to
ONE `emitter.readings(readings, ack)` call. `ack` (called by the pipeline after the journal commit) queues
the PUBACKs of all those messages as one write. Guarantees are those of MqttSource: ack only after commit,
persistent session (clean_session = 0 with a client id), reconnect forever with backoff, TLS, auth.

Only the socket's thread reads or writes the socket: OpenSSL does not allow one SSL object to be used by two
threads at once, so acks from the ingest thread go through a small outbox (under a lock) and a wake-up
socketpair. MQTT 5 is not spoken here; use the paho input for it.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from devices.reading import Reading
from ingest.backoff import Backoff
from ingest.base import Emitter, ThreadStarter, plain_thread
from ingest.mqtt_client import MqttOptions, connect_failure_message
from ingest.mqtt_session import SubscriptionMemory, TakeoverWatch
from ingest.routes import Rejected, Route, RouteTable

__all__ = ["BulkMqttSource", "ProtocolError", "encode_remaining_length", "parse_packets", "unsubscribe_packet"]

log = logging.getLogger("citygw.mqtt")

# Packet types (MQTT 3.1.1 section 2.2.1).
CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP = 2, 3, 4, 5, 6, 7, 9, 11, 13
# Required low nibble of the fixed header for the packets a server may send us (section 2.2.2).
_FLAGS = {CONNACK: 0, PUBACK: 0, PUBREC: 0, PUBREL: 2, PUBCOMP: 0, SUBACK: 0, UNSUBACK: 0, PINGRESP: 0}
_CONNACK_CODES = {1: "unacceptable protocol version", 2: "client identifier rejected", 3: "server unavailable",
                  4: "bad user name or password", 5: "not authorized"}
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
# Bounds the reassembly buffer. A larger PUBLISH is skipped as it streams in (never held whole), counted and
# acknowledged: closing the connection instead would have the broker resend it for ever, blocking the queue.
MAX_PACKET = 16 * 1024 * 1024
RECV_SIZE = 256 * 1024
# Per emitter call, at most this many messages or (once reached) readings: one read of many multi-reading
# messages must not become one huge journal transaction (2,000 = the pipeline's default batch_max).
BATCH_MESSAGES = 1000
BATCH_READINGS = 2000
# Readings (or messages, where a batch has fewer readings than messages) handed to the emitter and not yet
# acknowledged, i.e. journaled. Above it the socket is not read: TCP then holds the broker back (MQTT 3.1.1
# has no Receive Maximum), which bounds the memory the ingest queue can take. 20,000 keeps ten of the
# pipeline's 2,000-reading transactions in flight.
MAX_UNACKED = 20_000
STALL_S = 30.0  # no ack for this long while paused: the pipeline dropped a batch (full queue); read on
CONNECT_TIMEOUT_S = 5.0  # TCP connect, TLS handshake, CONNACK (each)
SEND_TIMEOUT_S = 10.0  # a broker that takes no bytes for this long is treated as gone
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


class _ClosedError(Exception):
    """The connection ended (broker closed it, keepalive expired, or we are stopping)."""


class _BrokerClosedError(_ClosedError):
    """The broker ended an established connection (EOF or reset): a restart, or another client with our id."""


class _RefusedError(Exception):
    """The broker answered CONNECT with a refusal (bad credentials, not authorized, ...)."""


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


class BulkMqttSource:
    """Subscribes the routes' topics and feeds decoded readings to the emitter, a whole read at a time."""

    def __init__(self, emitter: Emitter, opts: MqttOptions, routes: list[Route],
                 clock_ns: Callable[[], int] = time.time_ns,
                 on_connection: Callable[[bool], None] = lambda up: None,
                 batch_messages: int = BATCH_MESSAGES, max_unacked: int = MAX_UNACKED,
                 session_file: Path | None = None, on_takeover: Callable[[], None] = lambda: None,
                 start_thread: ThreadStarter = plain_thread) -> None:
        if opts.protocol == "5":
            raise ValueError('the bulk MQTT input speaks MQTT 3.1.1 only: set mqtt.protocol = "3.1.1", '
                             'or mqtt.input_client = "paho" for MQTT 5')
        self.emitter = emitter
        self.opts = opts
        self.routes = routes
        self.table = RouteTable(routes, log)
        self.start_thread = start_thread  # the gateway's supervisor restarts the input thread after a crash
        self.clock_ns = clock_ns
        self.on_connection = on_connection
        self.batch_messages = max(1, batch_messages)
        self.max_unacked = max(1, max_unacked)
        self.connected = False
        self.stopping = False
        self.messages = 0
        # Counts connections: an ack owed to a message of an earlier connection is not sent on a later one,
        # where its packet id may already name another message (the broker redelivers the first anyway).
        self.generation = 0
        self.acks_skipped = 0  # acks owed to a closed connection (the broker redelivers those messages)
        self.protocol_errors = 0
        self.connect_attempts = 0
        self.oversized = 0  # PUBLISHes over MAX_PACKET skipped (each counted as a rejection and acknowledged)
        self.peak_buffered = 0  # the most bytes the reassembly buffer has held (bounded by MAX_PACKET)
        self._skip = 0  # bytes of an oversized PUBLISH still to discard as they arrive
        # The session's subscriptions (unsubscribe routes removed from the config) and its other users.
        self.memory = SubscriptionMemory(session_file, opts.host, opts.port, opts.client_id)
        self.takeover = TakeoverWatch("MQTT input", opts.client_id, opts.host, opts.port, on_takeover)
        self._unsubscribing: list[str] = []  # filters of our UNSUBSCRIBE, until its UNSUBACK
        self._ssl = self._ssl_context() if (opts.tls or opts.ca_file) else None
        self._lock = threading.Lock()  # guards generation/connected changes and the outbox
        self._outbox = bytearray()  # bounded by max_unacked: PUBACKs of journaled messages, not yet written
        self._unacked = 0  # readings/messages handed to the emitter on this connection, ack not run yet
        self._paused = False  # the loop waits for acks before reading more
        self._last_ack = 0.0
        self.pauses = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None  # the current connection, for stop() to interrupt
        self._last_ns = 0
        self._last_tx = 0.0
        self._last_error = ""
        self._failures = 0

    @property
    def device_kinds(self) -> dict[str, str]:
        """device id -> payload format of the devices heard, for the status page (bounded like the paho input's)."""
        return self.table.device_kinds

    @property
    def topic_cache_clears(self) -> int:
        """How often the bounded topic -> route cache was full and cleared."""
        return self.table.cache_clears

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; keeps reconnecting until stop()."""
        self._thread = self.start_thread("citygw-mqtt-in", self._run, self._stop)

    def stop(self) -> None:
        """Send what acks are due, disconnect (the broker keeps our session) and join the thread."""
        self.stopping = True
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=1.0)  # the loop sees the flag within its 1 s poll, acks flushed
            sock = self._sock
            if self._thread.is_alive() and sock is not None:
                # Blocked in a TLS handshake or waiting for CONNACK: shutting the socket down ends the read.
                # The plain socket method, so the SSL object the loop thread may be using is left alone.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
            self._thread.join(timeout=CONNECT_TIMEOUT_S + 1)
            if self._thread.is_alive():
                log.warning("MQTT input thread did not stop in time; leaving it (a daemon thread)")
                return
        self._wake_r.close()
        self._wake_w.close()

    # -- acks (any thread) ---------------------------------------------------------------------------------

    def _make_ack(self, pids: list[int], count: int, generation: int) -> Callable[[], None]:
        """The callback for one emitter call (`count` toward max_unacked); PUBACKs for `pids` (the QoS 1 ones)."""
        def ack() -> None:
            with self._lock:
                if generation != self.generation:
                    self.acks_skipped += len(pids)
                    return
                self._unacked -= count
                self._last_ack = time.monotonic()
                wake = self._paused
                if pids:
                    if self.connected:
                        wake = wake or not self._outbox
                        self._outbox += puback_packets(pids)
                    else:
                        self.acks_skipped += len(pids)
            if wake:
                self._wake()
        return ack

    def _emit(self, readings: list[Reading], pids: list[int], messages: int, generation: int) -> None:
        count = max(len(readings), messages)
        with self._lock:
            self._unacked += count  # before the call: the pipeline may ack before it returns
        self.emitter.readings(readings, self._make_ack(pids, count, generation))

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed (stopping)
            self._wake_w.send(b"\x00")

    # -- the connection thread -----------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        o = self.opts
        ctx = ssl.create_default_context(cafile=str(o.ca_file) if o.ca_file else None)
        if o.cert_file:
            ctx.load_cert_chain(str(o.cert_file), str(o.key_file) if o.key_file else None)
        if o.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _run(self) -> None:
        # Jittered below the step (x0.5..1): gateways that lost one broker together come back spread out.
        backoff = Backoff(0.5, 2.0, self.opts.reconnect_max_s, jitter=(0.5, 1.0))
        while not self._stop.is_set():
            sock: socket.socket | None = None
            try:
                sock, leftover = self._open()
                backoff.reset()
                self.on_connection(True)
                self._session(sock, leftover)
            except _RefusedError as exc:
                self._disconnected(str(exc), refused=True)
            except _BrokerClosedError as exc:
                if self.connected and not self._stop.is_set():
                    self.takeover.closed_by_broker()
                self._disconnected(str(exc))
            except _ClosedError as exc:
                self._disconnected(str(exc))
            except ProtocolError as exc:
                self.protocol_errors += 1
                self._disconnected(f"protocol error from the broker: {exc}")
            except (OSError, ValueError) as exc:
                self._disconnected(f"{type(exc).__name__}: {exc}", error=exc)
            except Exception as exc:  # a bug must not end the input: log it and reconnect
                log.exception("MQTT input failed unexpectedly")
                self._disconnected(f"{type(exc).__name__}: {exc}")
            finally:
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
            if self._stop.is_set():
                break
            backoff.wait(self._stop)

    def _disconnected(self, reason: str, refused: bool = False, error: BaseException | None = None) -> None:
        with self._lock:
            was_up = self.connected
            self.connected = False
            self._outbox.clear()
        if was_up:
            self._failures = 0
            if not self.stopping:
                log.warning("disconnected from MQTT broker %s:%d (%s); reconnecting", self.opts.host,
                            self.opts.port, reason)
            self.on_connection(False)
            return
        self._failures += 1
        if isinstance(error, OSError):
            # An unreachable broker: what it means and how to fix it, once per outage (as the paho input says
            # it); the line on connecting counts the failed attempts.
            if self._failures == 1 and not self.stopping:
                log.error("%s", connect_failure_message("MQTT input", self.opts, error))
            self._last_error = reason
            return
        # Log a failure when its reason changes, then every 50th attempt: visible, but not once per retry.
        if not self.stopping and (reason != self._last_error or self._failures % 50 == 0):
            if refused:
                log.error("MQTT broker %s:%d refused the connection: %s (retrying)", self.opts.host,
                          self.opts.port, reason)
            else:
                log.warning("cannot connect to MQTT broker %s:%d: %s (retrying)", self.opts.host, self.opts.port,
                            reason)
        self._last_error = reason

    def _open(self) -> tuple[socket.socket, bytes]:
        """TCP (+ TLS), CONNECT, wait for CONNACK, SUBSCRIBE; return the socket and bytes after CONNACK."""
        o = self.opts
        self.connect_attempts += 1
        sock = socket.create_connection((o.host, o.port), timeout=CONNECT_TIMEOUT_S)
        self._sock = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=o.host)
                self._sock = sock
            sock.sendall(connect_packet(o))
            data = b""
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while True:
                size = packet_size(data)
                if (data and data[0] != 0x20) or (size is not None and size != 4):
                    raise ProtocolError("the first packet from the broker is not a CONNACK")
                if size is not None and len(data) >= size:
                    break
                if time.monotonic() > deadline:
                    raise _ClosedError("no CONNACK from the broker")
                chunk = sock.recv(4096)
                if self._stop.is_set():
                    raise _ClosedError("stopping")
                if not chunk:
                    raise _ClosedError("the broker closed the connection before CONNACK")
                data += chunk
            assert size is not None
            publishes: list[Publish] = []
            controls: list[Control] = []
            used = parse_packets(data[:size], publishes, controls)
            if used != size or not controls or controls[0][0] != CONNACK:
                raise ProtocolError("the first packet from the broker is not a CONNACK")
            body = controls[0][1]
            if body[1] != 0:
                code = body[1]
                raise _RefusedError(_CONNACK_CODES.get(code, f"return code {code}"))
            sock.settimeout(SEND_TIMEOUT_S)
            stale = self.memory.before_subscribe([r.topic for r in self.routes])
            if self.routes:
                sock.sendall(subscribe_packet(self.routes))
            self._unsubscribing = stale
            if stale:
                sock.sendall(unsubscribe_packet(stale))
            self._last_tx = time.monotonic()
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise
        with self._lock:
            self.generation += 1
            self.connected = True
            self._outbox.clear()
            self._unacked = 0  # acks of the old connection no longer count (see _make_ack)
            self._paused = False
        self._skip = 0
        self.takeover.connected(self._failures)
        self._last_error = ""
        log.info("connected to MQTT broker %s:%d (session present: %s)%s", o.host, o.port, bool(body[0] & 1),
                 f" after {self._failures} failed attempt(s)" if self._failures else "")
        self._failures = 0
        return sock, data[size:]

    def _send(self, sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)
        self._last_tx = time.monotonic()

    def _flush(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._outbox:
                return
            data = bytes(self._outbox)
            self._outbox.clear()
        self._send(sock, data)

    def _session(self, sock: socket.socket, leftover: bytes) -> None:
        """The receive loop of one connection; returns only by raising (_ClosedError, ProtocolError, OSError)."""
        keepalive = float(self.opts.keepalive)
        tls = isinstance(sock, ssl.SSLSocket)
        buf = bytearray(RECV_SIZE)
        view = memoryview(buf)
        pending = bytearray(leftover)
        need = 0  # bytes `pending` must hold before a parse can make progress
        last_rx = time.monotonic()
        paused_since = 0.0
        wake_r = self._wake_r
        if pending:
            need = self._consume(pending)
        while True:
            self._flush(sock)
            if self._stop.is_set():
                with contextlib.suppress(OSError):
                    sock.sendall(DISCONNECT_PACKET)  # a clean end; the persistent session stays
                raise _ClosedError("stopping")
            now = time.monotonic()
            if keepalive:
                if now - last_rx > 1.5 * keepalive:
                    raise _ClosedError(f"nothing from the broker for {now - last_rx:.0f} s "
                                       f"(keepalive {keepalive:.0f} s)")
                if now - self._last_tx >= keepalive / 2:
                    self._send(sock, PINGREQ_PACKET)
            if self._unacked >= self.max_unacked:
                with self._lock:
                    self._paused = self._unacked >= self.max_unacked
                if self._paused:
                    if not paused_since:
                        paused_since = now
                        self.pauses += 1
                    if now - max(paused_since, self._last_ack) > STALL_S:
                        log.warning("no acknowledgement for %.0f s with %d readings outstanding (dropped by a "
                                    "full ingest queue?); reading on, the broker redelivers them after a "
                                    "reconnect", STALL_S, self._unacked)
                        with self._lock:
                            self._unacked = 0
                            self._paused = False
                        continue
                    last_rx = now  # we are not reading: the broker's silence means nothing
                    ready, _, _ = select.select([wake_r], [], [], 1.0)
                    if ready:
                        self._drain_wake()
                    continue
            paused_since = 0.0
            if not (tls and sock.pending()):  # type: ignore[attr-defined]
                ready, _, _ = select.select([sock, wake_r], [], [], min(1.0, keepalive / 4) if keepalive else 1.0)
                if wake_r in ready:
                    self._drain_wake()
                if sock not in ready:
                    continue
            try:
                n = sock.recv_into(view)
            except ConnectionResetError:
                raise _BrokerClosedError("the broker reset the connection") from None
            if not n:
                raise _BrokerClosedError("the broker closed the connection")
            if tls:
                while n < RECV_SIZE and sock.pending():  # type: ignore[attr-defined]
                    n += sock.recv_into(view[n:])
            last_rx = time.monotonic()
            start = min(self._skip, n)  # the rest of an oversized PUBLISH: dropped as it streams in
            self._skip -= start
            if start < n:
                pending += view[start:n]
                if len(pending) > self.peak_buffered:
                    self.peak_buffered = len(pending)
                if len(pending) >= need:
                    need = self._consume(pending)

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _consume(self, pending: bytearray) -> int:
        """Parse and handle every complete packet in `pending`, drop them from it; return the size needed next."""
        data = bytes(pending)
        publishes: list[Publish] = []
        controls: list[Control] = []
        oversized: list[Oversized] = []
        used = parse_packets(data, publishes, controls, oversized=oversized)
        if used > len(pending):
            self._skip = used - len(pending)
            pending.clear()
        else:
            del pending[:used]
        for kind, body in controls:
            if kind == SUBACK:
                self._on_suback(body)
            elif kind == CONNACK:
                raise ProtocolError("CONNACK on an established connection")
            elif kind == UNSUBACK and body == struct.pack(">H", UNSUBSCRIBE_ID) and self._unsubscribing:
                stale, self._unsubscribing = self._unsubscribing, []
                self.memory.unsubscribed(stale)
                log.info("unsubscribed from %s: no longer configured (the persistent session kept them)",
                         ", ".join(repr(f) for f in stale))
            # PINGRESP only proves the broker is alive (any received byte does); PUBACK/PUBREC/PUBCOMP answer
            # packets we never send and are ignored.
        if publishes:
            self._handle(publishes)
        for item in oversized:
            self._skip_oversized(*item)
        size = packet_size(pending) if pending else None
        if size is not None and size - len(encode_remaining_length(min(size, 268_435_455))) - 1 > MAX_PACKET:
            return len(pending) + 1  # an oversized PUBLISH: parse again once its header has come in
        return size if size is not None else len(pending) + 1

    def _skip_oversized(self, qos: int, pid: int, raw_topic: bytes, size: int) -> None:
        """Count, report and acknowledge a PUBLISH too large to hold (its bytes are discarded unread)."""
        self.oversized += 1
        self.messages += 1
        topic = raw_topic.decode("utf-8", "replace")
        _, device_id = self.table.lookup(topic)
        self.emitter.rejected(device_id or topic, f"oversized MQTT message: a {size}-byte PUBLISH on {topic!r} "
                              f"exceeds the bulk input's {MAX_PACKET}-byte limit; skipped unread and "
                              "acknowledged (limit what publishers send with the broker's max_packet_size)")
        if qos:
            with self._lock:
                self._outbox += puback_packets([pid])

    def _on_suback(self, body: bytes) -> None:
        codes = body[2:]
        for route, code in zip(self.routes, codes, strict=False):
            if code == 0x80:
                log.error("MQTT broker %s:%d refused the subscription to %r", self.opts.host, self.opts.port,
                          route.topic)
            elif code < route.qos:
                log.info("MQTT broker granted QoS %d for %r (asked %d)", code, route.topic, route.qos)

    def _handle(self, publishes: list[Publish]) -> None:
        """Decode a read's PUBLISHes and hand them over in batches, each with one ack for all its messages."""
        emitter = self.emitter
        decode = self.table.decode
        generation = self.generation
        base = self.clock_ns()
        if base <= self._last_ns:
            base = self._last_ns + 1
        # Distinct receipt times, 1 ns apart: two timestamp-less payloads of one device in one read must not
        # look like duplicates of each other.
        self._last_ns = base + len(publishes) - 1
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
