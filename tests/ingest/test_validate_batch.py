"""Per-batch validation (`Validator.check_many`) decides exactly what one-at-a-time `check` decides."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.reading import Reading
from ingest.validate import MIN_PLAUSIBLE_NS, Validator

NOW = MIN_PLAUSIBLE_NS + 200 * 86_400 * 10**9

# Valid and invalid on every check: known and unknown quantities, accepted and foreign units, values inside,
# at and beyond the plausible range, NaN and infinities, times before 2020, now, and too far ahead.
quantities = st.sampled_from(["pm2_5", "temperature", "noise_laeq", "relative_humidity", "no_such_quantity"])
units = st.sampled_from(["ug/m3", "degC", "dBA", "%", "furlongs"])
values = st.one_of(st.sampled_from([0.0, -50.0, 100.0, 999.0, 1e9, -1e9, math.nan, math.inf, -math.inf]),
                   st.floats(min_value=-1e4, max_value=1e4))
times = st.one_of(st.sampled_from([MIN_PLAUSIBLE_NS - 1, MIN_PLAUSIBLE_NS, NOW, NOW + 300 * 10**9,
                                   NOW + 300 * 10**9 + 1, 0]),
                  st.integers(min_value=NOW - 10**6, max_value=NOW + 10**6))
readings = st.builds(Reading, device_id=st.sampled_from(["a", "b"]), quantity=quantities, value=values,
                     unit=units, ts=times,
                     tags=st.sampled_from([{}, {"phase": "L1"}, {"phase": "L2"}]))


@settings(max_examples=300, deadline=None)
@given(batches=st.lists(st.lists(readings, max_size=30), max_size=6), window=st.integers(min_value=1, max_value=20))
def test_check_many_matches_check(batches: list[list[Reading]], window: int) -> None:
    """Same accepted readings in the same order, same reasons, same duplicate memory (small windows evict)."""
    one = Validator(clock_ns=lambda: NOW, max_remembered=window)
    many = Validator(clock_ns=lambda: NOW, max_remembered=window)
    for batch in batches:
        expected_good = [r for r in batch if one.check(r, NOW) is None]
        # Replays the verdicts: a second Validator sees the batch in the same order, so reasons line up.
        reasons = []
        replay = Validator(clock_ns=lambda: NOW, max_remembered=window)
        replay._seen, replay._ring = set(many._seen), many._ring.copy()
        for r in batch:
            reason = replay.check(r, NOW)
            if reason is not None:
                reasons.append((r, reason))
        good: list[Reading] = []
        rejected = many.check_many(batch, NOW, good)
        assert good == expected_good
        assert [(r, reason) for r, reason in rejected] == reasons
        assert list(many._ring) == list(one._ring) and many._seen == one._seen == set(one._ring)


def test_check_many_appends_to_the_callers_list_and_gives_reasons() -> None:
    """Rejections name the failed check; the valid ones land in `good` after what it already held."""
    v = Validator(clock_ns=lambda: NOW)
    ok = Reading("d", "pm2_5", 5.0, "ug/m3", NOW)
    good: list[Reading] = [ok]
    rejected = v.check_many([Reading("d", "pm2_5", 5.0, "ug/m3", NOW - 1),
                             Reading("d", "pm2_5", math.nan, "ug/m3", NOW),
                             Reading("d", "pm2_5", 5.0, "degC", NOW),
                             Reading("d", "pm2_5", 5.0, "ug/m3", NOW - 1)], NOW, good)
    assert good == [ok, Reading("d", "pm2_5", 5.0, "ug/m3", NOW - 1)]
    assert [reason.split(":")[0] for _, reason in rejected] == ["not a finite number", "unit not accepted",
                                                               "duplicate"]
