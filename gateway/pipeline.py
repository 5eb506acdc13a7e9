"""The ingest thread: bounded queue → validate → journal (one transaction per batch) → ack → windows → KPIs.

Transports (serial owners, the MQTT source) call the `Emitter` methods from their own threads. One thread
owns the journal's write connection and the window engine, so neither needs locking.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

import orjson

from aggregators.derived import DerivedKpis
from aggregators.kpi import KpiPoint
from aggregators.windows import WindowEngine
from devices.reading import Reading
from gateway.clock import ClockOffsets
from gateway.device_book import DeviceBook
from gateway.housekeeping import Housekeeper
from gateway.ingest_queue import Ack, Batch, IngestQueue
from gateway.journal import Journal, WriteFailure
from gateway.metrics import Metrics, reason_code
from ingest.base import ThreadStarter, plain_thread
from ingest.validate import Validator

__all__ = ["Pipeline"]

log = logging.getLogger("citygw.pipeline")
_device_of = attrgetter("device_id")
_ts_of = attrgetter("ts")
FULL_TICK_S = 1.0  # how often the ingest loop moves every device's watermark (wall time), not just those heard
CLOSE_LOT_DEVICES = 500  # devices whose windows close in one transaction (Pipeline.tick)


class Pipeline:
    """Implements `ingest.base.Emitter`; runs the ingest thread."""

    def __init__(
        self,
        journal: Journal,
        engine: WindowEngine,
        metrics: Metrics,
        clock_ns: Callable[[], int] = time.time_ns,
        queue_max: int = 10_000,
        batch_max: int = 10_000,
        commit_interval_s: float = 0.0,
        put_timeout_s: float = 10.0,
        idle_close_s: float = 5.0,
        sink_names: tuple[str, ...] = (),
        on_appended: Callable[[], None] = lambda: None,
        on_kpis: Callable[[list[KpiPoint]], None] = lambda points: None,
        derived: DerivedKpis | None = None,
        book: DeviceBook | None = None,
        start_thread: ThreadStarter = plain_thread,
    ) -> None:
        self.journal = journal
        self.engine = engine
        self.metrics = metrics
        self.clock_ns = clock_ns
        self.validator = Validator(clock_ns)
        self.idle_close_ns = int(idle_close_s * 1e9)
        self.sink_names = sink_names
        self.on_appended = on_appended
        self.on_kpis = on_kpis
        self.derived = derived
        self.start_thread = start_thread  # the gateway's supervisor restarts a thread that crashes
        self.book = book  # per-device last seen, latest values, last rejection (status page, staleness)
        self._stop = threading.Event()
        self.queue = IngestQueue(metrics, self._stop, queue_max, batch_max, put_timeout_s, commit_interval_s)
        self._hold_lock = threading.Lock()
        self._touched: set[str] = set()  # devices whose readings were folded since the last tick
        self._full_tick_at = 0.0
        self._thread: threading.Thread | None = None
        self._housekeeper: threading.Thread | None = None
        self._max_event_ns = 0
        self._last_data_ns = clock_ns()
        # While an input that may carry a backlog is not yet connected (or has just connected), idle time
        # must not close windows on wall time: the backlog would then arrive late. See input_state().
        self._inputs_down = 0
        self._hold_idle_until = 0.0
        self._log_counts: dict[tuple[str, str], int] = {}
        self._device_up: dict[str, bool] = {}
        self.accepted = 0
        self.rejected_count = 0
        self.offsets = ClockOffsets(metrics.devices.clock_offset.__setitem__)
        self.loop_at = time.monotonic()  # when the ingest loop last finished an iteration
        # Journal writes that fail (disk full) are retried, never acknowledged meanwhile; these say so once
        # and feed the health check (gateway/health.py).
        self.write_failure = WriteFailure(
            "journal", journal.path, "Nothing is acknowledged meanwhile: MQTT messages stay with the broker, "
            "serial readings wait in the bounded ingest queue.",
            lambda reason: metrics.journal_write_errors.labels("ingest", reason).inc())
        self.housekeeper = Housekeeper(journal, engine, metrics, sink_names)  # its thread: checkpoints, trim, cap

    def stalled_s(self) -> float:
        """How long input has been waiting with no batch committed since (0 while the queue is empty)."""
        return self.queue.stalled_s()

    # -- Emitter (any thread) ------------------------------------------------------------------------------

    def readings(self, readings: list[Reading], ack: Ack | None = None) -> None:
        """Queue readings (IngestQueue.put: backpressure; acknowledgeable ones are held, others dropped, counted)."""
        self.queue.put(readings, ack)

    def rejected(self, device_id: str, reason: str, data: bytes | None = None) -> None:
        """Count a rejection per device and reason; log the first of each kind, then every 100th."""
        code = reason_code(reason)
        self.metrics.rejected.labels(device_id or "unknown", code).inc()
        self.rejected_count += 1
        if self.book is not None:
            self.book.rejected(device_id or "unknown", reason)
        key = (device_id, code)
        n = self._log_counts.get(key, 0) + 1
        if len(self._log_counts) < 10_000:
            self._log_counts[key] = n
        if n == 1 or n % 100 == 0:
            detail = f" [bytes {data[:32].hex(' ')}{' …' if len(data) > 32 else ''}]" if data else ""
            log.warning("device %s: rejected (%d× so far): %s%s", device_id or "?", n, reason, detail)

    def device_state(self, device_id: str, available: bool, reason: str = "") -> None:
        """Log a device going away once and coming back once."""
        self.metrics.devices.available[device_id] = 1 if available else 0
        if self.book is not None:
            self.book.device_state(device_id, available, reason)
        if self._device_up.get(device_id, True) != available:
            if available:
                log.info("device %s is available again", device_id)
            else:
                log.warning("device %s is unavailable: %s", device_id, reason)
        self._device_up[device_id] = available

    def input_state(self, up: bool) -> None:
        """An input with a broker-side backlog went down or came up (call once per transition)."""
        with self._hold_lock:
            self._inputs_down = max(0, self._inputs_down + (-1 if up else 1))
            if up:
                self._hold_idle_until = time.monotonic() + self.idle_close_ns / 1e9

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Rebuild open windows from the journal, then start the ingest thread."""
        self.rebuild()
        self._thread = self.start_thread("citygw-ingest", self._run, self._stop)
        self._housekeeper = self.start_thread("citygw-housekeeping", lambda: self.housekeeper.run(self._stop),
                                              self._stop)

    def stop(self) -> None:
        """Drain what is queued, close nothing early (open windows are rebuilt on the next start), join."""
        self._stop.set()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._housekeeper is not None:
            self._housekeeper.join(timeout=30)

    def rebuild(self) -> None:
        """Restore window state after a restart: closed horizons from meta, open windows from raw readings."""
        if self.derived is not None:
            state = self.journal.get_meta("derived_state")
            if state:
                self.derived.restore(orjson.loads(state))
        saved = self.journal.get_meta("closed_until")
        if saved:
            self.engine.restore_floor(orjson.loads(saved))
        sources = self.journal.get_meta("sources")  # each device's own horizon (per-device watermarks)
        if sources:
            self.engine.restore_sources(orjson.loads(sources), self.clock_ns())
        # A window size that never closed a window (a crash in the first minutes, before any KPI point
        # committed a horizon; or a window size added to the config) has a horizon of 0: every reading in
        # the journal may belong to one of its open windows, so all are replayed. A device first heard
        # after the last commit of horizons is in none of them: `replay_from` (lowered with the readings'
        # own commit, see process()) reaches back to its oldest reading. Trimming keeps what this replays.
        since = self.engine.open_since()
        replay_from = self.journal.get_meta("replay_from")
        if replay_from is not None:
            since = min(since, int(replay_from))
        self.housekeeper.committed_open_since = since
        longest = max((s.size_ns for s in self.engine.specs), default=0)
        # The duplicate check remembers the last readings journaled, whatever windows they fall in: a
        # copy redelivered after the crash is rejected, not journaled twice (the replay below adds the rest).
        for r in self.journal.latest_readings(self.validator.max_remembered):
            self.validator.remember(r)
        replayed = 0
        for r in self.journal.readings_since(since - longest if since > 0 else 0):
            self.validator.remember(r)
            self.engine.seed_counter(r)
            if self.engine.add(r):
                replayed += 1
            self._max_event_ns = max(self._max_event_ns, r.ts)
        self.engine.clear_late()
        if replayed:
            log.info("rebuilt open windows from %d journal readings", replayed)

    # -- the ingest thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self.queue.take()
            if batch:
                committed = False
                try:
                    self.process(batch)
                    committed = True
                finally:
                    self.queue.done(committed)
            elif self._stop.is_set():
                break
            # Every device once a second (wall time closes idle devices' windows; 10,000 devices cost ~5 ms),
            # in between only those a batch just moved (event time closes their windows).
            now = time.monotonic()
            if now - self._full_tick_at >= FULL_TICK_S:
                self._full_tick_at = now
                self._touched.clear()
                self.tick()
            elif self._touched:
                touched, self._touched = self._touched, set()
                self.tick(touched)
            self.loop_at = time.monotonic()  # the systemd watchdog is fed while this moves

    def _append(self, readings: list[Reading] | None = None, kpis: list[KpiPoint] | None = None,
                meta: dict[str, str] | None = None) -> bool:
        """Append in one transaction, retrying while the journal cannot be written; False when stopping first."""
        delay = 0.2
        while True:
            try:
                self.journal.append(readings or (), kpis or (), meta)
            except sqlite3.OperationalError as exc:
                # Disk full (or another error that may pass): nothing is acknowledged, so the broker keeps
                # the messages; the producers wait on the bounded queue. Same batch again, once there is room.
                self.write_failure.failed(exc)
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, 5.0)
                continue
            self.write_failure.succeeded()
            return True

    def process(self, batch: Batch) -> None:
        """Validate, append in one transaction, acknowledge, then fold into windows."""
        now = self.clock_ns()
        good: list[Reading] = []
        check_many = self.validator.check_many  # a batch at once: valid readings go to `good`
        for readings, _ in batch:
            for r, reason in check_many(readings, now, good):
                self.rejected(r.device_id, reason)
                if r.ts > now:  # ahead of our clock: still a clock offset to report
                    self.offsets.observe(r.device_id, now - r.ts)
        meta = None
        if good:
            oldest = min(map(_ts_of, good))
            if oldest < self.housekeeper.committed_open_since:
                # Older than the committed horizons (a device new since the last commit, or a lagging one):
                # a restart must replay from here, and the trim must keep it (rebuild()).
                self.housekeeper.committed_open_since = oldest
                meta = {"replay_from": str(oldest)}
        if good and not self._append(readings=good, meta=meta):
            return  # stopping while the journal cannot be written: unacknowledged, the broker resends
        for _, ack in batch:
            if ack is not None:
                ack()  # only now, after the commit, may the source let go of the message
        if not good:
            return
        self.accepted += len(good)
        self._last_data_ns = now
        late = _LateCounts(self.engine)
        self.engine.add_many(good, now)
        per_device = Counter(map(_device_of, good))  # counted in C
        newest: dict[str, int] = {}
        for device, _, _, _, ts, _, _ in good:  # unpacked: see Reading
            if ts > newest.get(device, 0):
                newest[device] = ts
        self._max_event_ns = max(self._max_event_ns, *newest.values())
        self._touched.update(newest)
        for device, ts in newest.items():
            self.offsets.observe(device, now - ts)
        late.report(self.metrics)
        for device, n in per_device.items():
            self.metrics.devices.accepted(device, n, now / 1e9)
        if self.book is not None:
            self.book.accepted(good)
        self.on_appended()

    def time_report(self) -> dict[str, Any]:
        """Late readings per window length and per device, and devices whose clocks sit far from ours."""
        by_source = list(self.engine.late_by_source.items())  # one C-level copy: the ingest thread writes it
        by_source.sort(key=lambda item: -item[1])
        return {"late_by_window": dict(self.engine.late_by_window),
                "late_by_device": [{"device": d, "window": w, "late": n} for (d, w), n in by_source[:50]],
                "clock_offsets": self.offsets.reported()}

    def tick(self, devices: Iterable[str] | None = None) -> None:
        """Advance each device's watermark (or those of `devices`): its event time (bounded by the wall clock), or
        wall time once it is idle.

        Wall time drives no watermark while an input that may hold a backlog is down or has just connected.
        """
        now = self.clock_ns()
        wall_clock = self._inputs_down == 0 and time.monotonic() >= self._hold_idle_until
        ids = self.engine.source_ids() if devices is None else list(devices)
        # A few hundred devices at a time, each lot committed with its horizons: 10,000 devices going quiet at once
        # would otherwise close 100,000 windows in one list of KPI points and one transaction (a peak of memory
        # the process keeps, fragmented, long after).
        for i in range(0, len(ids), CLOSE_LOT_DEVICES):
            if not self._close(now, wall_clock, ids[i:i + CLOSE_LOT_DEVICES]):
                return

    def _close(self, now: int, wall_clock: bool, devices: list[str]) -> bool:
        """Close what the watermarks of `devices` passed and commit it; False when stopping left it uncommitted."""
        points = self.engine.advance_sources(now, self.idle_close_ns, wall_clock, devices)
        if not points:
            return True
        open_since = self.engine.open_since()
        meta = {"closed_until": orjson.dumps(self.engine.closed_until).decode(),
                "sources": orjson.dumps(self.engine.source_state()).decode(), "replay_from": str(open_since)}
        if self.derived is not None:
            points.extend(self.derived.feed(points, self.engine.closed_everywhere()))
            meta["derived_state"] = orjson.dumps(self.derived.state(), option=orjson.OPT_SERIALIZE_NUMPY).decode()
        # Window results, indicators and the new horizons commit together: a crash leaves all or none.
        if not self._append(kpis=points, meta=meta):
            return False  # stopping: the horizons were not committed, so these windows are rebuilt on the next start
        self.housekeeper.committed_open_since = open_since  # what a restart now replays from
        for p in points:
            self.metrics.kpi_points.labels(p.window).inc()
        self.on_kpis(points)
        self.on_appended()
        return True

    def housekeeping(self, journal: Journal | None = None, trim: bool = True) -> None:
        """One round of housekeeping now (gateway/housekeeping.py), on the ingest thread's journal by default."""
        self.housekeeper.once(journal or self.journal, trim)


class _LateCounts:
    """The window engine's late counts before a batch; `report` counts and logs what the batch added."""

    def __init__(self, engine: WindowEngine) -> None:
        self.engine = engine
        self.total = engine.late
        self.by_window = dict(engine.late_by_window)

    def report(self, metrics: Metrics) -> None:
        """Count the batch's late readings (in all, per window length); log the first per device and window."""
        if self.engine.late > self.total:
            metrics.late.inc(self.engine.late - self.total)
        for label, n in self.engine.late_by_window.items():
            if n > self.by_window.get(label, 0):
                metrics.late_window.labels(label).inc(n - self.by_window.get(label, 0))
        for device, label, ts, horizon in self.engine.take_first_late():
            log.warning("device %s: a reading stamped %s is late for the %s window (this device's windows are "
                        "closed up to %s); kept raw, not in the %s KPI; counted in citygw_late_total{window=\"%s\"}. "
                        "Check the device's clock and time zone, or raise aggregation.grace",
                        device, _iso(ts), label, _iso(horizon), label, label)


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).isoformat(timespec="seconds")
