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

This module is the connection loop (connect, CONNACK, subscribe, read, keepalive, reconnect with backoff). The
packet codec is ingest/mqtt_codec.py, the acks and flow control ingest/mqtt_acks.py, and what a read's packets
become (route, decode, batch, reject) ingest/mqtt_inbound.py.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ingest.backoff import Backoff
from ingest.base import Emitter, ThreadStarter, plain_thread
from ingest.mqtt_acks import AckFlow
from ingest.mqtt_client import MqttOptions, connect_failure_message
from ingest.mqtt_codec import (
    CONNACK,
    CONNACK_CODES,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    Control,
    ProtocolError,
    Publish,
    connect_packet,
    packet_size,
    parse_packets,
    subscribe_packet,
    unsubscribe_packet,
)
from ingest.mqtt_inbound import BATCH_MESSAGES, InboundPackets
from ingest.mqtt_session import SubscriptionMemory, TakeoverWatch
from ingest.routes import Route, RouteTable

__all__ = ["MAX_UNACKED", "BulkMqttSource"]

log = logging.getLogger("citygw.mqtt")

RECV_SIZE = 256 * 1024
# Readings (or messages, where a batch has fewer readings than messages) handed to the emitter and not yet
# acknowledged, i.e. journaled. Above it the socket is not read: TCP then holds the broker back (MQTT 3.1.1
# has no Receive Maximum), which bounds the memory the ingest queue can take. 20,000 keeps two of the
# pipeline's 10,000-reading transactions in flight: one committing while the next fills. 100,000 was no faster
# (docs/performance.md, sixth pass).
MAX_UNACKED = 20_000
# After a read of fewer bytes than this (a trickle, not a backlog), wait READ_PAUSE_S before the next: the
# journal commits at most every 10 ms (journal.commit_interval), so reading more often buys no latency, only a
# select, a recv and a parse per handful of messages (6,000 reads/s at 15,000 one-reading messages/s).
SMALL_READ = 16 * 1024
READ_PAUSE_S = 0.001
STALL_S = 30.0  # no ack for this long while paused: the pipeline dropped a batch (full queue); read on
CONNECT_TIMEOUT_S = 5.0  # TCP connect, TLS handshake, CONNACK (each)
SEND_TIMEOUT_S = 10.0  # a broker that takes no bytes for this long is treated as gone


class _ClosedError(Exception):
    """The connection ended (broker closed it, keepalive expired, or we are stopping)."""


class _BrokerClosedError(_ClosedError):
    """The broker ended an established connection (EOF or reset): a restart, or another client with our id."""


class _RefusedError(Exception):
    """The broker answered CONNECT with a refusal (bad credentials, not authorized, ...)."""


def _tls_context(o: MqttOptions) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(o.ca_file) if o.ca_file else None)
    if o.cert_file:
        ctx.load_cert_chain(str(o.cert_file), str(o.key_file) if o.key_file else None)
    if o.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


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
        self.stopping = False
        self.protocol_errors = 0
        self.connect_attempts = 0
        self.peak_buffered = 0  # the most bytes the reassembly buffer has held (bounded by MAX_PACKET)
        # The session's subscriptions (unsubscribe routes removed from the config) and its other users.
        self.memory = SubscriptionMemory(session_file, opts.host, opts.port, opts.client_id)
        self.takeover = TakeoverWatch("MQTT input", opts.client_id, opts.host, opts.port, on_takeover)
        self.acks = AckFlow(max_unacked)  # PUBACKs owed, messages not yet journaled, the connection's generation
        self.inbound = InboundPackets(emitter, self.table, self.acks, self.memory, opts, clock_ns, batch_messages)
        self._ssl = _tls_context(opts) if (opts.tls or opts.ca_file) else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None  # the current connection, for stop() to interrupt
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

    @property
    def connected(self) -> bool:
        """Whether a connection to the broker is up (CONNACK accepted, not yet lost)."""
        return self.acks.connected

    @property
    def generation(self) -> int:
        """How many connections were made (acks owed to an earlier one are not sent)."""
        return self.acks.generation

    @property
    def acks_skipped(self) -> int:
        """Acks owed to a closed connection (the broker redelivers those messages)."""
        return self.acks.acks_skipped

    @property
    def pauses(self) -> int:
        """How often reading paused for acks (max_unacked messages handed over and not yet journaled)."""
        return self.acks.pauses

    @property
    def messages(self) -> int:
        """PUBLISHes received, the rejected and oversized ones included."""
        return self.inbound.messages

    @property
    def oversized(self) -> int:
        """PUBLISHes over MAX_PACKET skipped (each counted as a rejection and acknowledged)."""
        return self.inbound.oversized

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; keeps reconnecting until stop()."""
        self._thread = self.start_thread("citygw-mqtt-in", self._run, self._stop)

    def stop(self) -> None:
        """Send what acks are due, disconnect (the broker keeps our session) and join the thread."""
        self.stopping = True
        self._stop.set()
        self.acks.wake()
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
        self.acks.close()

    # -- the connection thread -----------------------------------------------------------------------------

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
                if self.acks.connected and not self._stop.is_set():
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
        if self.acks.closed():  # was up
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
                raise _RefusedError(CONNACK_CODES.get(code, f"return code {code}"))
            sock.settimeout(SEND_TIMEOUT_S)
            stale = self.memory.before_subscribe([r.topic for r in self.routes])
            if self.routes:
                sock.sendall(subscribe_packet(self.routes))
            self.inbound.unsubscribing = stale
            if stale:
                sock.sendall(unsubscribe_packet(stale))
            self._last_tx = time.monotonic()
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise
        self.acks.opened()  # acks of the old connection no longer count
        self.inbound.skip = 0
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
        data = self.acks.take()
        if data:
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
        acks, inbound = self.acks, self.inbound
        if pending:
            need = inbound.consume(pending)
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
            if acks.full():
                if not paused_since:
                    paused_since = now
                    acks.pauses += 1
                if now - max(paused_since, acks.last_ack) > STALL_S:
                    log.warning("no acknowledgement for %.0f s with %d readings outstanding (dropped by a "
                                "full ingest queue?); reading on, the broker redelivers them after a "
                                "reconnect", STALL_S, acks.unacked)
                    acks.release()
                    continue
                last_rx = now  # we are not reading: the broker's silence means nothing
                acks.select([], 1.0, paused=True)
                continue
            paused_since = 0.0
            timeout = min(1.0, keepalive / 4) if keepalive else 1.0
            tls_buffered = tls and sock.pending()  # type: ignore[attr-defined]
            if not tls_buffered and sock not in acks.select([sock], timeout, paused=False):
                continue  # nothing to read yet, or PUBACKs to flush first
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
            start = min(inbound.skip, n)  # the rest of an oversized PUBLISH: dropped as it streams in
            inbound.skip -= start
            if start < n:
                pending += view[start:n]
                if len(pending) > self.peak_buffered:
                    self.peak_buffered = len(pending)
                if len(pending) >= need:
                    need = inbound.consume(pending)
            if n < SMALL_READ:
                time.sleep(READ_PAUSE_S)
