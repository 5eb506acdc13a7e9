"""The duplicate window: a bounded memory of recent reading keys, evicting the oldest first."""

from __future__ import annotations

from devices.reading import Reading
from ingest.validate import MIN_PLAUSIBLE_NS, Validator

T0 = MIN_PLAUSIBLE_NS + 10**18


def _reading(i: int) -> Reading:
    return Reading("dev-1", "pm2_5", 5.0, "ug/m3", T0 + i * 10**9)


def test_window_keeps_the_newest_keys_and_forgets_the_oldest() -> None:
    """After many evictions the window still holds exactly the last `max_remembered` keys, oldest out first."""
    size = 1000
    validator = Validator(clock_ns=lambda: T0 + 10**15, max_remembered=size)
    total = 25 * size  # many full turns of the window: eviction must stay exact, not drift
    for i in range(total):
        assert validator.check(_reading(i)) is None
    for i in range(total - size, total):  # the newest `size` are remembered: copies are duplicates
        reason = validator.check(_reading(i))
        assert reason is not None and reason.startswith("duplicate:")
    # The one just before them was evicted: its copy is accepted again (and evicts the oldest remembered key).
    assert validator.check(_reading(total - size - 1)) is None
    assert validator.check(_reading(total - size)) is None
