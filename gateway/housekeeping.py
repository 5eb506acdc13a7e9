"""The journal's housekeeping: the `citygw-housekeeping` thread, on a journal connection of its own.

Four times a second it keeps the WAL under half its budget and the journal under its cap (a stat and three
pragmas while under both: a burst can grow the WAL by megabytes in a second); every second a PASSIVE
checkpoint; every 5 s it trims what every sink delivered; every 30 s it hands the heap's free pages back to the
system (gateway/memory.py: what a burst freed stays mapped otherwise). Its own connection and thread, so checkpoints,
trimming and the cap never stall the ingest thread's commits for longer than one small transaction. A full
disk fails a round (counted, logged once, a health reason); the next round tries again.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from aggregators.windows import WindowEngine
from gateway.journal import Journal, WriteFailure
from gateway.memory import release_free_memory
from gateway.metrics import Metrics

__all__ = ["Housekeeper"]

RELEASE_EVERY_S = 30.0  # malloc_trim walks the heap: 12-20 ms for 250 MB (docs/performance.md)


class Housekeeper:
    """Trims, checkpoints and caps one journal; `run` is the housekeeping thread's body."""

    def __init__(self, journal: Journal, engine: WindowEngine, metrics: Metrics,
                 sink_names: tuple[str, ...]) -> None:
        self.journal = journal  # the ingest thread's: its path and settings (the thread opens its own)
        self.engine = engine
        self.metrics = metrics
        self.sink_names = sink_names
        self.failure = WriteFailure(
            "journal housekeeping on", journal.path, "Checkpoints, trimming and the cap wait.",
            lambda reason: metrics.journal_write_errors.labels("housekeeping", reason).inc())
        self.cap_dropped_at: float | None = None  # monotonic time the disk cap last dropped entries
        # Event time from which raw readings rebuild the open windows of the *committed* state (set by the
        # ingest thread after each commit of horizons). Not engine.open_since(): between closing windows in
        # memory and committing their KPI points, that is ahead of the journal, and a crash in between
        # replays from the committed horizons; readings trimmed meanwhile would be missing from the rebuilt
        # windows, which would then close short, silently.
        self.committed_open_since = 0

    def run(self, stop: threading.Event) -> None:
        """Housekeep on a connection of its own until `stop` is set."""
        journal = Journal(self.journal.path, self.journal.synchronous, self.journal.max_bytes)
        try:
            last_checkpoint = last_trim = 0.0
            last_release = time.monotonic()
            while not stop.wait(0.25):
                try:
                    now = time.monotonic()
                    if now - last_release >= RELEASE_EVERY_S:
                        last_release = now
                        release_free_memory()
                    if now - last_checkpoint >= 1.0:
                        last_checkpoint = now
                        journal.checkpoint()
                    else:
                        journal.limit_wal()
                    due = now - last_trim >= 5.0
                    if due:
                        last_trim = now
                    self.once(journal, trim=due)
                except sqlite3.OperationalError as exc:  # a full disk: the next round tries again
                    self.failure.failed(exc)
                else:
                    self.failure.succeeded()
        finally:
            journal.close()

    def once(self, journal: Journal, trim: bool = True) -> None:
        """One round: trim what every sink delivered; enforce the disk cap, WAL included (counting the cost)."""
        if trim:
            longest = max((s.size_ns for s in self.engine.specs), default=0)
            journal.trim(self.sink_names, self.committed_open_since - longest)
        lost = journal.enforce_cap(self.sink_names)
        if lost:
            self.metrics.journal_dropped.inc(lost)
            self.cap_dropped_at = time.monotonic()
        self.metrics.journal_bytes.set(journal.size_bytes())
