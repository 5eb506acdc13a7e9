"""Event time per device (issue 10, items 5-7): a watermark per source, late counts per window length, clock offsets.

Through the real Pipeline and Journal with a simulated clock; the same behaviour through a running gateway,
real Mosquitto and the status page is in tests/reliability/test_event_time_gateway.py.
"""

from __future__ import annotations

import logging
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from aggregators.kpi import KpiPoint
from aggregators.windows import WindowEngine, WindowSpec
from devices.reading import DecodeContext, Reading
from devices.registry import get_kind
from gateway.clock import ClockOffsets, likely_cause
from gateway.journal import KIND_KPI, Journal
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from simulators.mqtt_publishers import make_payload
from tests.reliability.support import metric

S = 10**9
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z
LAG = 600 * S  # a LoRaWAN device behind its network server: 10 minutes
REPO = Path(__file__).resolve().parents[2]


class Clock:
    """Simulated wall clock."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _pipeline(path: Path, clock: Clock, windows: tuple[str, ...] = ("1m",), grace_s: int = 10) -> Pipeline:
    engine = WindowEngine([WindowSpec.parse(w) for w in windows], grace_ns=grace_s * S)
    return Pipeline(Journal(path), engine, Metrics(), clock_ns=clock)


def _live_and_lagging(p: Pipeline, clock: Clock, start: int, seconds: int) -> list[KpiPoint]:
    """One reading a second from a device on time and one whose event times lag LAG; tick every second."""
    out: list[KpiPoint] = []
    p.on_kpis = out.extend
    for i in range(seconds):
        clock.now = start + i * S
        p.process([([Reading("live-1", "pm2_5", 10.0, "ug/m3", clock.now)], None),
                   ([Reading("lora-1", "pm2_5", 20.0, "ug/m3", clock.now - LAG)], None)])
        p.tick()
    return out


def _count(points: list[KpiPoint], device: str) -> int:
    return sum(int(p.fields["count"]) for p in points if p.device_id == device and p.name == "pm2_5")


def test_a_lagging_device_gets_its_windows(tmp_path: Path) -> None:
    """Item 5: with a global watermark the lagging device got 1 of 300 readings into its 1-minute KPIs."""
    clock = Clock(T0)
    p = _pipeline(tmp_path / "j.sqlite", clock)
    points = _live_and_lagging(p, clock, T0, 300)
    clock.now = T0 + 300 * S + 10 * S  # both idle (quiet > 5 s and > 3 pauses of 1 s): wall time closes the rest
    p.tick()
    points += [e.as_kpi() for e in p.journal.read_after(0, 10_000, KIND_KPI) if e.as_kpi() not in points]
    assert _count(points, "lora-1") == 300 and _count(points, "live-1") == 300
    assert p.engine.late == 0 and p.engine.late_by_window == {"1m": 0}
    lora = sorted(pt.start_ns for pt in points if pt.device_id == "lora-1")
    assert lora == [T0 - LAG + m * 60 * S for m in range(5)]


def test_an_idle_device_closes_by_the_wall_clock(tmp_path: Path) -> None:
    """Idle = quiet for the idle time (5 s) and for three of the device's usual pauses between batches."""
    clock = Clock(T0)
    p = _pipeline(tmp_path / "j.sqlite", clock)
    closed = _live_and_lagging(p, clock, T0, 90)  # both stop at T0 + 89 s, after a batch a second
    last_lora = T0 - LAG + 60 * S  # lora-1's last window [T0 - 9 min, T0 - 8 min) is open
    assert not any(pt.device_id == "lora-1" and pt.start_ns == last_lora for pt in closed)
    clock.now = T0 + 93 * S  # quiet for 4 s: not idle yet
    p.tick()
    assert not any(pt.device_id == "lora-1" and pt.start_ns == last_lora for pt in closed)
    clock.now = T0 + 95 * S  # quiet for 6 s: idle, the wall clock drives both
    p.tick()
    assert any(pt.device_id == "lora-1" and pt.start_ns == last_lora for pt in closed)
    assert not any(pt.device_id == "live-1" and pt.start_ns == T0 + 60 * S for pt in closed)  # ends + grace later
    clock.now = T0 + 130 * S
    p.tick()
    assert any(pt.device_id == "live-1" and pt.start_ns == T0 + 60 * S for pt in closed)


