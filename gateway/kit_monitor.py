"""What the status page, /status.json, /healthz and the `<prefix>/health` topic say about a running gateway.

`KitMonitor` holds the per-device book, the latest KPI points and the backlog ages, and once a second (from
`Gateway.tick`, the main thread) marks silent MQTT devices unavailable, notes backlog marks, refreshes the
gauges and re-evaluates health: a change is logged once and published retained through the feed connection.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from gateway.backlog_age import BacklogAges
from gateway.charts import device_chart
from gateway.device_book import DeviceBook
from gateway.health import health_reasons
from gateway.kpi_board import DAY_NS, KpiBoard, chart_window
from gateway.status_page import explain_error, render_page

if TYPE_CHECKING:
    from aggregators.windows import WindowSpec
    from gateway.app import Gateway

__all__ = ["KitMonitor"]

log = logging.getLogger("citygw.health")

HEALTH_REFRESH_S = 60.0  # the retained <prefix>/health is refreshed this often (ages and the backlog move on)


class JournalView:
    """The monitor's own read-only connection to the journal.

    The status page and the health checks must answer while a writer is stuck on the journal (a disk full, a
    lock held by another process): the writer's connection waits under its own lock, a WAL reader does not.
    A read that fails returns the last value read.
    """

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
        self._db.execute("PRAGMA query_only=1")
        self._lock = threading.Lock()
        self._last: dict[str, Any] = {"seq": 0, "pages": 0, "page_size": 0, "dropped": 0}

    def _read(self, key: str, sql: str) -> Any:
        with self._lock:
            try:
                # fetchall, not fetchone: it runs the statement to its end, so no read transaction stays open
                # (an open reader would keep WAL checkpoints from truncating the WAL, and the disk cap counts it).
                rows = self._db.execute(sql).fetchall()
            except sqlite3.Error:
                return self._last[key]
        row = rows[0] if rows else None
        self._last[key] = int(row[0]) if row and row[0] is not None else 0
        return self._last[key]

    def last_seq(self) -> int:
        """The highest sequence number appended so far."""
        return int(self._read("seq", "SELECT seq FROM sqlite_sequence WHERE name='entries'"))

    def used_bytes(self) -> int:
        """Bytes of the database in use (pages minus free pages), excluding the WAL."""
        pages = self._read("pages", "SELECT (SELECT page_count FROM pragma_page_count()) - "
                                    "(SELECT freelist_count FROM pragma_freelist_count())")
        return int(pages) * int(self._read("page_size", "SELECT page_size FROM pragma_page_size()"))

    def dropped(self) -> int:
        """Undelivered entries dropped at the disk cap so far."""
        return int(self._read("dropped", "SELECT value FROM meta WHERE key='dropped_undelivered'"))

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


def _by_device(samples: Any, key: str = "device") -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in samples.collect():
        for sample in metric.samples:
            if sample.name.endswith(("_total", "_available")):
                out[sample.labels[key]] = out.get(sample.labels[key], 0.0) + sample.value
    return out


class KitMonitor:
    """The gateway as the technician sees it; built before the pipeline (which feeds its device book)."""

    def __init__(self, gw: Gateway, specs: Sequence[WindowSpec]) -> None:
        self.gw = gw
        s = gw.settings
        self.book = DeviceBook([(d.id, d.kind) for d in s.devices], s.health.stale_after, kind_of=self._kind_of)
        self.board = KpiBoard(chart_window(specs))
        self.backlog = BacklogAges()
        self.journal = JournalView(s.journal_path)  # opened after the gateway's Journal created the file
        self._mqtt_down_since: float | None = time.monotonic() if s.mqtt.host and s.mqtt.routes else None
        self._keys: list[str] | None = None  # None: nothing published yet
        self._availability: tuple[int, int, int] | None = None  # device counts last published (fleet view)
        self._published_at = float("-inf")

    def _kind_of(self, device_id: str) -> str | None:
        for source in (self.gw.mqtt_source, self.gw.nats_source):  # the routes' decoders, MQTT or NATS
            kinds: dict[str, str] = getattr(source, "device_kinds", {})
            if device_id in kinds:
                return kinds[device_id]
        s = self.gw.settings
        formats = {r.format for r in s.mqtt.routes} | {r.format for r in s.nats.routes}
        return formats.pop() if len(formats) == 1 else None

    # -- inputs --------------------------------------------------------------------------------------------

    def mqtt_state(self, up: bool) -> None:
        """The MQTT input connected or disconnected."""
        if up:
            self._mqtt_down_since = None
        elif self._mqtt_down_since is None:
            self._mqtt_down_since = time.monotonic()

    def mqtt_down_for(self) -> float | None:
        """Seconds the MQTT input has been down (since start if it never connected); None while up or unused."""
        return None if self._mqtt_down_since is None else time.monotonic() - self._mqtt_down_since

    # -- health --------------------------------------------------------------------------------------------

    def health(self) -> list[str]:
        """Every current problem (gateway/health.py and gateway/health_checks.py); empty when healthy."""
        return health_reasons(self.gw)

    def tick(self) -> None:
        """Once a second: staleness, backlog ages, gauges, health (logged and published on change)."""
        gw = self.gw
        self.book.check_stale()
        cursors = [d.cursor for d in gw.deliveries]
        self.backlog.note(self.journal.last_seq(), cursors)
        for d in gw.deliveries:
            gw.metrics.sink_oldest_age.labels(d.sink.name).set(round(self.backlog.age(d.cursor), 1))
            if hasattr(d.sink, "publish_health"):
                gw.metrics.mqtt_connected.labels("feed").set(1 if getattr(d.sink, "connected", False) else 0)
        reasons = self.health()
        gw.metrics.healthy.set(0 if reasons else 1)
        gw.metrics.health_problems.set(len(reasons))
        # A reason's key is what it is about ("sink influx", "mqtt"); its numbers change every tick.
        keys = [r.split(":", 1)[0] for r in reasons]
        changed = keys != self._keys
        if changed:
            for reason in reasons:
                if reason.split(":", 1)[0] not in (self._keys or []):
                    log.warning("unhealthy: %s", reason)
            if not reasons and self._keys:
                log.info("healthy again")
            self._keys = keys
        now = time.monotonic()
        # Devices up/down and the backlog ride along for `citygw fleet`: a change of the counts publishes now.
        availability = self.book.availability()
        if availability != self._availability:
            changed, self._availability = True, availability
        if not changed and not now - self._published_at >= HEALTH_REFRESH_S:
            return
        self._published_at = now
        last = self.journal.last_seq()
        slowest = min(cursors, default=last)
        payload = orjson.dumps({"gateway": gw.settings.gateway.id, "healthy": not reasons, "reasons": reasons,
                                "at": round(time.time(), 3),
                                "devices": dict(zip(("up", "down", "waiting"), availability, strict=True)),
                                "backlog": {"entries": max(0, last - slowest),
                                            "oldest_s": round(self.backlog.age(slowest), 1)}})
        for d in gw.deliveries:
            publish = getattr(d.sink, "publish_health", None)
            if callable(publish):
                publish(payload)

    # -- the status page -----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Everything the status page shows (no secrets): /status.json."""
        gw = self.gw
        metrics = gw.metrics
        readings = dict(metrics.devices.readings)
        rejected = _by_device(metrics.rejected)
        devices = []
        for d in self.book.snapshot():
            d["readings"] = int(readings.get(d["id"], 0))
            d["rejected"] = int(rejected.get(d["id"], 0))
            devices.append(d)
        last = self.journal.last_seq()
        dead = {}
        for metric in metrics.sink_dead_letters.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    dead[sample.labels["sink"]] = int(sample.value)
        sinks = []
        for dl in gw.deliveries:
            since = dl.failing_since
            error = dl.last_error if since is not None else ""
            sinks.append({"name": dl.sink.name, "delivered": dl.delivered, "lag": max(0, last - dl.cursor),
                          "oldest_undelivered_s": round(self.backlog.age(dl.cursor), 1),
                          "failing": since is not None,
                          "failing_for_s": None if since is None else round(time.monotonic() - since, 1),
                          "last_error": error, "error_explained": explain_error(error),
                          "dead_letters": dead.get(dl.sink.name, 0)})
        kpis = [{"device_id": p.device_id, "name": p.name, "window": p.window, "value": p.value, "unit": p.unit,
                 "valid": p.valid, "start": p.start_ns, "end": p.end_ns, "coverage": p.fields.get("coverage")}
                for p in self.board.latest()]
        source = gw.mqtt_source
        m = gw.settings.mqtt
        return {
            "gateway": gw.settings.gateway.id,
            "now": time.time(),
            "timezone": gw.settings.gateway.timezone,
            "uptime_s": time.monotonic() - gw.started_at,
            "healthy": not (reasons := self.health()),
            "health": reasons,
            "mqtt_connected": bool(source and source.connected),
            "mqtt": ({"broker": f"{m.host}:{m.port}", "connected": bool(source and source.connected),
                      "down_for_s": self.mqtt_down_for()} if source is not None else None),
            # The JetStream input ([nats]; ingest/nats_source.py): None when not configured.
            "nats": gw.nats_source.describe() if gw.nats_source is not None else None,
            "journal_bytes": self.journal.used_bytes(),
            "journal_max_bytes": gw.settings.journal.max_size,
            "clock": gw.clock.describe(),
            "accepted": gw.pipeline.accepted,
            "rejected": gw.pipeline.rejected_count,
            "late": gw.pipeline.engine.late,
            "journal_dropped": self.journal.dropped(),
            "devices": devices,
            "devices_evicted": self.book.evicted,
            "sinks": sinks,
            "kpis": kpis,
            "kpi_series": self.board.describe(),
            # late_by_window, late_by_device, clock_offsets: event-time problems per device (docs/architecture.md)
            **gw.pipeline.time_report(),
        }

    def close(self) -> None:
        """Close the monitor's journal connection."""
        self.journal.close()

    def page(self) -> str:
        """The HTML status page, with a chart of the last 24 h per device."""
        status = self.status()
        charts = {}
        spec = self.board.chart
        if spec is not None:
            now_ns = time.time_ns()
            start = now_ns - DAY_NS
            for d in status["devices"]:
                series = self.board.history(d["id"], start)
                charts[d["id"]] = device_chart(d["id"], series, start, DAY_NS, spec.size_ns, spec.label)
        return render_page(status, charts)
