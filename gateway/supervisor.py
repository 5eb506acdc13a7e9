"""Supervision of the gateway's owning threads, in one place: a crash is logged, counted, backed off, restarted.

Every thread that owns a resource (the ingest thread, housekeeping, each sink's `Delivery`, each serial
port, each Modbus bus, the bulk MQTT input) is started through `Supervisor.start` (the `ThreadStarter` of
`ingest/base.py`). Its body is the thread's whole loop; it returns only once its stop event is set. When
it raises instead (a decoder bug, a full disk in a path that does not retry), the supervisor logs the
traceback once per run of failures, counts `citygw_thread_restarts_total{thread=…}`, waits (exponential
backoff, 1 s to 30 s) and runs the body again. A thread that crashed `failing_after` times in a row without
then running `healthy_after_s` makes the gateway unhealthy (`problems()`, used by gateway/health.py), as does
one that ended while its stop event is not set. The threads are not daemons: stop() paths join them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from ingest.backoff import Backoff

__all__ = ["Supervisor"]

log = logging.getLogger("citygw.supervisor")


@dataclass(slots=True)
class _Owned:
    """One supervised thread's record."""

    name: str
    stop: threading.Event
    thread: threading.Thread | None = None
    streak: int = 0  # crashes in a row (reset once a run lasts healthy_after_s)
    crashes: int = 0
    restarted_at: float = 0.0
    last_error: str = ""
    ended: bool = False  # the body returned after its stop event was set


class Supervisor:
    """Starts owning threads and restarts any that crash; `problems()` says which keep failing."""

    def __init__(self, registry: CollectorRegistry | None = None, backoff_initial_s: float = 1.0,
                 backoff_max_s: float = 30.0, failing_after: int = 3, healthy_after_s: float = 60.0) -> None:
        self.restarts = Counter("citygw_thread_restarts", "Owning threads restarted after a crash", ["thread"],
                                registry=registry)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.failing_after = failing_after
        self.healthy_after_s = healthy_after_s
        self._owned: dict[str, _Owned] = {}
        self._lock = threading.Lock()

    def start(self, name: str, body: Callable[[], None], stop: threading.Event) -> threading.Thread:
        """Start `body` on a non-daemon thread called `name`, restarted after a crash until `stop` is set."""
        owned = _Owned(name, stop)
        thread = threading.Thread(target=self._supervise, args=(owned, body), name=name, daemon=False)
        owned.thread = thread
        with self._lock:
            self._owned[name] = owned
        self.restarts.labels(name)  # the series exists (0) from the start, so an alert can watch it
        thread.start()
        return thread

    def _supervise(self, owned: _Owned, body: Callable[[], None]) -> None:
        backoff = Backoff(self.backoff_initial_s, 2.0, self.backoff_max_s)
        while True:
            began = time.monotonic()
            try:
                body()
                if owned.stop.is_set():
                    owned.ended = True
                    return
                raise RuntimeError("the thread's loop returned although it was not asked to stop")
            except Exception as exc:
                if time.monotonic() - began >= self.healthy_after_s:
                    owned.streak = 0
                    backoff.reset()
                owned.streak += 1
                owned.crashes += 1
                owned.last_error = f"{type(exc).__name__}: {exc}"
                self.restarts.labels(owned.name).inc()
                if owned.streak == 1:
                    log.exception("thread %s crashed; restarting it in %.0f s. This is a bug: please report it "
                                  "with this traceback", owned.name, backoff.step)
                elif owned.streak == self.failing_after:
                    log.error("thread %s keeps crashing (%d times in a row, last: %s); still restarting it, "
                              "with backoff up to %.0f s, and /healthz reports it", owned.name, owned.streak,
                              owned.last_error, self.backoff_max_s)
            if backoff.wait(owned.stop):
                owned.ended = True
                return
            owned.restarted_at = time.monotonic()

    def problems(self) -> list[str]:
        """One sentence per thread that keeps crashing or is not running."""
        out = []
        now = time.monotonic()
        with self._lock:
            owned = list(self._owned.values())
        for o in owned:
            if o.stop.is_set():
                continue
            if o.thread is not None and not o.thread.is_alive() and not o.ended:
                out.append(f"thread {o.name}: not running (last error: {o.last_error or 'none'})")
            elif o.streak >= self.failing_after and now - o.restarted_at < self.healthy_after_s:
                out.append(f"thread {o.name}: crashed {o.streak} times in a row (last: {o.last_error}); "
                           "restarting with backoff; the traceback is in the log")
        return out

    def crashes(self, name: str) -> int:
        """How many times the thread called `name` crashed."""
        with self._lock:
            owned = self._owned.get(name)
        return owned.crashes if owned else 0