def test_a_device_reporting_every_few_minutes_is_not_idle_between_reports(tmp_path: Path) -> None:
    clock = Clock(T0)
    p = _pipeline(tmp_path / "j.sqlite", clock)
    out: list[KpiPoint] = []
    p.on_kpis = out.extend
    for report in range(12):  # a LoRaWAN device: one uplink every 5 minutes, 10 minutes behind
        for second in range(0, 300, 5):
            clock.now = T0 + report * 300 * S + second * S
            if second == 0:
                p.process([([Reading("lora-1", "pm2_5", 1.0, "ug/m3", clock.now - LAG)], None)])
            p.tick()
    # Its first pause is judged by the idle time alone (a new device has no usual pause yet, and its first
    # uplink was old): the wall clock moved its horizon to the present, so the uplinks of its first 10 minutes
    # of delay came late. From then on it waits three of its pauses (15 minutes), and no uplink is late.
    assert p.engine.late_by_window == {"1m": 2}
    assert sorted(k.start_ns for k in out) == [T0 - LAG + r * 300 * S for r in range(11) if r not in (1, 2)]


def test_a_batch_uploader_loses_nothing(tmp_path: Path) -> None:
    """A logger uploads 15 minutes of readings at once every 15 minutes: all of them reach its windows."""
    clock = Clock(T0)
    p = _pipeline(tmp_path / "j.sqlite", clock, windows=("1m", "15m"))
    out: list[KpiPoint] = []
    p.on_kpis = out.extend
    for upload in range(1, 5):
        for second in range(0, 900, 5):  # the live device, ticking every 5 s between uploads
            clock.now = T0 + (upload - 1) * 900 * S + second * S
            p.process([([Reading("live-1", "pm2_5", 1.0, "ug/m3", clock.now)], None)])
            p.tick()
        clock.now = T0 + upload * 900 * S + 3 * S
        batch = [Reading("logger-1", "pm2_5", 2.0, "ug/m3", T0 + ((upload - 1) * 900 + s) * S) for s in range(900)]
        p.process([(batch, None)])
        p.tick()
    clock.now += 3 * 900 * S + 10 * S  # quiet for three of its pauses between uploads: idle, all close
    p.tick()
    assert p.engine.late == 0 and p.engine.late_by_window == {"1m": 0, "15m": 0}
    assert sum(int(k.fields["count"]) for k in out if k.device_id == "logger-1" and k.window == "15m") == 3600
    assert sum(int(k.fields["count"]) for k in out if k.device_id == "logger-1" and k.window == "1m") == 3600


def test_a_device_ahead_closes_only_its_own_windows(tmp_path: Path) -> None:
    clock = Clock(T0)
    p = _pipeline(tmp_path / "j.sqlite", clock)
    out: list[KpiPoint] = []
    p.on_kpis = out.extend
    for i in range(50):
        clock.now = T0 + i * S
        p.process([([Reading("ahead-1", "pm2_5", 1.0, "ug/m3", clock.now + 240 * S)], None),
                   ([Reading("live-1", "pm2_5", 1.0, "ug/m3", clock.now)], None)])
        p.tick()
    assert [k.device_id for k in out] == []  # no watermark runs past the wall clock
    clock.now = T0 + 71 * S
    p.process([([Reading("live-1", "pm2_5", 1.0, "ug/m3", T0 + 70 * S)], None)])
    p.tick()
    assert [(k.device_id, k.fields["count"]) for k in out] == [("live-1", 50)]


def test_crash_replay_is_exact_with_per_device_horizons(tmp_path: Path) -> None:
    whole_clock = Clock(T0)
    whole = _pipeline(tmp_path / "a.sqlite", whole_clock)
    expected = _live_and_lagging(whole, whole_clock, T0, 400)
    for cut in (95, 200, 333):
        clock = Clock(T0)
        first = _pipeline(tmp_path / f"b{cut}.sqlite", clock)
        part = _live_and_lagging(first, clock, T0, cut)
        first.journal.close()  # the crash: nothing but the journal survives
        second = _pipeline(tmp_path / f"b{cut}.sqlite", clock)
        second.rebuild()
        rest = _live_and_lagging(second, clock, T0 + cut * S, 400 - cut)
        assert part + rest == expected
        assert second.engine.late == 0


