"""The bounded queue between the transports' threads and the ingest thread: backpressure, counted drops, stall age."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from devices.reading import Reading
from gateway.metrics import Metrics

__all__ = ["Ack", "Batch", "IngestQueue"]

log = logging.getLogger("citygw.pipeline")

Ack = Callable[[], None]
Batch = list[tuple[list[Reading], Ack | None]]


class IngestQueue:
    """At most `max_items` emits; `put` blocks producers (backpressure), `take` hands the ingest thread a batch."""

    def __init__(self, metrics: Metrics, stop: threading.Event, max_items: int = 10_000, batch_max: int = 10_000,
                 put_timeout_s: float = 10.0, commit_interval_s: float = 0.0) -> None:
        self.metrics = metrics
        self.max_items = max_items
        self.batch_max = batch_max
        self.put_timeout_s = put_timeout_s
        self.commit_interval_s = commit_interval_s
        self._stop = stop
        self._items: deque[tuple[list[Reading], Ack | None]] = deque()
        self._readings = 0  # readings in _items
        self._cond = threading.Condition()
        self._pending_since = self._committed_at = time.monotonic()
        self._taken_at = 0.0
        self._processing = False

    def put(self, readings: list[Reading], ack: Ack | None = None) -> None:
        """Queue readings; blocks (backpressure) while the queue is full.

        Readings with an `ack` (a broker keeps them until acknowledged) wait as long as it takes: dropping them
        would only hold the broker's in-flight slots until the next reconnect (Mosquitto sends nothing more
        once they are full: a silent stall). Readings without one (serial, QoS 0) are dropped and counted
        after `put_timeout_s`: the device cannot resend them, and a port must go on being read.
        """
        with self._cond:
            deadline = time.monotonic() + self.put_timeout_s
            while len(self._items) >= self.max_items and not self._stop.is_set():
                if self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                if ack is None:
                    self.metrics.queue_dropped.inc(len(readings))
                    log.warning("ingest queue full for %.0f s: dropped %d readings (journal too slow?)",
                                self.put_timeout_s, len(readings))
                    return
                log.warning("ingest queue full for %.0f s: holding %d readings unacknowledged (the broker keeps "
                            "them; journal too slow?)", self.put_timeout_s, len(readings))
                deadline = time.monotonic() + self.put_timeout_s
            if not self._items:
                self._pending_since = time.monotonic()
            self._items.append((readings, ack))
            self._readings += len(readings)
            # The taker waits for a first item, or for a full batch (take): waking it for anything else
            # would only cost a thread switch per put.
            if len(self._items) == 1 or self._readings >= self.batch_max:
                self._cond.notify_all()

    def take(self) -> Batch:
        """Up to `batch_max` readings' worth of emits, waiting up to 0.2 s for the first; marks them in process.

        Group commit: a batch is taken at most once per `commit_interval_s` (sooner when `batch_max` readings
        wait). Each commit costs an fsync, ~0.3 ms of CPU here whatever its size; readings arriving steadily
        share it instead of committing a few at a time. A reading after a quiet spell is taken at once.
        """
        with self._cond:
            if not self._items and not self._stop.is_set():
                self._cond.wait(timeout=0.2)
            if self._items and self.commit_interval_s:
                due = self._taken_at + self.commit_interval_s
                while self._readings < self.batch_max and not self._stop.is_set():
                    wait = due - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(timeout=wait)
            batch: Batch = []
            n = 0
            while self._items and n < self.batch_max:
                item = self._items.popleft()
                batch.append(item)
                n += len(item[0])
            self._readings -= n
            self.metrics.queue_depth.set(len(self._items))
            if batch:
                self._taken_at = time.monotonic()
                self._processing = True
                self._cond.notify_all()
            return batch

    def done(self, committed: bool) -> None:
        """The batch from `take` is processed (`committed`: its journal commit succeeded)."""
        self._processing = False
        if committed:
            self._committed_at = time.monotonic()

    def wake(self) -> None:
        """Wake every waiter (stopping)."""
        with self._cond:
            self._cond.notify_all()

    def stalled_s(self) -> float:
        """How long input has been waiting with no batch committed since (0 while the queue is empty)."""
        if not self._items and not self._processing:
            return 0.0
        return time.monotonic() - max(self._pending_since, self._committed_at)
