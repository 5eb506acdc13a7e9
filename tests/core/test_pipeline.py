"""Pipeline: ack only after the journal commit, rejections with reasons, bounded queue, crash rebuild."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest

from aggregators.kpi import KpiPoint
from aggregators.windows import WindowEngine, WindowSpec
from devices.reading import Reading
from gateway import pipeline as pipeline_module
from gateway.journal import KIND_KPI, KIND_READING, Journal
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline

S = 10**9
T0 = 1_767_225_600 * S


class FakeClock:
    """An injectable clock (simulated time)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _pipeline(path: Path, clock: FakeClock, **kw: object) -> Pipeline:
    engine = WindowEngine([WindowSpec.parse("1m"), WindowSpec.parse("10s")], grace_ns=2 * S)
    return Pipeline(Journal(path), engine, Metrics(), clock_ns=clock, **kw)  # type: ignore[arg-type]


def test_ack_is_called_only_after_the_commit(tmp_path: Path) -> None:
    clock = FakeClock(T0 + 3600 * S)
    p = _pipeline(tmp_path / "j.sqlite", clock)
    observer = Journal(tmp_path / "j.sqlite")  # another connection sees only committed data
    seen_at_ack: list[int] = []
    batch = [Reading("d", "pm2_5", float(i), "ug/m3", T0 + i * S) for i in range(5)]
    p.process([(batch, lambda: seen_at_ack.append(observer.count(KIND_READING)))])
    assert seen_at_ack == [5]


def test_rejections_are_counted_with_reasons(tmp_path: Path) -> None:
    clock = FakeClock(T0 + 3600 * S)
    p = _pipeline(tmp_path / "j.sqlite", clock)
    acked = []
    bad = [
        Reading("d", "pm2_5", float("nan"), "ug/m3", T0),
        Reading("d", "pm2_5", 5.0, "mg/m3", T0),
        Reading("d", "pm2_5", -3.0, "ug/m3", T0),
        Reading("d", "pm2_5", 5.0, "ug/m3", 0),
        Reading("d", "pm2_5", 5.0, "ug/m3", T0 + 7200 * S),
        Reading("d", "made_up", 5.0, "x", T0),
        Reading("d", "pm2_5", 5.0, "ug/m3", T0 + S),
        Reading("d", "pm2_5", 5.0, "ug/m3", T0 + S),  # duplicate
    ]
    p.process([(bad, lambda: acked.append(True))])
    assert acked == [True]  # handled (the bad ones rejected), so the source may let go
    assert p.journal.count(KIND_READING) == 1
    samples = {s.labels["reason"]: s.value for m in p.metrics.rejected.collect() for s in m.samples
               if s.name.endswith("_total")}
    assert samples == {
        "not a finite number": 1,
        "unit not accepted": 1,
        "out of plausible range": 1,
        "timestamp before N": 1,
        "timestamp in the future": 1,
        "unknown quantity": 1,
        "duplicate": 1,
    }