def test_late_for_one_window_in_time_for_another_is_counted_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Item 6: late for 1m but in time for 1h used to be dropped from the 1m KPI without a count."""
    clock = Clock(T0 + 5 * S)
    p = _pipeline(tmp_path / "j.sqlite", clock, windows=("1m", "1h"), grace_s=2)
    with caplog.at_level(logging.WARNING, logger="citygw.pipeline"):
        p.process([([Reading("d", "pm2_5", 1.0, "ug/m3", T0 + 5 * S)], None)])
        clock.now = T0 + 125 * S
        p.process([([Reading("d", "pm2_5", 1.0, "ug/m3", T0 + 125 * S)], None)])
        p.tick()  # d's minute [T0, T0+60) closes
        p.process([([Reading("d", "pm2_5", 2.0, "ug/m3", T0 + 6 * S)], None),
                   ([Reading("d", "pm2_5", 3.0, "ug/m3", T0 + 7 * S)], None),
                   ([Reading("other", "pm2_5", 3.0, "ug/m3", T0 + 7 * S)], None)])  # other's windows are open
    assert p.engine.late == 0  # in time for the hour: not late for every window
    assert p.engine.late_by_window == {"1m": 2, "1h": 0}
    text = generate_latest(p.metrics.registry).decode()
    assert metric(text, "citygw_late_total", window="1m") == 2
    assert metric(text, "citygw_late_total", window="1h") == 0
    lines = [r.getMessage() for r in caplog.records if "late for the 1m window" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("device d: a reading stamped 2026-01-01T00:00:06")
    report = p.time_report()
    assert report["late_by_window"] == {"1m": 2, "1h": 0}
    assert report["late_by_device"] == [{"device": "d", "window": "1m", "late": 2}]
    clock.now = T0 + 3700 * S  # d and other idle: the wall clock passes the hour + grace
    p.tick()
    hour = [e.as_kpi() for e in p.journal.read_after(0, 100, KIND_KPI) if e.as_kpi().window == "1h"]
    assert [(k.device_id, k.fields["count"]) for k in hour] == [("d", 4), ("other", 1)]


def test_tasmota_simulator_and_sample_agree_on_the_time_zone() -> None:
    """The sample route says Europe/Madrid; the simulated Tasmota sends local time in the route's zone."""
    doc = tomllib.loads((REPO / "config" / "devices" / "tasmota.toml").read_text(encoding="utf-8"))
    (route,) = doc["mqtt"]["routes"]
    zone = route["options"]["timezone"]
    for when in (datetime(2026, 1, 15, 12, 0, 7, tzinfo=UTC), datetime(2026, 7, 15, 12, 0, 7, tzinfo=UTC)):
        ts = int(when.timestamp()) * S
        topic, payload = make_payload("tasmota", 3, ts, "kit-1", zone)
        ctx = DecodeContext(device_id="kit-1", received_ns=ts + 2 * S, topic=topic, tags={},
                            options=route["options"])
        readings = get_kind("tasmota").decode(payload, ctx)
        assert readings and {r.ts for r in readings} == {ts}


@pytest.mark.parametrize(("offset_s", "spread_s", "expected"), [
    (3600.0, 3.0, "time zone mistake (1 h)"),
    (-7200.0, 1.0, "time zone mistake (2 h)"),
    (19800.0, 2.0, "time zone mistake (5.5 h)"),
    (600.0, 40.0, "delivers late"),
    (3600.0, 900.0, "delivers late"),  # an hour on average but all over the place: not a zone
    (-200.0, 1.0, "clock is ahead"),
])
def test_likely_cause(offset_s: float, spread_s: float, expected: str) -> None:
    assert expected in likely_cause(offset_s, spread_s)


def test_clock_offsets_report_once_and_clear(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, float]] = []
    offsets = ClockOffsets(lambda device, offset: seen.append((device, offset)), samples=5)
    with caplog.at_level(logging.INFO, logger="citygw.clock"):
        for _ in range(20):
            offsets.observe("tz-1", 3600 * S + 2 * S)
            offsets.observe("ok-1", S)
        for jitter in (200, -200, 300, 10, 400):  # large but not consistently on one side: not reported
            offsets.observe("jitter-1", jitter * S)
    assert offsets.reported() == [{"device": "tz-1", "offset_s": 3602.0,
                                   "cause": likely_cause(3602.0, 0.0)}]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"device tz-1: its event times sit behind receipt time by 1.00 h (3602 s, last 5 batches); "
                     f"likely cause: {likely_cause(3602.0, 0.0)}"]
    assert seen == [("tz-1", 3602.0)]
    for _ in range(5):
        offsets.observe("tz-1", 3 * S)  # the technician fixed the time zone
    assert offsets.reported() == [] and seen[-1] == ("tz-1", 0.0)


