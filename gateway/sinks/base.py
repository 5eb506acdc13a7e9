"""The sink contract and `Delivery`, the one place that owns cursors, batching, retry, backoff and splitting."""

from __future__ import annotations

import enum
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from gateway.journal import Entry, Journal, is_disk_full
from gateway.metrics import Metrics
from ingest.backoff import Backoff
from ingest.base import ThreadStarter, plain_thread

__all__ = ["Action", "Delivery", "Sink", "SinkError"]

log = logging.getLogger("citygw.delivery")


class Action(enum.Enum):
    """What the core does with a failed batch."""

    RETRY = "retry"  # transient (network, 429, 5xx): back off and send the same batch again
    SPLIT = "split"  # too large (413) or one bad point among good ones (400): halve and retry
    DROP = "drop"  # this entry can never be written: dead-letter it and move on


class SinkError(Exception):
    """A failed write, classified by the sink."""

    def __init__(self, action: Action, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.action = action
        self.reason = reason
        self.retry_after_s = retry_after_s


class Sink(Protocol):
    """A destination. `write` raises SinkError (classified) or any exception (treated as RETRY)."""

    name: str
    only_kind: int | None  # KIND_KPI for a sink that takes only KPI points; None for everything

    def write(self, entries: Sequence[Entry]) -> None:
        """Deliver the entries durably, or raise."""
        ...

    def body(self, entry: Entry) -> str:
        """How the entry is rendered for this sink (kept in the dead-letter table when it is refused)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class Delivery:
    """One thread per sink: read after the cursor, write, advance the cursor only after success."""

    def __init__(self, sink: Sink, journal: Journal, metrics: Metrics, batch_size: int = 5000,
                 flush_interval_s: float = 1.0, backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 cursor_persist_s: float = 1.0, isolate_after: int = 3, dead_letter_after: int = 5,
                 linger_s: float = 0.0, start_thread: ThreadStarter = plain_thread) -> None:
        self.sink = sink
        self.journal = journal
        self.metrics = metrics
        self.start_thread = start_thread  # the gateway's supervisor restarts a delivery thread that crashes
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        # After a write that did not fill a batch, the next one waits until `linger_s` after it: while entries
        # keep coming, writes are fewer and larger (InfluxDB fsyncs its WAL once per write), and an entry waits
        # at most that long more. The first entry after a quiet spell goes at once.
        self.linger_s = linger_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._backoff = Backoff(backoff_initial_s, 2.0, backoff_max_s, jitter=(0.5, 1.5))
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.cursor = journal.cursor(sink.name)  # in memory; persisted at most every cursor_persist_s
        self.cursor_persist_s = cursor_persist_s
        self._persisted = self.cursor
        self._persisted_at = time.monotonic()
        self.failing_since: float | None = None
        self.last_error = ""
        # An entry the sink refuses with a retryable error while it accepts others (a topic the broker
        # calls malformed) would stall the queue for ever: after `isolate_after` failures starting at
        # it, it is written alone; after `dead_letter_after`, if a probe of the entries behind it succeeded
        # meanwhile, it is dead-lettered. An outage refuses the probes too, so it dead-letters nothing.
        self.isolate_after = isolate_after
        self.dead_letter_after = dead_letter_after
        self._refusals = _Refusals()

    def start(self) -> None:
        """Start the sink (connections are opened here, not at construction) and the delivery thread."""
        start = getattr(self.sink, "start", None)  # optional: sinks without a connection of their own have none
        if callable(start):
            start()
        self._thread = self.start_thread(f"citygw-sink-{self.sink.name}", self._run, self._stop)

    def stop(self) -> None:
        """Stop after the current write; undelivered entries stay in the journal for next time."""
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._persist_cursor(force=True)
        self.sink.close()

    @property
    def running(self) -> bool:
        """Whether the delivery thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _persist_cursor(self, force: bool = False) -> None:
        # Writing the cursor after every batch would take the journal's write lock (and, under
        # synchronous=full, an fsync) per batch, adding milliseconds of latency to every sink. A cursor
        # that is up to a second stale after a crash only re-sends entries, which the sinks write
        # idempotently (docs/reliability.md).
        if self.cursor != self._persisted and (
                force or time.monotonic() - self._persisted_at >= self.cursor_persist_s):
            self._persisted_at = time.monotonic()
            try:
                self.journal.set_cursor(self.sink.name, self.cursor)
            except sqlite3.OperationalError as exc:
                # A full disk: the cursor stays in memory and is written on a later round; a stale cursor
                # only re-sends entries. The ingest thread reports the disk (health, log).
                self.metrics.journal_write_errors.labels(
                    f"sink-{self.sink.name}", "disk_full" if is_disk_full(exc) else "other").inc()
                return
            self._persisted = self.cursor

    def _run(self) -> None:
        cursor = self.cursor
        self._backoff.reset()
        limit = self.batch_size
        partial_at = float("-inf")  # when the last write that did not fill its batch ended
        while not self._stop.is_set():
            pause = partial_at + self.linger_s - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                break
            last = self.journal.last_seq()  # read first: anything committed later is read next round
            self.metrics.sink_lag.labels(self.sink.name).set(max(0, last - cursor))
            wanted = entries = self.journal.read_after(cursor, limit, self.sink.only_kind)
            if not entries:
                # Idle: a good moment to make the cursor durable. Not when only entries of kinds this sink does
                # not take came (they count as delivered): a KPI-only sink would write its cursor after every
                # commit of readings, taking the journal's write lock the ingest thread waits for.
                idle = last <= cursor
                if not idle:
                    cursor = self.cursor = last
                self._persist_cursor(force=idle)
                self.wake.wait(self.flush_interval_s)
                self.wake.clear()
                continue
            try:
                if wanted:
                    self.sink.write(wanted)
            except SinkError as exc:
                if exc.action is Action.DROP or (exc.action is Action.SPLIT and len(wanted) == 1):
                    self._dead_letter(wanted, exc.reason)
                elif exc.action is Action.SPLIT:
                    limit = max(1, len(entries) // 2)
                    self.metrics.sink_errors.labels(self.sink.name, "split").inc()
                    continue
                else:
                    limit = self._retry(wanted, exc.reason, limit, exc.retry_after_s)
                    cursor = self.cursor
                    continue
            except Exception as exc:
                limit = self._retry(wanted, f"{type(exc).__name__}: {exc}", limit, None)
                cursor = self.cursor
                continue
            self._refusals.succeeded(time.monotonic(), clear=True)
            partial_at = time.monotonic() if len(entries) < limit else float("-inf")
            cursor = self.cursor = entries[-1].seq
            self._persist_cursor()
            self.delivered += len(wanted)
            self.metrics.sink_written.labels(self.sink.name).inc(len(wanted))
            if self.failing_since is not None:
                log.info("sink %s recovered after %.0f s", self.sink.name, time.monotonic() - self.failing_since)
                self.failing_since = None
            self._backoff.reset()
            limit = min(self.batch_size, limit * 2)

    def _failed(self, reason: str, retry_after_s: float | None) -> None:
        self.metrics.sink_errors.labels(self.sink.name, "retry").inc()
        self.last_error = reason
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("sink %s failing, will retry with backoff (entries stay in the journal): %s",
                        self.sink.name, reason)
        delay = self._backoff.next_delay()  # grows the step even when the server says how long to wait
        if retry_after_s is not None:
            delay = min(retry_after_s, self.backoff_max_s)
        self._stop.wait(delay)

    def _dead_letter(self, entries: Sequence[Entry], reason: str) -> None:
        self.journal.dead_letter(self.sink.name, [(e.seq, reason, self.sink.body(e)) for e in entries])
        self.metrics.sink_dead_letters.labels(self.sink.name).inc(len(entries))
        log.error("sink %s refused %d entr%s for good (kept in dead_letters): %s", self.sink.name,
                  len(entries), "y" if len(entries) == 1 else "ies", reason)

    def _retry(self, wanted: Sequence[Entry], reason: str, limit: int, retry_after_s: float | None) -> int:
        """A retryable failure: isolate an entry refused over and over, dead-letter it once proven, else back off."""
        head = wanted[0]
        streak = self._refusals.failed(head.seq, time.monotonic())
        if streak >= self.isolate_after and len(wanted) > 1:
            limit = 1  # write the first entry alone: is it the entry, or the sink?
        elif len(wanted) == 1 and streak >= self.dead_letter_after and self._refusals.proven():
            self._dead_letter([head], f"refused {streak} times in a row while the sink accepted the entries "
                                      f"after it: {reason}")
            self.cursor = head.seq
            self._persist_cursor()
            return limit
        elif len(wanted) == 1 and streak >= self.isolate_after:
            self._probe(head.seq)
        self._failed(reason, retry_after_s)
        return limit

    def _probe(self, after_seq: int) -> None:
        # Write the next few entries alone: one accepted while the head is refused proves the sink works.
        # Entries written here are written again in order later; every sink writes idempotently.
        for entry in self.journal.read_after(after_seq, 3, self.sink.only_kind):
            try:
                self.sink.write([entry])
            except Exception as exc:  # any failure only means "not proven yet"
                log.debug("sink %s: probe of entry %d failed: %s", self.sink.name, entry.seq, exc)
                continue
            self._refusals.succeeded(time.monotonic(), clear=False)
            return


class _Refusals:
    """Consecutive failed writes starting at the same entry, and when the sink last accepted anything."""

    def __init__(self) -> None:
        self.seq = -1
        self.streak = 0
        self.first_failed = 0.0
        self.ok_at = float("-inf")

    def failed(self, seq: int, now: float) -> int:
        """Record a failed write starting at entry `seq`; return how many in a row started there."""
        if seq != self.seq:
            self.seq, self.streak, self.first_failed = seq, 0, now
        self.streak += 1
        return self.streak

    def succeeded(self, now: float, clear: bool) -> None:
        """Record an accepted write (`clear`: it included the head, so the streak ends)."""
        self.ok_at = now
        if clear:
            self.seq, self.streak = -1, 0

    def proven(self) -> bool:
        """Whether the sink accepted another entry after the head was first refused."""
        return self.ok_at > self.first_failed
