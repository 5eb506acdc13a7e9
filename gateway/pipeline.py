"""The ingest thread: bounded queue → validate → journal (one transaction per batch) → ack → windows → KPIs.

Transports (serial owners, the MQTT source) call the `Emitter` methods from their own threads. One thread
owns the journal's write connection and the window engine, so neither needs locking.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import orjson

from aggregators.derived import DerivedKpis
from aggregators.kpi import KpiPoint
from aggregators.windows import WindowEngine
from devices.reading import Reading
from gateway.journal import Journal
from gateway.metrics import Metrics, reason_code
from ingest.validate import Validator

__all__ = ["Pipeline"]

log = logging.getLogger("citygw.pipeline")

Ack = Callable[[], None]


class Pipeline:
    """Implements `ingest.base.Emitter`; runs the ingest thread."""

    def __init__(
        self,
        journal: Journal,
        engine: WindowEngine,
        metrics: Metrics,
        clock_ns: Callable[[], int] = time.time_ns,
        queue_max: int = 10_000,
        batch_max: int = 2000,
        put_timeout_s: float = 10.0,
        idle_close_s: float = 5.0,
        sink_names: tuple[str, ...] = (),
        on_appended: Callable[[], None] = lambda: None,
        on_kpis: Callable[[list[KpiPoint]], None] = lambda points: None,
        derived: DerivedKpis | None = None,
    ) -> None:
        self.journal = journal
        self.engine = engine
        self.metrics = metrics
        self.clock_ns = clock_ns
        self.validator = Validator(clock_ns)
        self.queue_max = queue_max
        self.batch_max = batch_max
        self.put_timeout_s = put_timeout_s
        self.idle_close_ns = int(idle_close_s * 1e9)
        self.sink_names = sink_names
        self.on_appended = on_appended
        self.on_kpis = on_kpis
        self.derived = derived
        self._queue: deque[tuple[list[Reading], Ack | None]] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
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
        self.loop_at = time.monotonic()  # when the ingest loop last finished an iteration

    # -- Emitter (any thread) ------------------------------------------------------------------------------

    def readings(self, readings: list[Reading], ack: Ack | None = None) -> None:
        """Queue readings; blocks (backpressure) while the queue is full, drops and counts after a timeout."""
        with self._cond:
            deadline = time.monotonic() + self.put_timeout_s
            while len(self._queue) >= self.queue_max and not self._stop.is_set():
                if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    self.metrics.queue_dropped.inc(len(readings))
                    log.warning("ingest queue full for %.0f s: dropped %d readings (journal too slow?)",
                                self.put_timeout_s, len(readings))
                    return
            self._queue.append((readings, ack))
            self._cond.notify_all()

    def rejected(self, device_id: str, reason: str, data: bytes | None = None) -> None:
        """Count a rejection per device and reason; log the first of each kind, then every 100th."""
        code = reason_code(reason)
        self.metrics.rejected.labels(device_id or "unknown", code).inc()
        self.rejected_count += 1
        key = (device_id, code)
        n = self._log_counts.get(key, 0) + 1
        if len(self._log_counts) < 10_000:
            self._log_counts[key] = n
        if n == 1 or n % 100 == 0:
            detail = f" [bytes {data[:32].hex(' ')}{' …' if len(data) > 32 else ''}]" if data else ""
            log.warning("device %s: rejected (%d× so far): %s%s", device_id or "?", n, reason, detail)

    def device_state(self, device_id: str, available: bool, reason: str = "") -> None:
        """Log a device going away once and coming back once."""
        self.metrics.device_up.labels(device_id).set(1 if available else 0)
        if self._device_up.get(device_id, True) != available:
            if available:
                log.info("device %s is available again", device_id)
            else:
                log.warning("device %s is unavailable: %s", device_id, reason)
        self._device_up[device_id] = available

    def input_state(self, up: bool) -> None:
        """An input with a broker-side backlog went down or came up (call once per transition)."""
        with self._cond:
            self._inputs_down = max(0, self._inputs_down + (-1 if up else 1))
            if up:
                self._hold_idle_until = time.monotonic() + self.idle_close_ns / 1e9

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Rebuild open windows from the journal, then start the ingest thread."""
        self.rebuild()
        self._thread = threading.Thread(target=self._run, name="citygw-ingest", daemon=True)
        self._thread.start()
        self._housekeeper = threading.Thread(target=self._housekeeping_loop, name="citygw-housekeeping",
                                             daemon=True)
        self._housekeeper.start()

    def stop(self) -> None:
        """Drain what is queued, close nothing early (open windows are rebuilt on the next start), join."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
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
            for label, value in orjson.loads(saved).items():
                if label in self.engine.closed_until:
                    self.engine.closed_until[label] = int(value)
        # A window size that never closed a window (a crash in the first minutes, before any KPI point
        # committed a horizon; or a window size added to the config) has a horizon of 0: every reading in
        # the journal may belong to one of its open windows, so all are replayed. Trimming keeps them
        # (it keeps readings since open_since() - longest), so the journal holds exactly what is needed.
        since = self.engine.open_since()
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
        self.engine.late = 0
        if replayed:
            log.info("rebuilt open windows from %d journal readings", replayed)

    # -- the ingest thread ---------------------------------------------------------------------------------

    def _take(self) -> list[tuple[list[Reading], Ack | None]]:
        with self._cond:
            if not self._queue and not self._stop.is_set():
                self._cond.wait(timeout=0.2)
            batch: list[tuple[list[Reading], Ack | None]] = []
            n = 0
            while self._queue and n < self.batch_max:
                item = self._queue.popleft()
                batch.append(item)
                n += len(item[0])
            self.metrics.queue_depth.set(len(self._queue))
            if batch:
                self._cond.notify_all()
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                self.process(batch)
            elif self._stop.is_set():
                break
            self.tick()
            self.loop_at = time.monotonic()  # the systemd watchdog is fed while this moves

    def _housekeeping_loop(self) -> None:
        # Its own connection and thread: checkpoints, trimming and the disk cap never stall ingest commits
        # for longer than one small transaction.
        journal = Journal(self.journal.path, self.journal.synchronous, self.journal.max_bytes)
        try:
            last = 0.0
            while not self._stop.wait(1.0):
                journal.checkpoint()
                if time.monotonic() - last >= 5.0:
                    last = time.monotonic()
                    self.housekeeping(journal)
        finally:
            journal.close()

    def process(self, batch: list[tuple[list[Reading], Ack | None]]) -> None:
        """Validate, append in one transaction, acknowledge, then fold into windows."""
        now = self.clock_ns()
        good: list[Reading] = []
        check = self.validator.check
        for readings, _ in batch:
            for r in readings:
                reason = check(r, now)
                if reason is None:
                    good.append(r)
                else:
                    self.rejected(r.device_id, reason)
        if good:
            self.journal.append(good)
        for _, ack in batch:
            if ack is not None:
                ack()  # only now, after the commit, may the source let go of the message
        if not good:
            return
        self.accepted += len(good)
        self._last_data_ns = now
        late_before = self.engine.late
        add = self.engine.add
        per_device: dict[str, int] = {}
        for r in good:
            add(r)
            per_device[r.device_id] = per_device.get(r.device_id, 0) + 1
            if r.ts > self._max_event_ns:
                self._max_event_ns = r.ts
        for device, n in per_device.items():
            self.metrics.readings.labels(device).inc(n)
        if self.engine.late > late_before:
            self.metrics.late.inc(self.engine.late - late_before)
        self.on_appended()

    def tick(self) -> None:
        """Advance the watermark: event time (bounded by the wall clock), or wall time once input is idle."""
        now = self.clock_ns()
        watermark = min(self._max_event_ns, now)
        if (now - self._last_data_ns >= self.idle_close_ns and self._inputs_down == 0
                and time.monotonic() >= self._hold_idle_until):
            watermark = now
        points = self.engine.advance(watermark)
        if not points:
            return
        meta = {"closed_until": orjson.dumps(self.engine.closed_until).decode()}
        if self.derived is not None:
            points.extend(self.derived.feed(points))
            meta["derived_state"] = orjson.dumps(self.derived.state(), option=orjson.OPT_SERIALIZE_NUMPY).decode()
        # Window results, indicators and the new horizon commit together: a crash leaves all or none.
        self.journal.append(kpis=points, meta=meta)
        for p in points:
            self.metrics.kpi_points.labels(p.window).inc()
        self.on_kpis(points)
        self.on_appended()

    def housekeeping(self, journal: Journal | None = None) -> None:
        """Trim what every sink delivered; enforce the disk cap (counting what it costs)."""
        journal = journal or self.journal
        longest = max((s.size_ns for s in self.engine.specs), default=0)
        journal.trim(self.sink_names, self.engine.open_since() - longest)
        lost = journal.enforce_cap(self.sink_names)
        if lost:
            self.metrics.journal_dropped.inc(lost)
        self.metrics.journal_bytes.set(journal.used_bytes())
