"""Small windows are computed in plain Python: the same numbers as numpy, bit for bit, on random windows."""

from __future__ import annotations

import random

import numpy as np
import pytest

from aggregators.stats import SMALL_WINDOW, coverage, level_stats, small_coverage, small_level_stats, small_sum
from aggregators.windows import WindowEngine, WindowSpec
from devices.reading import Reading

S = 10**9
T0 = 1_767_225_600 * S


def _values(rng: random.Random, n: int) -> list[float]:
    scale = 10.0 ** rng.randint(-6, 9)
    pool = [rng.uniform(-1.0, 1.0) * scale for _ in range(n)]
    # Ties, and values whose sums round: both where a different order of operations shows.
    return [rng.choice(pool) if rng.random() < 0.3 else rng.uniform(-1.0, 1.0) * scale + 0.1 for _ in range(n)]


@pytest.mark.parametrize("seed", range(4))
def test_small_window_statistics_equal_numpys(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(5000):
        n = rng.randint(1, SMALL_WINDOW - 1)
        values = _values(rng, n)
        assert small_level_stats(values) == level_stats(np.array(values), decibel=False), values
        assert small_sum(values) == float(np.array(values).sum()), values
        start = T0 + rng.randint(0, 10**6) * S
        size = rng.choice((10, 60, 3600, 86_400)) * S
        slots = rng.choice((10, 12, 24, 60))
        ts = [start + rng.randint(0, size - 1) for _ in range(n)]
        assert small_coverage(ts, start, start + size, slots) == coverage(np.array(ts, dtype=np.int64), start,
                                                                          start + size, slots), (ts, start)


def test_a_window_of_few_values_closes_as_one_of_many_would() -> None:
    """The engine's small path and numpy path give the same KPI point for the same readings (counters, sums)."""
    readings = [Reading("d", q, v, u, T0 + t * S)
                for q, u, values in (("pm2_5", "ug/m3", (3.5, 1.25, 9.0)), ("vehicle_count", "1", (12.0, 0.0, 7.0)),
                                     ("energy_import", "kWh", (10.0, 10.5, 11.25)))
                for t, v in zip((40, 5, 22), values, strict=True)]

    def close(small: int) -> list[object]:
        import aggregators.windows as windows
        saved = windows.SMALL_WINDOW
        windows.SMALL_WINDOW = small
        try:
            engine = WindowEngine([WindowSpec.parse("1m")], grace_ns=0)
            engine.add_many(readings, T0 + 61 * S)
            return [(p.name, p.value, p.fields, p.valid) for p in engine.advance_sources(T0 + 3600 * S, 0)]
        finally:
            windows.SMALL_WINDOW = saved

    small, big = close(SMALL_WINDOW), close(0)
    assert small == big and len(small) == 3
