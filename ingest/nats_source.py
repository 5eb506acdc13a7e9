"""NATS JetStream input: a durable pull consumer on one partition of a stream, acked after the journal commit.

The central tier of a city (docs/fleet.md): a NATS cluster stores a LoRaWAN application's uplinks in one
JetStream stream, and a subject mapping (`partition(N, <device token>)`) puts each device into one of N
partitions; instance i binds a durable consumer filtered on partition i. The consumer lives in the cluster, so
an instance that dies leaves its partition's messages there until it is back, and no other instance gets them.

nats-py is asyncio; citygw runs threads. One owning thread (`citygw-nats-in`, through the gateway's supervisor)
runs an event loop: connect (several servers; nats-py reconnects by itself), create or bind the durable
consumer, fetch in batches, turn each subject into a topic (NATS `.` is MQTT `/`), route and decode it with
the routes the MQTT inputs use, and hand each batch's readings to the pipeline in one call. Its `ack` (called by
the ingest thread after the journal commit) is passed into the loop with `call_soon_threadsafe`: nats-py is
not thread-safe. Messages handed over and not yet acknowledged are bounded (`max_ack_pending`, on the consumer
and here), so the fetch loop waits rather than the pipeline's queue filling.

What it did is counted here as plain numbers (fetched, redelivered, acknowledged, acks not sent, errors, the
consumer's pending backlog, the connection and its last error); the gateway exports them (`describe()`: the
Prometheus collector in gateway/metrics.py, /status.json, the status page, the `nats:` health reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy

from devices.reading import Reading
from ingest.backoff import Backoff
from ingest.base import Emitter, ThreadStarter, plain_thread
from ingest.routes import Rejected, Route, RouteTable

__all__ = ["NatsOptions", "NatsSource", "consumer_config", "subject_to_topic"]

log = logging.getLogger("citygw.nats")

FETCH_TIMEOUT_S = 1.0  # a fetch that finds nothing returns after this; also how soon stop() is seen
PENDING_REFRESH_S = 5.0  # while fetches find nothing, the consumer's pending count is read again this often


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """Where the partition is and how to read it."""

    servers: tuple[str, ...]
    stream: str
    durable: str
    subject: str  # the consumer's filter: this instance's partition (e.g. "part.0.>")
    user: str = ""
    password: str = ""
    token: str = ""
    ca_file: str | None = None
    batch: int = 500  # messages per fetch
    max_ack_pending: int = 5000  # messages handed to the pipeline and not yet acknowledged, at most
    ack_wait_s: float = 30.0  # a message not acknowledged this long is delivered again
    reconnect_max_s: float = 10.0
    name: str = "citygw"

    def __repr__(self) -> str:  # never show the password or token
        return (f"NatsOptions(servers={self.servers!r}, stream={self.stream!r}, durable={self.durable!r}, "
                f"subject={self.subject!r})")


def consumer_config(o: NatsOptions) -> ConsumerConfig:
    """The durable consumer citygw creates for a partition: explicit acks, everything, never given up."""
    return ConsumerConfig(
        durable_name=o.durable, filter_subject=o.subject, ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL, ack_wait=o.ack_wait_s, max_ack_pending=o.max_ack_pending,
        max_deliver=-1)  # never give a message up: a journal that cannot commit only delays it


async def bind_consumer(nc: NatsClient, o: NatsOptions) -> tuple[nats.js.JetStreamContext.PullSubscription,
                                                                   ConsumerInfo]:
    """Create the durable consumer if it is missing (idempotent with the same config), then bind it."""
    js = nc.jetstream(timeout=10)
    try:
        info = await js.consumer_info(o.stream, o.durable)
    except nats.js.errors.NotFoundError:
        info = await js.add_consumer(o.stream, consumer_config(o))
        log.info("NATS: created durable consumer %r on stream %r for %r", o.durable, o.stream, o.subject)
    if info.config.filter_subject != o.subject:
        raise nats.js.errors.Error(
            description=f"durable consumer {o.durable!r} on stream {o.stream!r} filters "
                        f"{info.config.filter_subject!r}, not {o.subject!r}: give this partition its own "
                        "durable name, or delete the old consumer (nats consumer rm)")
    kept = info.config
    if (kept.ack_wait, kept.max_ack_pending) != (o.ack_wait_s, o.max_ack_pending):
        log.warning("NATS: durable consumer %r keeps ack_wait %ss and max_ack_pending %s from when it was "
                    "created (configured: %ss, %s); change them on the cluster (nats consumer edit)",
                    o.durable, kept.ack_wait, kept.max_ack_pending, o.ack_wait_s, o.max_ack_pending)
    return await js.pull_subscribe_bind(durable=o.durable, stream=o.stream), info


def subject_to_topic(subject: str) -> str:
    """The MQTT topic of a NATS subject, as NATS's MQTT listener maps them: `.` is `/`, and `//` is `.`."""
    return "/".join(token.replace("//", ".") for token in subject.split("."))


