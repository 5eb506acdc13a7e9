"""The composition root: build journal, pipeline, sinks and transports from Settings; start and stop them."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aggregators.derived import DerivedKpis
from aggregators.kpi import KpiPoint
from aggregators.windows import WindowEngine, WindowSpec
from devices.registry import get_kind
from gateway.clock import ClockWatch
from gateway.datadir import DataDirLock
from gateway.feed_meta import birth_info
from gateway.journal import Journal
from gateway.kit_monitor import KitMonitor
from gateway.live_stream import LiveStream
from gateway.metrics import Metrics, NatsCollector
from gateway.pipeline import Pipeline
from gateway.settings import InfluxSection, Settings, read_secret
from gateway.sinks.base import Delivery, Sink
from gateway.sinks.influx import InfluxV1Sink, InfluxV2Sink, influx_sink_name
from gateway.sinks.local_store import LocalStoreSink
from gateway.sinks.mqtt_feed import MqttFeedSink, ReportByException
from gateway.status import StatusServer
from gateway.supervisor import Supervisor
from ingest.base import Transport
from ingest.mqtt_bulk import BulkMqttSource
from ingest.mqtt_client import MqttOptions
from ingest.mqtt_source import MqttSource
from ingest.routes import Route
from ingest.serial_port import SerialDevice, SerialPortOwner

if TYPE_CHECKING:
    from ingest.nats_source import NatsSource

__all__ = ["Gateway"]

log = logging.getLogger("citygw")


class Gateway:
    """One running kit: inputs → pipeline → journal → sinks, with a status page."""

    def __init__(self, settings: Settings, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self.clock_ns = clock_ns
        self.metrics = Metrics()
        # Every owning thread starts through it: a crash is logged, counted and restarted (gateway/supervisor.py).
        self.supervisor = Supervisor(self.metrics.registry)
        self.clock = ClockWatch(wall_ns=clock_ns)
        self.started_at = time.monotonic()
        self.kpi_listeners: list[Callable[[list[KpiPoint]], None]] = []
        s = settings
        # One process per data directory (gateway/datadir.py): released in stop(), when this object is
        # collected (a constructor that raised), or by the kernel when the process dies.
        self.datadir_lock = DataDirLock(s.journal_path.parent)
        self.datadir_lock.acquire()
        weakref.finalize(self, self.datadir_lock.release)
        self.journal = Journal(s.journal_path, s.journal.synchronous, s.journal.max_size)
        engine = WindowEngine(
            [WindowSpec.parse(w, s.aggregation.min_coverage) for w in s.aggregation.windows],
            grace_ns=int(s.aggregation.grace * 1e9),
            timezone=s.gateway.timezone,
        )
        # Device book, latest KPIs, backlog ages and health for the status page (gateway/kit_monitor.py).
        self.monitor = KitMonitor(self, engine.specs)
        # `citygw tail` clients of the status server follow the journal; a commit only wakes them.
        self.live = LiveStream(s.journal_path, self.metrics.registry)
        self.sinks = self._build_sinks()
        self.deliveries = [
            # Cursor writes need no fsync: a cursor lost in a power cut only re-sends entries (InfluxDB
            # overwrites the same points; the local store may repeat lines; see docs/reliability.md).
            Delivery(sink, Journal(s.journal_path, "normal"), self.metrics,
                     batch_size=self._batch_size(sink), flush_interval_s=self._flush_interval(sink),
                     linger_s=self._linger(sink), start_thread=self.supervisor.start)
            for sink in self.sinks
        ]
        self.pipeline = Pipeline(
            self.journal, engine, self.metrics, clock_ns=clock_ns, batch_max=s.journal.batch_max,
            commit_interval_s=s.journal.commit_interval,
            start_thread=self.supervisor.start,
            sink_names=tuple(sink.name for sink in self.sinks), on_appended=self._on_appended,
            on_kpis=self._on_kpis, derived=DerivedKpis(s.kpis, s.gateway.timezone), book=self.monitor.book,
        )
        self.mqtt_source: MqttSource | BulkMqttSource | None = None
        self._mqtt_up = False
        self.nats_source: NatsSource | None = None
        self.transports: list[Transport] = self._build_transports()
        if self.nats_source is not None:  # its numbers are read at each scrape: samples from start
            self.metrics.registry.register(NatsCollector(self.nats_source.describe))
        self.monitor.book.report = self.pipeline.device_state  # MQTT devices going silent / heard again
        self.metrics.declare(
            sinks=[sink.name for sink in self.sinks], devices=[d.id for d in s.devices],
            mqtt_clients=(["in"] if self.mqtt_source else []) + (["feed"] if s.mqtt.host and s.mqtt.feed.enabled
                                                               else []))
        self.status_server: StatusServer | None = None
        self._stopped = threading.Event()

    # -- construction --------------------------------------------------------------------------------------

    def mqtt_options(self, suffix: str) -> MqttOptions:
        """Broker options for one of our connections (client id gets a suffix per role)."""
        m = self.settings.mqtt
        tls = m.tls
        return MqttOptions(
            host=m.host, port=m.port, client_id=f"{m.client_id or 'citygw-' + self.settings.gateway.id}-{suffix}",
            username=m.username, password=read_secret(m.password_env, m.password_file, "mqtt.password"),
            protocol=m.protocol, keepalive=m.keepalive, session_expiry_s=m.session_expiry,
            reconnect_max_s=m.reconnect_max, tls=tls is not None,
            ca_file=tls.ca_file if tls else None, cert_file=tls.cert_file if tls else None,
            key_file=tls.key_file if tls else None, insecure_skip_verify=tls.insecure_skip_verify if tls else False,
        )

    def _build_sinks(self) -> list[Sink]:
        s = self.settings
        sinks: list[Sink] = []
        for cfg in s.influx:
            name = influx_sink_name(cfg)
            if cfg.api == "v1":
                sinks.append(InfluxV1Sink(
                    name, cfg.url, cfg.database, cfg.username,
                    read_secret(cfg.password_env, cfg.password_file, "influx.password"),
                    gzip_body=cfg.compress(), timeout_s=cfg.timeout, ca_file=cfg.ca_file,
                    verify_tls=cfg.verify_tls, create_database=cfg.create_database, gateway_id=s.gateway.id))
            else:
                sinks.append(InfluxV2Sink(
                    name, cfg.url, cfg.org, cfg.bucket, read_secret(cfg.token_env, cfg.token_file, "influx.token"),
                    gzip_body=cfg.compress(), timeout_s=cfg.timeout, ca_file=cfg.ca_file,
                    verify_tls=cfg.verify_tls, gateway_id=s.gateway.id))
        # The city-platform sinks (and their HTTP stack, ~6 MB) load only on a kit that sends to one.
        if s.sensorthings:
            from gateway.sinks.sensorthings import build_sensorthings_sinks

            sinks.extend(build_sensorthings_sinks(s))
        if s.ngsi_ld:
            from gateway.sinks.ngsi_ld import build_ngsi_ld_sinks

            sinks.extend(build_ngsi_ld_sinks(s))
        if s.mqtt.host and s.mqtt.feed.enabled:
            feed = s.mqtt.feed
            sinks.append(MqttFeedSink(
                "mqtt-feed", self.mqtt_options("feed"), s.feed_prefix, raw=feed.raw, qos=feed.qos,
                meta=birth_info(s), report=ReportByException(feed.raw_deadband, feed.raw_max_interval),
                historical_after_s=feed.historical_after, grace_s=s.aggregation.grace,
                on_suppressed=self.metrics.feed_suppressed.inc))
        if s.local_store_enabled:
            sinks.append(LocalStoreSink("local-store", s.local_store.path or s.gateway.data_dir / "store"))
        return sinks

    def _influx_cfg(self, sink: Sink) -> InfluxSection | None:
        return next((c for c in self.settings.influx if influx_sink_name(c) == sink.name), None)

    def _batch_size(self, sink: Sink) -> int:
        cfg = self._influx_cfg(sink)
        return cfg.batch_size if cfg else int(getattr(sink, "batch_size", 1000))  # other sinks say their own

    def _flush_interval(self, sink: Sink) -> float:
        cfg = self._influx_cfg(sink)
        return cfg.flush_interval if cfg else float(getattr(sink, "flush_interval_s", 1.0))

    def _linger(self, sink: Sink) -> float:
        cfg = self._influx_cfg(sink)
        return cfg.linger if cfg else 0.0  # feeds and the local store go at once: their readers watch live

    def _build_transports(self) -> list[Transport]:
        s = self.settings
        transports: list[Transport] = []
        modbus_by_port: dict[str, list[Any]] = {}
        for d in s.devices:
            kind = get_kind(d.kind)
            if kind.link == "modbus":
                modbus_by_port.setdefault(d.port, []).append(d)
                continue
            # Addressable serial devices (a sound level meter on a shared line) read `address` from options.
            options = {"address": d.address, **d.options} if "address" in d.model_fields_set else d.options
            transports.append(SerialPortOwner(
                SerialDevice(d.id, kind, d.port, d.baudrate, d.parity, d.stopbits, d.poll_interval, d.timeout,
                             d.tags, options),
                self.pipeline, clock_ns=self.clock_ns, silence_s=d.silence_timeout,
                start_thread=self.supervisor.start))
        if modbus_by_port:
            from ingest.modbus_bus import ModbusBus, ModbusDevice  # pymodbus only for kits with Modbus devices
        for port, devices in modbus_by_port.items():
            first = devices[0]  # settings guarantee every device on a port agrees on the line parameters
            transports.append(ModbusBus(
                port,
                [ModbusDevice(d.id, d.kind, d.address, d.poll_interval, d.options, d.tags, timeout=d.timeout)
                 for d in devices],
                self.pipeline, baudrate=first.baudrate, parity=first.parity, stopbits=first.stopbits,
                timeout=max(d.timeout for d in devices), clock=self.clock_ns,
                start_thread=self.supervisor.start))
        if s.mqtt.host and s.mqtt.routes:
            routes = [Route(r.topic, get_kind(r.format), r.device_id, r.qos, r.tags, r.options)
                      for r in s.mqtt.routes]
            # mqtt.input_client picks the class ("auto": bulk for 3.1.1 without QoS 2); same constructor and surface.
            source_cls = BulkMqttSource if s.mqtt.input_client_used == "bulk" else MqttSource
            self.mqtt_source = source_cls(
                self.pipeline, self.mqtt_options("in"), routes, clock_ns=self.clock_ns,
                on_connection=self._mqtt_input_state,
                # What our persistent session subscribed, to unsubscribe routes removed from the config.
                session_file=s.gateway.data_dir / "mqtt-subscriptions.json",
                on_takeover=self.metrics.mqtt_takeovers.labels("in").inc)
            if isinstance(self.mqtt_source, BulkMqttSource):  # paho runs (and guards) its own network thread
                self.mqtt_source.start_thread = self.supervisor.start
            self.pipeline.input_state(False)  # down until the first connection
            transports.append(self.mqtt_source)
        if s.nats.routes:
            self.nats_source = self._nats_source()
            transports.append(self.nats_source)
        return transports

    def _nats_source(self) -> NatsSource:
        """The JetStream partition input (central tier); nats-py is imported only on an instance that has one."""
        from ingest.nats_source import NatsOptions, NatsSource

        n = self.settings.nats
        opts = NatsOptions(
            servers=tuple(n.servers), stream=n.stream, durable=n.durable, subject=n.subject, user=n.username,
            password=read_secret(n.password_env, n.password_file, "nats.password"),
            token=read_secret(n.token_env, n.token_file, "nats.token"),
            ca_file=str(n.ca_file) if n.ca_file else None, batch=n.batch, max_ack_pending=n.max_ack_pending,
            ack_wait_s=n.ack_wait, reconnect_max_s=n.reconnect_max, name=f"citygw-{self.settings.gateway.id}")
        routes = [Route(r.topic, get_kind(r.format), r.device_id, r.qos, r.tags, r.options) for r in n.routes]
        self.pipeline.input_state(False)  # down until the consumer is bound (a backlog may be on its way)
        return NatsSource(self.pipeline, opts, routes, clock_ns=self.clock_ns, on_connection=self.pipeline.input_state,
                          start_thread=self.supervisor.start)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start sinks, the pipeline (after rebuilding windows), inputs and the status page."""
        if self.journal.moved_aside is not None:
            log.error("started with a new journal; the unreadable one is at %s", self.journal.moved_aside)
        for d in self.deliveries:
            d.start()
        self.pipeline.start()
        for t in self.transports:
            t.start()
        if self.settings.gateway.status_listen:
            try:
                g = self.settings.gateway
                self.status_server = StatusServer(
                    g.status_listen, self.status, self.metrics.registry, page=self.monitor.page,
                    health=self.monitor.health,
                    token=read_secret(g.status_token_env, g.status_token_file, "gateway.status_token"),
                    live=self.live)
                self.status_server.start()
                log.info("status page on http://%s/", self.status_server.address)
            except OSError as exc:
                log.error("status page disabled: cannot listen on %s: %s (set gateway.status_listen)",
                          self.settings.gateway.status_listen, exc.strerror)
        nats = self.settings.nats
        log.info("citygw %s running: %d device(s), %d MQTT route(s)%s, sinks: %s", self.settings.gateway.id,
                 len(self.settings.devices), len(self.settings.mqtt.routes),
                 f", {len(nats.routes)} NATS route(s)" if nats.servers else "",
                 ", ".join(s.name for s in self.sinks) or "none")

    def stop(self) -> None:
        """Stop inputs first, drain the pipeline into the journal, let sinks finish, close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        for t in reversed(self.transports):
            t.stop()
        self.pipeline.stop()
        for d in self.deliveries:
            d.wake.set()
        deadline = time.monotonic() + 5.0
        last = self.journal.last_seq()
        for d in self.deliveries:
            while (time.monotonic() < deadline and d.cursor < last and d.failing_since is None
                   and d.running):
                time.sleep(0.05)
            d.stop()
            d.journal.close()
        if self.status_server is not None:
            self.status_server.stop()
        self.monitor.close()
        self.journal.close()
        self.datadir_lock.release()

    def tick(self) -> None:
        """Periodic checks from the main thread (once a second): the clock, device staleness, health."""
        if self.clock.check():
            self.metrics.clock_jumps.inc()
        self.monitor.tick()

    # -- observers -----------------------------------------------------------------------------------------

    def _mqtt_input_state(self, up: bool) -> None:
        self.metrics.mqtt_connected.labels("in").set(1 if up else 0)
        self.monitor.mqtt_state(up)
        if up != self._mqtt_up:
            self._mqtt_up = up
            self.pipeline.input_state(up)

    def _on_appended(self) -> None:
        for d in self.deliveries:
            d.wake.set()
        self.live.notify()

    def _on_kpis(self, points: list[KpiPoint]) -> None:
        self.monitor.board.add(points)
        for listener in self.kpi_listeners:
            listener(points)

    def status(self) -> dict[str, Any]:
        """Everything the status page shows (no secrets)."""
        return self.monitor.status()  # the page renders the same dict (gateway/kit_monitor.py)