def test_bounded_queue_drops_and_counts_after_timeout(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    p = _pipeline(tmp_path / "j.sqlite", clock, queue_max=2, put_timeout_s=0.05)  # not started: nobody drains
    for i in range(3):
        p.readings([Reading("d", "pm2_5", 1.0, "ug/m3", T0 + i * S)])
    assert p.metrics.queue_dropped._value.get() == 1


def test_a_full_queue_holds_acknowledgeable_readings_instead_of_dropping_them(tmp_path: Path) -> None:
    """A broker keeps what is not acknowledged: dropping it would hold its in-flight slots until a reconnect."""
    clock = FakeClock(T0)
    p = _pipeline(tmp_path / "j.sqlite", clock, queue_max=1, put_timeout_s=0.05)
    acked: list[int] = []
    p.readings([Reading("d", "pm2_5", 1.0, "ug/m3", T0)], lambda: acked.append(0))
    waiting = threading.Thread(target=p.readings, args=([Reading("d", "pm2_5", 2.0, "ug/m3", T0 + S)],
                                                        lambda: acked.append(1)))
    waiting.start()
    waiting.join(timeout=0.5)  # ten put timeouts
    assert waiting.is_alive()  # still held, not dropped
    p.process(p.queue.take())  # the journal catches up: the held batch is queued
    waiting.join(timeout=5)
    assert not waiting.is_alive()
    p.process(p.queue.take())
    assert acked == [0, 1]
    assert p.metrics.queue_dropped._value.get() == 0
    assert len(p.journal.readings_since(0)) == 2


def _feed(p: Pipeline, clock: FakeClock, readings: list[Reading]) -> list[KpiPoint]:
    out: list[KpiPoint] = []
    p.on_kpis = out.extend
    for r in readings:
        clock.now = r.ts
        p.process([([r], None)])
        p.tick()
    clock.now = readings[-1].ts + 600 * S
    p.tick()
    return out


def test_windows_rebuilt_after_a_crash_equal_an_uninterrupted_run(tmp_path: Path) -> None:
    readings = [Reading("d", "pm2_5", float((i * 7) % 23), "ug/m3", T0 + i * 3 * S) for i in range(200)]
    clock = FakeClock(T0)
    whole = _feed(_pipeline(tmp_path / "a.sqlite", clock), clock, readings)

    for cut in (37, 101, 150):
        clock = FakeClock(T0)
        first = _pipeline(tmp_path / f"b{cut}.sqlite", clock)
        part: list[KpiPoint] = []
        first.on_kpis = part.extend
        for r in readings[:cut]:
            clock.now = r.ts
            first.process([([r], None)])
            first.tick()
        # "crash": the process dies; nothing but the journal survives. Restart and rebuild.
        second = _pipeline(tmp_path / f"b{cut}.sqlite", clock)
        second.rebuild()
        rest = _feed(second, clock, readings[cut:])
        journal_kpis = [e.as_kpi() for e in second.journal.read_after(0, 10**6) if e.kind == KIND_KPI]
        assert part + rest == whole == journal_kpis


def test_concurrent_emitters_lose_nothing(tmp_path: Path) -> None:
    clock = FakeClock(T0 + 3600 * S)
    p = _pipeline(tmp_path / "j.sqlite", clock, queue_max=8)
    p.start()
    acks = []
    lock = threading.Lock()

    def produce(dev: str) -> None:
        for i in range(300):
            def ack() -> None:
                with lock:
                    acks.append(1)
            p.readings([Reading(dev, "pm2_5", float(i), "ug/m3", T0 + i * S)], ack)

    threads = [threading.Thread(target=produce, args=(f"d{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.stop()
    assert p.journal.count(KIND_READING) == 1200
    assert len(acks) == 1200


def test_idle_close_waits_while_an_input_with_a_backlog_is_down(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    p = _pipeline(tmp_path / "j.sqlite", clock, idle_close_s=0.0)
    p.process([([Reading("d", "pm2_5", 1.0, "ug/m3", T0 + S)], None)])
    closed: list[KpiPoint] = []
    p.on_kpis = closed.extend
    p.input_state(False)  # the broker is unreachable: its backlog may still hold this window's readings
    clock.now = T0 + 600 * S
    p.tick()
    assert closed == []
    p.input_state(True)  # connected, and the (zero) hold after connecting has passed
    p.tick()
    assert [k.window for k in closed] == ["10s", "1m"]


def test_same_instant_different_tags_are_not_duplicates(tmp_path: Path) -> None:
    clock = FakeClock(T0 + 3600 * S)
    p = _pipeline(tmp_path / "j.sqlite", clock)
    phases = [Reading("meter", "voltage", 230.0 + i, "V", T0, {"phase": f"L{i}"}) for i in (1, 2, 3)]
    p.process([([*phases, Reading("meter", "voltage", 231.0, "V", T0, {"phase": "L1"})], None)])
    assert p.journal.count(KIND_READING) == 3  # the three phases kept, the repeated L1 rejected


def test_many_devices_going_quiet_close_in_lots_each_committed_with_its_horizons(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of 7 devices closing at once go out in lots of 3 devices: the same KPI points as in one lot, each
    lot one transaction holding its points and the horizons of its devices (a crash between lots leaves the later
    lots' windows open, to be rebuilt by the replay)."""
    readings = [Reading(f"d{k}", "pm2_5", float(k + i), "ug/m3", T0 + i * 5 * S) for i in range(6) for k in range(7)]

    def run(path: Path) -> tuple[list[KpiPoint], list[dict[str, list[int]]]]:
        clock = FakeClock(T0 + 30 * S)
        p = _pipeline(path, clock)
        p.process([(readings, None)])
        lots: list[dict[str, list[int]]] = []
        append = p.journal.append

        def spy(readings: list[Reading], kpis: list[KpiPoint], meta: dict[str, str] | None = None) -> int:
            if kpis and meta:
                lots.append(orjson.loads(meta["sources"]))
            return append(readings, kpis, meta)
        monkeypatch.setattr(p.journal, "append", spy)
        clock.now = T0 + 3600 * S  # every device quiet for an hour: every window closes
        p.tick()
        return [e.as_kpi() for e in p.journal.read_after(0, 10**6) if e.kind == KIND_KPI], lots

    whole, one_lot = run(tmp_path / "one.sqlite")
    monkeypatch.setattr(pipeline_module, "CLOSE_LOT_DEVICES", 3)
    in_lots, lots = run(tmp_path / "lots.sqlite")
    assert len(one_lot) == 1 and len(lots) == 3
    assert sorted(whole, key=repr) == sorted(in_lots, key=repr) and len(whole) == 7 * 4  # 1m + three 10s windows
    # After the first lot, only its three devices have moved their horizons past their windows.
    first_devices = {d for d, (horizon, _, _) in lots[0].items() if horizon >= T0 + 60 * S}
    assert first_devices == {"d0", "d1", "d2"}
    assert {d for d, (horizon, _, _) in lots[-1].items() if horizon >= T0 + 60 * S} == {f"d{k}" for k in range(7)}