class NatsSource:
    """Fetches one partition from a JetStream durable consumer and feeds decoded readings to the emitter."""

    def __init__(self, emitter: Emitter, opts: NatsOptions, routes: list[Route],
                 clock_ns: Callable[[], int] = time.time_ns,
                 on_connection: Callable[[bool], None] = lambda up: None,
                 start_thread: ThreadStarter = plain_thread) -> None:
        self.emitter = emitter
        self.opts = opts
        self.routes = routes
        self.table = RouteTable(routes, log)  # route -> decode -> reject, as the MQTT inputs do it
        self.clock_ns = clock_ns
        self.on_connection = on_connection  # called on each transition only (the pipeline counts inputs down)
        self.start_thread = start_thread
        self.connected = False
        # The pipeline lets the wall clock close an idle device's windows only while its inputs are "up"
        # (gateway/pipeline.py input_state). After a (re)connect, a device's next uplinks may still wait in the
        # consumer, or (fetched by a predecessor that was killed) come again only after ack_wait: "up" is
        # reported once the consumer has nothing pending and nothing unacknowledged but what this input holds, and
        # that is journaled (_check_backlog), not merely on connecting.
        self._reported_up = False
        self._catching_up = False
        self._catch_up_batch: list[Msg] | None = None  # its ack ends the catch-up
        self._last_batch: list[Msg] | None = None  # the last one handed to the pipeline
        self.messages = 0  # fetched, redeliveries included
        self.redelivered = 0  # fetched again: not acknowledged in time, or the ack was lost
        self.acks_failed = 0  # acks nats-py could not send (the message comes again; the duplicate check drops it)
        self.acks_skipped = 0  # acks due after the loop ended (stopping): redelivered on the next start
        self.acked = 0  # acks handed to nats-py (a batch of rejections only is acknowledged at once)
        self.errors = 0  # connects, consumer binds and fetch loops that failed (each retried)
        self.pending: int | None = None  # the consumer's backlog not yet fetched, as last read; None: never read
        self.last_error = ""  # the last failure (connection, consumer, client or ack), for the status page
        self.last_error_at: float | None = None  # its time.time()
        self.server = ""  # host:port of the server connected to ("" while not connected)
        self.down_since: float | None = time.monotonic()  # not connected since (monotonic); None while connected
        self._pending_read_at = float("-inf")
        self.device_kinds = self.table.device_kinds  # the status page's "kind" per device; bounded
        self._in_flight = 0  # only touched in the loop thread
        self._ack_tasks: set[asyncio.Future[None]] = set()
        self._room = asyncio.Event()  # created again in the loop (bound to it on first use)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None  # _main, for stop() to cancel a connection attempt
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ns = 0
        self._failures = 0

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and consume in the background until stop()."""
        self._thread = self.start_thread("citygw-nats-in", self._run, self._stop)

    def stop(self) -> None:
        """Stop fetching and close the connection (unacknowledged messages stay with the consumer)."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(timeout=FETCH_TIMEOUT_S + 2)  # a fetch returns within FETCH_TIMEOUT_S
        loop, task = self._loop, self._task
        if self._thread.is_alive() and loop is not None and task is not None:
            # Still connecting (nats-py goes round the servers for ever while none answers): cancel it.
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(task.cancel)
            self._thread.join(timeout=10)
        if self._thread.is_alive():
            log.warning("NATS input thread did not stop in time; leaving it")

    def _run(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # stop() cancelled a connection attempt
            asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._room = asyncio.Event()
        self._room.set()
        self._in_flight = 0  # a restarted loop: acks owed to the old one were skipped, the messages come again
        backoff = Backoff(0.5, 2.0, self.opts.reconnect_max_s, jitter=(0.5, 1.0))
        try:
            while not self._stop.is_set():
                nc: NatsClient | None = None
                try:
                    nc = await self._connect()
                    sub = await self._bind(nc)
                    self._failures = 0
                    backoff.reset()
                    await self._consume(nc, sub)
                except (TimeoutError, nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                    self._failed(exc)
                finally:
                    if nc is not None:
                        with contextlib.suppress(Exception):
                            await nc.close()
                    self._set_connected(False)
                if not self._stop.is_set():
                    await asyncio.sleep(backoff.next_delay())
        finally:
            self._loop = self._task = None

    # -- connection and consumer ---------------------------------------------------------------------------

    async def _connect(self) -> NatsClient:
        o = self.opts
        tls = ssl.create_default_context(cafile=o.ca_file) if o.ca_file or any(
            s.startswith("tls://") for s in o.servers) else None

        async def disconnected() -> None:
            self._set_connected(False)

        async def reconnected() -> None:
            url = nc.connected_url.netloc if nc.connected_url else "?"
            log.info("NATS input reconnected to %s", url)
            self._set_connected(True, url)

        async def error(exc: Exception) -> None:
            log.debug("NATS client: %s", exc)
            self._note_error(exc)

        nc = await nats.connect(
            servers=list(o.servers), name=o.name, user=o.user or None, password=o.password or None,
            token=o.token or None, tls=tls, connect_timeout=5, reconnect_time_wait=1,
            max_reconnect_attempts=-1,  # nats-py goes round the servers for ever; we reconnect only after close
            disconnected_cb=disconnected, reconnected_cb=reconnected, error_cb=error)
        return nc

    async def _bind(self, nc: NatsClient) -> nats.js.JetStreamContext.PullSubscription:
        """Bind the partition's durable consumer (bind_consumer) and say so."""
        sub, info = await bind_consumer(nc, self.opts)
        url = nc.connected_url.netloc if nc.connected_url else "?"
        log.info("connected to NATS %s: stream %r, durable consumer %r (%s), %d message(s) pending", url,
                 self.opts.stream, self.opts.durable, self.opts.subject, info.num_pending)
        self.pending = info.num_pending
        self._set_connected(True, url)
        return sub

    def _set_connected(self, up: bool, server: str = "") -> None:
        """Connected (the consumer bound) or not; the pipeline hears "up" only once the backlog is committed."""
        self.connected = up
        self.server = server if up else ""
        if up:
            self.down_since = None
        elif self.down_since is None:
            self.down_since = time.monotonic()
        self._catching_up = up
        self._catch_up_batch = None
        if not up:
            self._report(False)

    def down_for(self) -> float | None:
        """Seconds the input has not been connected (since start if it never was); None while connected."""
        since = self.down_since
        return None if since is None else time.monotonic() - since

    def _note_error(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.last_error_at = time.time()

    def describe(self) -> dict[str, Any]:
        """What the input did and where it stands, as plain values (/status.json, metrics, the status page)."""
        o = self.opts
        return {"servers": list(o.servers), "server": self.server, "connected": self.connected,
                "caught_up": self._reported_up, "down_for_s": self.down_for(), "stream": o.stream,
                "durable": o.durable, "subject": o.subject, "pending": self.pending, "in_flight": self._in_flight,
                "fetched": self.messages, "redelivered": self.redelivered, "acked": self.acked,
                "acks_failed": self.acks_failed, "acks_skipped": self.acks_skipped, "errors": self.errors,
                "last_error": self.last_error, "last_error_at": self.last_error_at}

    def _report(self, up: bool) -> None:
        if up != self._reported_up:
            self._reported_up = up
            self.on_connection(up)

    def _caught_up(self) -> None:
        """The backlog found on connecting is journaled: the pipeline may let the wall clock close idle windows."""
        if self._catching_up:
            self._catching_up = False
            log.info("NATS input caught up with consumer %r's backlog", self.opts.durable)
            self._report(True)

    def _failed(self, exc: BaseException) -> None:
        if self._stop.is_set():
            return
        self.errors += 1
        self._note_error(exc)
        self._failures += 1
        if self._failures == 1 or self._failures % 50 == 0:
            log.error("NATS input (%s, stream %r, consumer %r): %s: %s; retrying", ", ".join(self.opts.servers),
                      self.opts.stream, self.opts.durable, type(exc).__name__, exc)

    # -- fetching ------------------------------------------------------------------------------------------

    async def _consume(self, nc: NatsClient, sub: nats.js.JetStreamContext.PullSubscription) -> None:
        batch = max(1, min(self.opts.batch, self.opts.max_ack_pending))
        while not self._stop.is_set():
            if self._in_flight + batch > self.opts.max_ack_pending:
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), FETCH_TIMEOUT_S)
                continue
            try:
                msgs = await sub.fetch(batch, timeout=FETCH_TIMEOUT_S)
            except (TimeoutError, nats.errors.TimeoutError):
                # Nothing pending (or a consumer leader being elected: nats-py keeps the connection).
                if self._catching_up and self._catch_up_batch is None:
                    await self._check_backlog(sub)
                elif time.monotonic() - self._pending_read_at >= PENDING_REFRESH_S:
                    await self._read_pending(sub)  # e.g. messages held back by a predecessor's unacked ones
                continue
            if nc.is_closed:
                return
            self.pending = msgs[-1].metadata.num_pending  # what the consumer holds beyond this fetch
            self._handle(msgs)
            if self._catching_up and self._catch_up_batch is None and msgs[-1].metadata.num_pending == 0:
                await self._check_backlog(sub)

    async def _check_backlog(self, sub: nats.js.JetStreamContext.PullSubscription) -> None:
        """Caught up once nothing is pending and nothing unacknowledged is another's: messages a killed
        predecessor had fetched come again only after ack_wait, and a device's windows must wait for them."""
        info = await self._read_pending(sub)
        if info is None:
            return  # a consumer leader being elected: asked again after the next fetch
        if info.num_pending or (info.num_ack_pending or 0) > self._in_flight:
            return
        if self._in_flight == 0:
            self._caught_up()
        else:
            self._catch_up_batch = self._last_batch  # the ingest thread acks in order: this one comes last

    async def _read_pending(self, sub: nats.js.JetStreamContext.PullSubscription) -> ConsumerInfo | None:
        """The consumer's info (None when it does not answer); keeps its pending count for the gauges."""
        self._pending_read_at = time.monotonic()
        try:
            info = await sub.consumer_info()
        except (TimeoutError, nats.errors.Error):
            return None
        self.pending = info.num_pending
        return info

    def _handle(self, msgs: list[Msg]) -> None:
        """Decode one fetch and hand its readings to the pipeline in one call, with one ack for all."""
        emitter = self.emitter
        base = max(self.clock_ns(), self._last_ns + 1)
        self._last_ns = base + len(msgs) - 1  # distinct receipt times for payloads without their own
        self.messages += len(msgs)
        readings: list[Reading] = []
        decode = self.table.decode
        for i, msg in enumerate(msgs):
            if msg.metadata.num_delivered > 1:
                self.redelivered += 1
            out = decode(subject_to_topic(msg.subject), msg.data, False, base + i)
            if isinstance(out, Rejected):
                emitter.rejected(*out)
            else:
                readings += out
        self._in_flight += len(msgs)
        self._last_batch = msgs
        if not readings:
            self._acked(msgs)  # only rejections: redelivery cannot make them better
            return
        loop = self._loop

        def ack() -> None:  # the ingest thread, after the journal commit
            try:
                if loop is None or loop.is_closed():
                    raise RuntimeError("loop closed")
                loop.call_soon_threadsafe(self._acked, msgs)
            except RuntimeError:
                self.acks_skipped += len(msgs)

        emitter.readings(readings, ack)

    def _acked(self, msgs: list[Msg]) -> None:
        """In the loop: send the acks of a committed batch and make room for the next fetch."""
        self._in_flight -= len(msgs)
        self._room.set()
        if self._catch_up_batch is not None and (msgs is self._catch_up_batch or self._in_flight == 0):
            self._caught_up()
        task = asyncio.ensure_future(self._send_acks(msgs))
        self._ack_tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._ack_tasks.discard)

    async def _send_acks(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            try:
                await msg.ack()
                self.acked += 1
            except (nats.errors.Error, OSError) as exc:
                self.acks_failed += 1
                self._note_error(exc)
                if self.acks_failed == 1 or self.acks_failed % 1000 == 0:
                    log.warning("NATS input: %d ack(s) not sent (%s): those messages come again after ack_wait "
                                "and the duplicate check drops them", self.acks_failed, exc)
