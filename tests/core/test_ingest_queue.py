"""IngestQueue's group commit: a batch at most once per commit interval, at once after a quiet spell or when full."""

from __future__ import annotations

import threading
import time

from devices.reading import Reading
from gateway.ingest_queue import IngestQueue
from gateway.metrics import Metrics

T0 = 1_767_225_600 * 10**9


def _readings(n: int, start: int = 0) -> list[Reading]:
    return [Reading("d", "pm2_5", 1.0, "ug/m3", T0 + (start + i) * 10**9) for i in range(n)]


def _timed_take(queue: IngestQueue) -> tuple[int, float]:
    t0 = time.monotonic()
    batch = queue.take()
    return sum(len(readings) for readings, _ in batch), time.monotonic() - t0


def test_a_batch_right_after_a_commit_waits_for_the_interval_to_gather_more() -> None:
    queue = IngestQueue(Metrics(), threading.Event(), batch_max=100, commit_interval_s=0.5)
    queue.put(_readings(1))
    taken, waited = _timed_take(queue)
    assert taken == 1 and waited < 0.4  # the first after a quiet spell goes at once
    queue.put(_readings(1, 1))
    later = threading.Timer(0.2, queue.put, args=(_readings(2, 2),))
    later.start()
    taken, waited = _timed_take(queue)
    later.join()
    assert taken == 3  # what arrived meanwhile shares the commit
    assert waited >= 0.3  # held until the interval since the last take passed


def test_a_full_batch_is_taken_without_waiting_for_the_interval() -> None:
    queue = IngestQueue(Metrics(), threading.Event(), batch_max=10, commit_interval_s=30.0)
    queue.put(_readings(1))
    assert _timed_take(queue)[0] == 1
    queue.put(_readings(4))
    filler = threading.Timer(0.1, queue.put, args=(_readings(6, 4),))  # reaches batch_max: wakes the taker
    filler.start()
    taken, waited = _timed_take(queue)
    filler.join()
    assert taken == 10 and waited < 10.0


def test_stopping_ends_the_wait() -> None:
    stop = threading.Event()
    queue = IngestQueue(Metrics(), stop, batch_max=10, commit_interval_s=30.0)
    queue.put(_readings(1))
    queue.take()
    queue.put(_readings(1, 1))

    def _stop() -> None:
        stop.set()
        queue.wake()

    stopper = threading.Timer(0.1, _stop)
    stopper.start()
    taken, waited = _timed_take(queue)
    stopper.join()
    assert taken == 1 and waited < 10.0  # handed over, not lost, when stopping


def test_without_an_interval_every_take_is_immediate() -> None:
    queue = IngestQueue(Metrics(), threading.Event(), batch_max=10)
    for i in range(3):
        queue.put(_readings(1, i))
        taken, waited = _timed_take(queue)
        assert taken == 1 and waited < 5.0
