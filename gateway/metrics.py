"""Prometheus metrics of one gateway (its own registry, so several gateways can live in one test process)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics", "NatsCollector", "reason_code"]

_DIGITS = re.compile(r"\d+")


def reason_code(reason: str) -> str:
    """A low-cardinality label for a rejection reason: the phrase before its first colon, numbers folded to N.

    Reasons are written "<what failed>: <details>", e.g. "checksum mismatch: frame says 02c6, bytes sum to 02c5".
    """
    head = re.split(r"[:(]", reason, maxsplit=1)[0].strip()
    return _DIGITS.sub("N", head)[:60] or "unspecified"


class Metrics:
    """Counters and gauges exported on /metrics and summarised on the status page."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Per-device series: plain numbers turned into samples at each scrape (DeviceSeries), not client objects.
        self.devices = DeviceSeries()
        r.register(self.devices)
        self.rejected = Counter("citygw_rejected", "Frames, payloads or readings rejected",
                                ["device", "reason"], registry=r)
        self.late = Counter("citygw_late_readings", "Readings after their window closed (kept raw only)",
                            registry=r)
        self.late_window = Counter("citygw_late", "Readings late for a window length (that window of their "
                                   "device had closed; kept raw, counted here)", ["window"], registry=r)
        self.kpi_points = Counter("citygw_kpi_points", "KPI points emitted", ["window"], registry=r)
        self.queue_dropped = Counter("citygw_queue_dropped", "Readings dropped because the ingest queue was full",
                                     registry=r)
        self.journal_dropped = Counter("citygw_journal_dropped",
                                       "Undelivered journal entries dropped at the disk cap", registry=r)
        self.journal_write_errors = Counter("citygw_journal_write_errors",
                                            "Failed journal writes, retried (reason: disk_full or other)",
                                            ["thread", "reason"], registry=r)
        self.queue_depth = Gauge("citygw_queue_depth", "Batches waiting in the ingest queue", registry=r)
        self.journal_bytes = Gauge("citygw_journal_bytes", "Bytes used by the journal", registry=r)
        self.sink_written = Counter("citygw_sink_written", "Entries delivered by a sink", ["sink"], registry=r)
        self.sink_errors = Counter("citygw_sink_errors", "Failed sink writes", ["sink", "action"], registry=r)
        self.sink_dead_letters = Counter("citygw_sink_dead_letters", "Entries a sink refused for good",
                                         ["sink"], registry=r)
        self.sink_lag = Gauge("citygw_sink_lag", "Journal entries not yet delivered by a sink", ["sink"],
                              registry=r)
        self.feed_suppressed = Counter("citygw_feed_suppressed", "Raw readings the MQTT feed held back inside "
                                       "their deadband (report by exception; still journaled and in InfluxDB)",
                                       registry=r)
        self.clock_jumps = Counter("citygw_clock_jumps", "Wall-clock jumps detected", registry=r)
        self.mqtt_connected = Gauge("citygw_mqtt_connected", "1 while connected to the broker", ["client"],
                                    registry=r)
        self.mqtt_takeovers = Counter("citygw_mqtt_session_takeovers", "Episodes of another client using our "
                                      "MQTT client id (the broker throwing one of us off; logged once each)",
                                      ["client"], registry=r)
        self.sink_oldest_age = Gauge("citygw_sink_oldest_undelivered_seconds",
                                     "Age of the oldest journal entry a sink has not delivered (0: none)", ["sink"],
                                     registry=r)
        self.healthy = Gauge("citygw_healthy", "1 when /healthz answers 200, 0 when it lists problems", registry=r)
        self.health_problems = Gauge("citygw_health_problems", "Problems /healthz lists", registry=r)

    def declare(self, *, sinks: Iterable[str] = (), devices: Iterable[str] = (),
                mqtt_clients: Iterable[str] = ()) -> None:
        """Give every labelled series its first sample at start, so an alert on `== 0` fires before any event.

        A device starts unavailable and never seen (no frame yet), a client disconnected (no CONNACK yet).
        """
        self.healthy.set(1)
        for client in mqtt_clients:
            self.mqtt_connected.labels(client).set(0)
        for sink in sinks:
            self.sink_lag.labels(sink).set(0)
            self.sink_oldest_age.labels(sink).set(0)
            self.sink_written.labels(sink)
            self.sink_dead_letters.labels(sink)
            for action in ("retry", "split"):
                self.sink_errors.labels(sink, action)
        for device in devices:
            self.devices.declare(device)


