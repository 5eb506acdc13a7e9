"""Validation of decoded readings: vocabulary, unit, finite and plausible value, sane timestamp, duplicates."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from devices.reading import Reading
from devices.vocabulary import QUANTITIES

__all__ = ["DUPLICATE_WINDOW", "MIN_PLAUSIBLE_NS", "Validator"]

# How many recent readings the duplicate check remembers (docs/reliability.md quotes this number).
DUPLICATE_WINDOW = 100_000

# Nothing a kit measures predates 2020; an earlier time is an unset clock (a Pi without RTC boots in 1970).
MIN_PLAUSIBLE_NS = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000_000


# The bounds of a (quantity, unit) pair the vocabulary does not accept: check() gives the reason.
_NOT_ACCEPTED = (math.inf, -math.inf)


def _iso(ts_ns: int) -> str:
    try:
        return datetime.fromtimestamp(ts_ns / 1e9, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{ts_ns} ns"


KEY_MASK = (1 << 60) - 1


def _key(r: Reading) -> int:
    """Identity of a reading for duplicate detection: its series (device, quantity, tags) and time.

    Tags are part of it: an SDM630 sends voltage for phases L1, L2 and L3 at one instant. The hash is cut to 60
    bits: such an int takes a 32-byte block, a full 64-bit one 48 (100,000 remembered keys: 1.6 MB less).
    """
    if r.tags:
        return hash((r.device_id, r.quantity, r.ts, tuple(sorted(r.tags.items())))) & KEY_MASK
    return hash((r.device_id, r.quantity, r.ts)) & KEY_MASK


class Validator:
    """Checks one reading at a time; `check` returns None when valid, else the rejection reason."""

    def __init__(self, clock_ns: Callable[[], int], max_future_ns: int = 300 * 10**9,
                 max_remembered: int = DUPLICATE_WINDOW) -> None:
        self._clock_ns = clock_ns
        self.max_future_ns = max_future_ns
        # Hashes of recent (device, quantity, tags, ts) keys, oldest first: catches redelivered MQTT messages and
        # replays. A 64-bit hash instead of the tuple keeps 100,000 keys in ~8 MB instead of ~20 MB; a
        # collision (odds ~1e-9 at this size) would reject one reading as a duplicate, counted and logged.
        # A set for the lookup and a ring (deque) of the same keys, oldest first, for the eviction. Not
        # `next(iter(d))` on a dict: that walks over the slots of every key deleted before it, so the cost
        # per reading grew with the readings since the dict was last rebuilt (17 s per 200,000 readings once
        # the window was full). Not an OrderedDict either, though its popitem(last=False) is O(1): its
        # linked-list nodes made 100,000 keys take ~21 MB instead of ~9 MB. Both stay in step: a key is added
        # to both or neither, and a key already remembered keeps its place (as an OrderedDict would).
        self._seen: set[int] = set()
        self._ring: deque[int] = deque()
        self.max_remembered = max_remembered
        self._ranges: dict[tuple[str, str], tuple[float, float]] = {}

    def remember(self, r: Reading) -> None:
        """Record an accepted reading so a later copy of it is rejected as a duplicate."""
        self._remember_key(_key(r))

    def _remember_key(self, key: int) -> None:
        seen = self._seen
        if key in seen:
            return
        seen.add(key)
        self._ring.append(key)
        if len(seen) > self.max_remembered:
            seen.discard(self._ring.popleft())

    def check_many(self, readings: Iterable[Reading], now_ns: int, good: list[Reading]) -> list[tuple[Reading, str]]:
        """Check a batch: valid readings are remembered and appended to `good`; returns (reading, reason) rejects.

        The same checks as `check`, done once per batch where they can be: the accepted units and plausible
        range per (quantity, unit) come from a table, the time bounds are computed once, and only a reading
        that fails one of them goes through `check` for its reason.
        """
        rejected: list[tuple[Reading, str]] = []
        ranges = self._ranges
        seen = self._seen
        ring = self._ring
        limit = self.max_remembered
        latest = now_ns + self.max_future_ns
        for r in readings:
            device_id, quantity, value, unit, ts, tags, _ = r  # one unpack: see Reading
            bounds = ranges.get((quantity, unit))
            if bounds is None:
                bounds = self._bounds(quantity, unit)
            # NaN fails the range comparison too, and so does every value for _NOT_ACCEPTED: every reading
            # that check() would reject for its quantity, unit, value or time takes the slow path.
            if not bounds[0] <= value <= bounds[1] or not MIN_PLAUSIBLE_NS <= ts <= latest:
                reason = self.check(r, now_ns)
                if reason is None:
                    good.append(r)
                else:
                    rejected.append((r, reason))
                continue
            # The same as _key(r), inlined: this runs for every reading.
            key = (hash((device_id, quantity, ts, tuple(sorted(tags.items())))) if tags else
                   hash((device_id, quantity, ts))) & KEY_MASK
            if key in seen:
                rejected.append((r, f"duplicate: {quantity} reading at {_iso(ts)} (same device, quantity, tags "
                                    "and timestamp)"))
                continue
            seen.add(key)
            ring.append(key)
            if len(seen) > limit:
                seen.discard(ring.popleft())
            good.append(r)
        return rejected

    def _bounds(self, quantity: str, unit: str) -> tuple[float, float]:
        """The plausible range of a (quantity, unit) pair, or _NOT_ACCEPTED; cached (the vocabulary is fixed)."""
        q = QUANTITIES.get(quantity)
        bounds = (q.low, q.high) if q is not None and unit in q.units else _NOT_ACCEPTED
        if len(self._ranges) < 10_000:  # bounded: a device sending ever new unknown names cannot grow it
            self._ranges[(quantity, unit)] = bounds
        return bounds

    def check(self, r: Reading, now_ns: int | None = None) -> str | None:
        """None when `r` may enter the journal, else a reason a technician can act on."""
        q = QUANTITIES.get(r.quantity)
        if q is None:
            return f"unknown quantity: {r.quantity!r} (run `citygw devices` for the vocabulary)"
        if r.unit not in q.units:
            return f"unit not accepted: {r.unit!r} for {r.quantity} (expected {' or '.join(q.units)})"
        if not math.isfinite(r.value):
            return f"not a finite number: {r.quantity} value is {r.value}"
        if not q.low <= r.value <= q.high:
            return (f"out of plausible range: {r.quantity} value {r.value:g} {r.unit} is outside "
                    f"{q.low:g}..{q.high:g} (sensor fault or wrong scale?)")
        if r.ts < MIN_PLAUSIBLE_NS:
            return (f"timestamp before 2020: {_iso(r.ts)}; the device's or gateway's clock is not set "
                    "(check NTP / the device's time source)")
        now = self._clock_ns() if now_ns is None else now_ns
        if r.ts > now + self.max_future_ns:
            return (f"timestamp in the future: {_iso(r.ts)} is {(r.ts - now) / 1e9:.0f} s ahead "
                    "(device clock ahead, or wrong time zone/units)")
        key = _key(r)  # hashed once: this runs for every reading
        if key in self._seen:
            return f"duplicate: {r.quantity} reading at {_iso(r.ts)} (same device, quantity, tags and timestamp)"
        self._remember_key(key)
        return None
