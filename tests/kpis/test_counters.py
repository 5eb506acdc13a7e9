"""CounterDelta: cumulative meter totals → per-interval consumption with resets, wraps, glitches, rebases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregators.counters import CounterDelta, CounterStep

H = 3_600_000_000_000  # one hour in ns
T0 = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z


def test_baseline_then_consumption() -> None:
    c = CounterDelta()
    first = c.update(T0, 100.0)
    assert first.status == "baseline" and first.consumption is None
    step = c.update(T0 + H, 101.5)
    assert step == CounterStep(T0 + H, 101.5, "ok", 1.5, T0, "")
    assert c.last == (T0 + H, 101.5)


def test_reset_counts_new_value_as_consumption() -> None:
    c = CounterDelta()
    c.update(T0, 1200.0)
    step = c.update(T0 + H, 2.0)
    assert (step.status, step.consumption, step.start_ts) == ("reset", 2.0, T0)
    assert "reset" in step.reason
    assert c.resets == 1
    assert c.update(T0 + 2 * H, 3.0).consumption == pytest.approx(1.0)


def test_rollover_with_known_modulus() -> None:
    c = CounterDelta(rollover=1000.0)
    c.update(T0, 990.0)
    step = c.update(T0 + H, 5.0)
    assert (step.status, step.consumption) == ("rollover", pytest.approx(15.0))
    assert c.rollovers == 1 and c.resets == 0


def test_drop_far_from_top_is_a_reset_even_with_modulus() -> None:
    # 400 → 5: a wrap would mean 605 units forward (more than half the range) → a reset, not a rollover.
    c = CounterDelta(rollover=1000.0)
    c.update(T0, 400.0)
    step = c.update(T0 + H, 5.0)
    assert (step.status, step.consumption) == ("reset", 5.0)


def test_32bit_register_rollover() -> None:
    modulus = 2**32 * 0.01  # 32-bit register in 0.01 kWh
    c = CounterDelta(rollover=modulus, max_rate=100.0)
    c.update(T0, modulus - 0.5)
    step = c.update(T0 + H, 1.25)
    assert step.status == "rollover" and step.consumption == pytest.approx(1.75)
    assert c.update(T0 + 2 * H, modulus + 1).status == "rejected"  # outside the counter range


def test_jitter_is_not_a_reset_and_not_counted_twice() -> None:
    c = CounterDelta(jitter=0.01)
    c.update(T0, 100.0)
    step = c.update(T0 + H, 99.995)
    assert (step.status, step.consumption) == ("ok", 0.0)
    assert "jitter" in step.reason
    assert c.update(T0 + 2 * H, 100.5).consumption == pytest.approx(0.5)  # from 100, not from 99.995
    assert c.resets == 0


def test_without_jitter_a_tiny_drop_is_a_reset() -> None:
    c = CounterDelta()
    c.update(T0, 100.0)
    assert c.update(T0 + H, 99.995).status == "reset"


def test_absurd_jump_rejected_and_baseline_kept() -> None:
    c = CounterDelta(max_rate=10.0)  # at most 10 units per hour
    c.update(T0, 100.0)
    bad = c.update(T0 + H, 100_000.0)
    assert bad.status == "rejected" and bad.consumption is None
    assert "exceeds the maximum rate" in bad.reason
    good = c.update(T0 + 2 * H, 101.0)
    assert (good.status, good.consumption, good.start_ts) == ("ok", 1.0, T0)
    assert c.rejected == 1


def test_rate_limit_scales_with_elapsed_time() -> None:
    c = CounterDelta(max_rate=10.0)
    c.update(T0, 0.0)
    assert c.update(T0 + 3 * H, 30.0).status == "ok"  # exactly 10/h over 3 h
    assert c.update(T0 + 3 * H + H // 2, 36.0).status == "rejected"  # 6 in 0.5 h = 12/h


def test_confirmed_jump_rebases() -> None:
    c = CounterDelta(max_rate=10.0)
    c.update(T0, 100.0)
    assert c.update(T0 + H, 5000.0).status == "rejected"
    step = c.update(T0 + 2 * H, 5003.0)
    assert (step.status, step.consumption, step.start_ts) == ("rebased", 3.0, T0 + H)
    assert "unknown" in step.reason
    assert c.rebases == 1 and c.rejected == 1
    assert c.update(T0 + 3 * H, 5005.0).consumption == pytest.approx(2.0)


def test_replacement_meter_with_lower_total_rebases() -> None:
    c = CounterDelta(max_rate=10.0)
    c.update(T0, 1200.0)
    assert c.update(T0 + H, 800.0).status == "rejected"  # as a reset, 800 in 1 h is absurd
    step = c.update(T0 + 2 * H, 801.0)
    assert (step.status, step.consumption) == ("rebased", 1.0)


def test_inconsistent_rejects_restart_confirmation() -> None:
    c = CounterDelta(max_rate=10.0)
    c.update(T0, 100.0)
    assert c.update(T0 + H, 5000.0).status == "rejected"
    assert c.update(T0 + 2 * H, 9000.0).status == "rejected"  # too fast from 5000 too
    step = c.update(T0 + 3 * H, 9002.0)
    assert (step.status, step.consumption, step.start_ts) == ("rebased", 2.0, T0 + 2 * H)


def test_rebase_after_three_and_disabled() -> None:
    c = CounterDelta(max_rate=10.0, rebase_after=3)
    c.update(T0, 100.0)
    assert c.update(T0 + H, 5000.0).status == "rejected"
    assert c.update(T0 + 2 * H, 5001.0).status == "rejected"
    assert c.update(T0 + 3 * H, 5002.0).consumption == pytest.approx(2.0)
    never = CounterDelta(max_rate=10.0, rebase_after=None)
    never.update(T0, 100.0)
    statuses = [never.update(T0 + k * H, 5000.0 + k).status for k in range(1, 6)]
    assert statuses == ["rejected"] * 5 and never.rebases == 0


def test_good_reading_clears_pending_jump() -> None:
    c = CounterDelta(max_rate=10.0)
    c.update(T0, 100.0)
    c.update(T0 + H, 5000.0)  # glitch
    assert c.update(T0 + 2 * H, 102.0).status == "ok"
    assert c.update(T0 + 3 * H, 5001.0).status == "rejected"  # a new, unconfirmed jump again


def test_bad_values_and_timestamps_change_nothing() -> None:
    c = CounterDelta()
    c.update(T0, 10.0)
    for ts, value in [(T0 + H, float("nan")), (T0 + H, float("inf")), (T0 + H, -1.0), (T0, 11.0), (T0 - H, 9.0)]:
        assert c.update(ts, value).status == "rejected"
    assert c.last == (T0, 10.0)
    assert c.rejected == 5
    assert c.update(T0 + H, 11.0).consumption == pytest.approx(1.0)
    assert c.counts() == {"resets": 0, "rollovers": 0, "rejected": 5, "rebases": 0}


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        CounterDelta(max_rate=0)
    with pytest.raises(ValueError):
        CounterDelta(rollover=-1)
    with pytest.raises(ValueError):
        CounterDelta(jitter=-0.1)
    with pytest.raises(ValueError):
        CounterDelta(rebase_after=1)


def test_process_is_deterministic() -> None:
    series = [(T0 + k * H, v) for k, v in enumerate([5.0, 6.0, 1.0, 2.0, 1e9, 3.0])]
    a = CounterDelta(max_rate=100.0).process(series)
    b = CounterDelta(max_rate=100.0).process(series)
    assert a == b
    assert [s.status for s in a] == ["baseline", "ok", "reset", "ok", "rejected", "ok"]


@st.composite
def _meter(draw: st.DrawFn) -> tuple[list[tuple[int, float]], float]:
    """A true consumption series and what a meter that sometimes resets to zero reports."""
    n = draw(st.integers(2, 60))
    value = draw(st.integers(1000, 10_000)) / 100
    series = [(T0, value)]
    total = 0.0
    for k in range(1, n):
        inc = draw(st.integers(0, 1000)) / 100  # 0 .. 10 units
        # A reset is only observable as a drop, so the generator resets only when the meter is above 10.
        if value > 10 and draw(st.booleans()) and draw(st.booleans()):
            value = inc
        else:
            value += inc
        total += inc
        series.append((T0 + k * H, value))
    return series, total


@settings(max_examples=300, deadline=None)
@given(_meter())
def test_property_consumption_sums_to_true_total(case: tuple[list[tuple[int, float]], float]) -> None:
    series, total = case
    steps = CounterDelta(max_rate=20.0).process(series)
    consumed = [s.consumption for s in steps if s.consumption is not None]
    assert all(x >= 0 for x in consumed)
    assert math.fsum(consumed) == pytest.approx(total, abs=1e-6)
    assert all(s.status != "rejected" for s in steps)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 499), min_size=1, max_size=60), st.integers(0, 999))
def test_property_rollover_sums_to_true_total(increments: list[int], start: int) -> None:
    modulus = 1000
    c = CounterDelta(rollover=float(modulus))
    c.update(T0, float(start))
    raw = start
    consumed = 0.0
    for k, inc in enumerate(increments, start=1):
        raw += inc
        step = c.update(T0 + k * H, float(raw % modulus))
        assert step.status in ("ok", "rollover")
        consumed += step.consumption or 0.0
    assert consumed == pytest.approx(sum(increments))