def test_pipeline_reports_a_device_an_hour_behind_and_one_an_hour_ahead(tmp_path: Path) -> None:
    """Item 7: the device an hour ahead is rejected (future) and still reported; the one behind is accepted."""
    clock = Clock(T0)
    p = _pipeline(tmp_path / "j.sqlite", clock)
    for i in range(8):
        clock.now = T0 + i * 10 * S
        p.process([([Reading("behind-1", "pm2_5", 1.0, "ug/m3", clock.now - 3600 * S)], None),
                   ([Reading("ahead-1", "pm2_5", 1.0, "ug/m3", clock.now + 3600 * S)], None),
                   ([Reading("ok-1", "pm2_5", 1.0, "ug/m3", clock.now - S)], None)])
    report = {o["device"]: o for o in p.time_report()["clock_offsets"]}
    assert sorted(report) == ["ahead-1", "behind-1"]
    assert report["behind-1"]["offset_s"] == 3600.0 and "time zone mistake (1 h)" in report["behind-1"]["cause"]
    assert report["ahead-1"]["offset_s"] == -3600.0 and "time zone mistake (1 h)" in report["ahead-1"]["cause"]
    text = generate_latest(p.metrics.registry).decode()
    assert metric(text, "citygw_device_clock_offset_seconds", device="behind-1") == 3600.0
    assert metric(text, "citygw_device_clock_offset_seconds", device="ahead-1") == -3600.0


def _delivering_pipeline(path: Path, clock: Clock) -> Pipeline:
    """1-minute windows, grace 1 s, and a sink named "influx" (so housekeeping trims what it delivered)."""
    engine = WindowEngine([WindowSpec.parse("1m")], grace_ns=1 * S)
    return Pipeline(Journal(path), engine, Metrics(), clock_ns=clock, sink_names=("influx",))


def test_a_trim_between_closing_and_committing_keeps_what_the_restart_replays(tmp_path: Path) -> None:
    """A crash after windows closed in memory but before their KPI points committed rebuilds them whole.

    Housekeeping trims on its own thread; it once trimmed up to the in-memory horizons, ahead of the committed
    ones, so the restart replayed windows missing their first readings and closed them short, nothing counted.
    """
    clock = Clock(T0 + 200 * S)
    path = tmp_path / "j.sqlite"

    first = _delivering_pipeline(path, clock)
    first.rebuild()
    for offset in (0, 30, 62):  # a device's queued uplinks, 3 minutes old, one after the other
        first.process([([Reading(f"lora-{d}", "pm2_5", float(offset), "ug/m3", T0 + offset * S)
                         for d in range(3)], None)])
    first.journal.set_cursor("influx", first.journal.last_seq())  # every sink delivered the raw readings
    assert first.engine.advance_sources(clock.now, 5 * S)  # the tick's first half: closed in memory...
    first.housekeeping()  # ...when housekeeping trims...
    first.journal.close()  # ...and the process dies before the tick commits
    second = _delivering_pipeline(path, clock)
    second.rebuild()
    points: list[KpiPoint] = []
    second.on_kpis = points.extend
    second.tick()
    first_window = [p for p in points if p.start_ns == T0]
    assert len(first_window) == 3
    assert all(p.fields["count"] == 2 for p in first_window), [p.fields for p in first_window]


def test_a_device_first_heard_after_the_last_commit_is_rebuilt_whole(tmp_path: Path) -> None:
    """A device new since the last committed horizons, with readings older than them, gets all of them back.

    The replay once started at the committed horizons minus the longest window, as if every device were among
    them: the first reading of a device heard since (3 minutes old) was not replayed, and its window closed short.
    """
    clock = Clock(T0 + 200 * S)
    path = tmp_path / "j.sqlite"

    first = _delivering_pipeline(path, clock)
    first.rebuild()
    for offset in (0, 30, 62):  # one device's queued uplinks close its first window: horizons committed
        first.process([([Reading("lora-1", "pm2_5", float(offset), "ug/m3", T0 + offset * S)], None)])
    first.tick()
    assert first.journal.get_meta("sources")
    for offset in (0, 30):  # then another device's, as old; nothing closes, nothing more is committed
        first.process([([Reading("lora-2", "pm2_5", float(offset), "ug/m3", T0 + offset * S)], None)])
    first.journal.set_cursor("influx", first.journal.last_seq())
    first.housekeeping()  # the trim must keep them too
    first.journal.close()  # the crash
    second = _delivering_pipeline(path, clock)
    second.rebuild()
    points: list[KpiPoint] = []
    second.on_kpis = points.extend
    second.process([([Reading("lora-2", "pm2_5", 62.0, "ug/m3", T0 + 62 * S)], None)])
    second.tick()
    window = [p for p in points if p.device_id == "lora-2" and p.start_ns == T0]
    assert [p.fields["count"] for p in window] == [2]
