"""Window engine: tumbling windows, watermark + grace, late data, coverage, dB and counter statistics."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from aggregators.stats import energetic_mean
from aggregators.windows import WindowEngine, WindowSpec, parse_duration_ns
from devices.reading import Reading

S = 10**9
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z, a multiple of every window size used here


def r(t_s: float, value: float, quantity: str = "pm2_5", unit: str = "ug/m3") -> Reading:
    return Reading("dev", quantity, value, unit, T0 + int(t_s * S))


def test_parse_duration() -> None:
    assert parse_duration_ns("250ms") == 250_000_000
    assert parse_duration_ns("15m") == 900 * S
    assert parse_duration_ns("1d") == 86400 * S
    with pytest.raises(ValueError, match=r"e\.g\. 250ms"):
        parse_duration_ns("soon")


def test_window_closes_only_after_grace() -> None:
    e = WindowEngine([WindowSpec.parse("1m")], grace_ns=5 * S)
    for i in range(60):
        e.add(r(i, float(i)))
    assert e.advance(T0 + 64 * S) == []  # end (60 s) + grace (5 s) not yet passed
    (p,) = e.advance(T0 + 65 * S)
    assert (p.start_ns, p.end_ns, p.window) == (T0, T0 + 60 * S, "1m")
    assert p.value == pytest.approx(29.5)
    assert (p.fields["count"], p.fields["min"], p.fields["max"], p.fields["coverage"]) == (60, 0.0, 59.0, 1.0)
    assert p.valid


def test_late_reading_is_counted_not_folded() -> None:
    e = WindowEngine([WindowSpec.parse("1m")], grace_ns=0)
    e.add(r(1, 1.0))
    assert len(e.advance(T0 + 60 * S)) == 1
    assert e.add(r(2, 100.0)) is False
    assert e.late == 1
    assert e.advance(T0 + 120 * S) == []  # the late value never re-opens or corrupts the closed window


def test_incomplete_window_is_emitted_and_flagged() -> None:
    e = WindowEngine([WindowSpec.parse("1h", min_coverage=0.75)], grace_ns=0)
    for minute in range(30):  # half an hour of data
        e.add(r(minute * 60, 10.0))
    (p,) = e.advance(T0 + 3600 * S)
    assert p.fields["coverage"] == pytest.approx(0.5)
    assert p.valid is False


def test_decibels_use_the_energetic_mean() -> None:
    e = WindowEngine([WindowSpec.parse("1m")], grace_ns=0)
    e.add(r(0, 60.0, "noise_laeq", "dBA"))
    e.add(r(30, 70.0, "noise_laeq", "dBA"))
    (p,) = e.advance(T0 + 60 * S)
    assert p.value == pytest.approx(67.4, abs=0.01)  # kpis.md §5: LAeq of 60 and 70 dB is 67.40, not 65


def test_energetic_mean_does_not_overflow() -> None:
    assert energetic_mean(np.array([3000.0, 3000.0])) == pytest.approx(3000.0)
    assert math.isfinite(energetic_mean(np.array([0.0, 200.0])))


def test_counter_consumption_includes_the_step_across_window_edges() -> None:
    e = WindowEngine([WindowSpec.parse("1m")], grace_ns=0)
    for i, kwh in enumerate([100.0, 100.5, 101.0]):
        e.add(r(i * 20, kwh, "energy_import", "kWh"))
    (first,) = e.advance(T0 + 60 * S)
    assert first.value == pytest.approx(1.0)
    e.add(r(70, 101.75, "energy_import", "kWh"))
    (second,) = e.advance(T0 + 120 * S)
    assert second.value == pytest.approx(0.75)  # 101.0 → 101.75 across the edge is not lost


def test_counter_reset_counts_new_value_as_consumption() -> None:
    e = WindowEngine([WindowSpec.parse("1m")], grace_ns=0)
    e.add(r(0, 4.0, "energy_import", "kWh"))
    e.advance(T0 + 60 * S)
    for i, kwh in enumerate([5.0, 7.0, 1.0, 2.0]):  # the meter was replaced after 7.0
        e.add(r(60 + i * 10, kwh, "energy_import", "kWh"))
    (p,) = e.advance(T0 + 120 * S)
    assert p.fields["resets"] == 1 and e.counter_resets == 1
    assert p.value == pytest.approx(1 + 2 + 1 + 1)


def test_calendar_day_follows_local_time_across_dst() -> None:
    e = WindowEngine([WindowSpec.parse("1d")], grace_ns=0, timezone="Europe/Madrid")
    # 2026-03-29 is the spring-forward day in the EU: 23 hours long.
    ts = 1_774_742_400 * S  # 2026-03-29T00:00:00Z = 01:00 local
    start, end = e.window_of(e.specs[0], ts)
    assert (end - start) == 23 * 3600 * S
    assert start == 1_774_738_800 * S  # 2026-03-28T23:00:00Z = local midnight


def test_one_batch_across_local_midnights_and_dst_fills_the_same_days_as_one_reading_at_a_time() -> None:
    # add_many keeps the local day of the reading before; a batch spanning the 23-hour spring-forward day and
    # the midnights around it, in and out of order, must land every reading in its own local day.
    specs = [WindowSpec.parse(w) for w in ("1h", "1d")]
    batch_engine = WindowEngine(specs, grace_ns=0, timezone="Europe/Madrid")
    single_engine = WindowEngine(specs, grace_ns=0, timezone="Europe/Madrid")
    midnight = 1_774_738_800  # 2026-03-29 00:00 local (23:00Z the day before)
    offsets = [-7200, -1, 0, 3600, 23 * 3600 - 1, 23 * 3600, 23 * 3600 + 60, -3600, 2 * 86400, 5]
    readings = [Reading("dev-1", "pm2_5", float(i), "ug/m3", (midnight + o) * S) for i, o in enumerate(offsets)]
    batch_engine.add_many(readings)
    for reading in readings:
        single_engine.add(reading)
    end = (midnight + 4 * 86400) * S
    days = [(p.start_ns // S, p.end_ns // S, p.fields["count"]) for p in batch_engine.advance(end) if p.window == "1d"]
    assert days == [(p.start_ns // S, p.end_ns // S, p.fields["count"])
                    for p in single_engine.advance(end) if p.window == "1d"]
    assert days == [(midnight - 86400, midnight, 3), (midnight, midnight + 23 * 3600, 4),
                    (midnight + 23 * 3600, midnight + 47 * 3600, 2), (midnight + 47 * 3600, midnight + 71 * 3600, 1)]


def test_closed_until_advances_without_data() -> None:
    e = WindowEngine([WindowSpec.parse("1m")], grace_ns=0)
    e.advance(T0 + 125 * S)
    assert e.closed_until["1m"] == T0 + 120 * S
    assert e.add(r(119, 1.0)) is False
    assert e.add(r(121, 1.0)) is True


def test_the_open_window_table_shrinks_once_its_windows_closed() -> None:
    """A dict keeps its table when keys go: 20,000 closed windows must not leave ~1 MB of empty slots behind."""
    e = WindowEngine([WindowSpec.parse("1m")], grace_ns=0)
    empty = sys.getsizeof(e._open)
    readings = [Reading(f"dev-{i}", "pm2_5", 1.0, "ug/m3", T0) for i in range(20_000)]
    e.add_many(readings)
    full = sys.getsizeof(e._open)
    assert full > 500_000
    points = e.advance(T0 + 60 * S)
    assert len(points) == 20_000
    assert sys.getsizeof(e._open) == empty
    e.add_many([Reading(f"dev-{i}", "pm2_5", 2.0, "ug/m3", T0 + 60 * S) for i in range(10)])  # still takes windows
    assert [p.value for p in e.advance(T0 + 120 * S)] == [2.0] * 10