class DeviceSeries(Collector):
    """The per-device series (readings, availability, last seen, clock offset) as dicts, sampled at each scrape.

    prometheus_client keeps a child object with a lock per labelled value: four per device, about 2 KB, so 10,000
    devices heard over MQTT held some 20 MB in metrics alone. Here a device costs a dict entry per series. The
    ingest thread writes; a scrape reads a C-level copy of each dict.
    """

    def __init__(self) -> None:
        self.readings: dict[str, int] = {}
        self.available: dict[str, int] = {}
        self.last_seen: dict[str, float] = {}
        self.clock_offset: dict[str, float] = {}

    def declare(self, device: str) -> None:
        """A configured device: unavailable, never seen (an alert on time() - last_seen fires), no readings."""
        self.readings.setdefault(device, 0)
        self.available.setdefault(device, 0)
        self.last_seen.setdefault(device, 0.0)
        self.clock_offset.setdefault(device, 0.0)

    def accepted(self, device: str, n: int, now_s: float) -> None:
        """`n` readings of the device were journaled at `now_s`."""
        self.readings[device] = self.readings.get(device, 0) + n
        self.last_seen[device] = now_s

    def collect(self) -> Iterator[Metric]:
        """One sample per device and series."""
        readings = CounterMetricFamily("citygw_readings", "Readings accepted into the journal", labels=["device"])
        for device, n in list(self.readings.items()):
            readings.add_metric([device], n)
        yield readings
        for name, doc, values in (
                ("citygw_device_available", "1 when the device answers", self.available),
                ("citygw_device_last_seen_timestamp_seconds", "Unix time of the device's last accepted reading",
                 self.last_seen),
                ("citygw_device_clock_offset_seconds", "Steady offset of a device's event times from receipt "
                 "(positive: behind), while reported; 0 once cleared", self.clock_offset)):
            family = GaugeMetricFamily(name, doc, labels=["device"])
            for device, value in list(values.items()):
                family.add_metric([device], value)
            yield family


class NatsCollector(Collector):
    """The NATS input's numbers (ingest/nats_source.py `describe()`), read at each scrape: a sample from start.

    Rejected messages are in citygw_rejected_total like every input's; nothing else of the input drops data (an
    unacknowledged message stays in the consumer), so the ack failures are what a dashboard watches beside these.
    """

    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self.read = read  # not `describe`: the registry would take it for the collector's list of metrics

    def collect(self) -> Iterator[Metric]:
        """One sample per series, labelled with the durable consumer's name."""
        d = self.read()
        label = [str(d["durable"])]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["consumer"])
            family.add_metric(label, value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["consumer"])
            family.add_metric(label, value)
            return family

        yield gauge("citygw_nats_connected", "1 while connected to a NATS server with the consumer bound",
                    1 if d["connected"] else 0)
        yield gauge("citygw_nats_pending", "Messages the durable consumer holds not yet fetched (as last read; "
                    "0 before the first read)", d["pending"] or 0)
        yield gauge("citygw_nats_in_flight", "Messages fetched and not yet acknowledged (journal commit pending)",
                    d["in_flight"])
        yield counter("citygw_nats_messages", "Messages fetched, redeliveries included", d["fetched"])
        yield counter("citygw_nats_redelivered", "Messages fetched again (not acknowledged within ack_wait)",
                      d["redelivered"])
        yield counter("citygw_nats_acked", "Acknowledgements sent after the journal commit", d["acked"])
        failures = CounterMetricFamily("citygw_nats_ack_failures", "Acknowledgements not sent (reason error: the "
                                       "client refused; stopping: due after the input stopped): the messages come "
                                       "again and the duplicate check drops them", labels=["consumer", "reason"])
        failures.add_metric([*label, "error"], d["acks_failed"])
        failures.add_metric([*label, "stopping"], d["acks_skipped"])
        yield failures
        yield counter("citygw_nats_errors", "Failed connects, consumer binds and fetch loops (each retried)",
                      d["errors"])
