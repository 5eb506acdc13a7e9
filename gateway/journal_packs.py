"""What the journal holds, as readers see it: `Entry`, the pack format, and `EntryBatch`, a sink's read.

Packs. A batch of readings appended at once is ONE row: its seq is the seq of its LAST reading, `n` says how
many it holds, so its readings have the seqs seq-n+1 .. seq (AUTOINCREMENT never hands those out again).
Sinks, cursors and dead letters keep counting single entries, and a cursor may stop inside a pack. The row's
`ts` is the pack's oldest event time and `ts_max` its newest. The blob is a version byte (1) and then an orjson
object of columns: `series`, the distinct [device_id, quantity, unit, tags JSON, quality] of the batch; `s`,
each reading's index into it; `value` and `ts`, one per reading. One row instead of one row and one index entry
per reading, and strings decoded once per series, are what make the append and the sinks' read cheap per
reading (bench/hotpath.py). A journal written before packs existed gets the three columns on open; its rows
read as before. A citygw from before packs cannot read a journal with packs.

A sink's read (`EntryBatch`) keeps a pack's readings as those columns until something asks for an entry: the
InfluxDB sinks format line protocol straight from them, once per series and not once per reading.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from itertools import repeat
from operator import itemgetter
from sys import intern
from typing import Any, NamedTuple, overload

import orjson

from aggregators.kpi import KpiPoint
from devices.reading import Reading

__all__ = ["KIND_KPI", "KIND_READING", "PACK_MIN", "Entry", "EntryBatch", "Pack", "PackSlice", "pack",
           "pack_rows", "tags_json", "unpack"]

KIND_READING = 0
KIND_KPI = 1

_PACK_V1 = b"\x01"
PACK_MIN = 2  # a batch of one reading stays a plain row


class Entry(NamedTuple):
    """One journal row as sinks see it (a tuple: sinks read hundreds of thousands of these a second)."""

    seq: int
    kind: int
    ts: int
    device_id: str
    quantity: str
    unit: str
    value: float
    tags_json: str  # kept as stored: sinks that format line protocol cache by it instead of parsing it
    quality: str
    extra: dict[str, Any] | None

    @property
    def tags(self) -> dict[str, str]:
        """The entry's tags (parsed on each access)."""
        return orjson.loads(self.tags_json) if self.tags_json != "{}" else {}

    def as_kpi(self) -> KpiPoint:
        """Rebuild the KPI point of a KIND_KPI entry."""
        extra = self.extra or {}
        return KpiPoint(
            name=self.quantity,
            device_id=self.device_id,
            window=extra.get("window", ""),
            start_ns=self.ts,
            end_ns=int(extra.get("end_ns", self.ts)),
            unit=self.unit,
            value=self.value,
            fields=extra.get("fields", {}),
            tags=self.tags,
            valid=bool(extra.get("valid", True)),
        )


def tags_json(tags: Any) -> str:
    """Tags as the journal stores them: a JSON object with sorted keys ("{}" when there are none)."""
    if not tags:
        return "{}"
    return orjson.dumps(dict(tags), option=orjson.OPT_SORT_KEYS).decode()


def pack(readings: Sequence[Reading]) -> tuple[int, int, bytes]:
    """(oldest ts, newest ts, blob) of a batch of readings (at least two)."""
    index: dict[tuple[str, str, str, str, str], int] = {}
    of_series = index.setdefault
    # Each reading's series (device, quantity, unit, tags, quality) as an index into a table of them: a batch
    # has few series, and strings decoded once per series, not once per reading, are what makes reading it cheap.
    series: list[int] = []
    values: list[float] = []
    ts: list[int] = []
    for device_id, quantity, value, unit, t, tags, quality in readings:  # unpacked: see Reading
        series.append(of_series((device_id, quantity, unit, tags_json(tags) if tags else "{}", quality), len(index)))
        # float(): the REAL column made every value a float; a decoder's int (a count) or numpy.float64 (which
        # orjson refuses) must come back as the same float from a pack.
        values.append(float(value))
        ts.append(t)
    columns = {"series": list(index), "s": series, "value": values, "ts": ts}
    return min(ts), max(ts), _PACK_V1 + orjson.dumps(columns)


class Pack(NamedTuple):
    """A pack's readings as columns: `series[s[i]]` is reading i's (device_id, quantity, unit, tags JSON, quality)."""

    first_seq: int
    series: list[list[str]]
    s: list[int]
    value: list[float]
    ts: list[int]


def unpack(last_seq: int, n: int, blob: bytes) -> Pack:
    """The columns of the pack row whose last reading has seq `last_seq` and which holds `n` readings."""
    if blob[:1] != _PACK_V1:
        raise sqlite3.DatabaseError(f"journal pack of unknown version {blob[:1]!r} (written by a newer citygw?)")
    c = orjson.loads(blob[1:])
    # Interned: whatever outlives the batch (the feed's deadband state, the line-protocol prefix cache) then
    # shares one string per device and quantity, instead of pinning each pack's copies all over the heap.
    series = [[intern(field) for field in row] for row in c["series"]]
    return Pack(last_seq - n + 1, series, c["s"], c["value"], c["ts"])


def pack_rows(p: Pack, start: int = 0, stop: int | None = None) -> Iterable[tuple[Any, ...]]:
    """The entry rows (seq, kind, ts, device_id, quantity, unit, value, tags, quality, extra) of a pack's
    readings start..stop."""
    s = p.s[start:stop]
    n = len(s)
    if n == 0:
        return ()
    pick = itemgetter(*s) if n > 1 else lambda column: (column[s[0]],)
    devices, quantities, units, tags, qualities = zip(*p.series, strict=True)
    first = p.first_seq + start
    return zip(range(first, first + n), repeat(KIND_READING, n), p.ts[start:stop], pick(devices),
               pick(quantities), pick(units), p.value[start:stop], pick(tags), pick(qualities), repeat(None, n),
               strict=True)


# A pack's rows have exactly Entry's fields: tuple.__new__ skips _make's Python-level length check (half the cost).
_new_entry = partial(tuple.__new__, Entry)


class PackSlice(NamedTuple):
    """The readings start..stop of a pack, in an EntryBatch."""

    pack: Pack
    start: int
    stop: int


class EntryBatch(Sequence[Entry]):
    """Entries read after a cursor, oldest first. Rows stay Entry; packs stay columns until an entry is asked for."""

    __slots__ = ("_flat", "_len", "parts")

    def __init__(self) -> None:
        self.parts: list[list[Entry] | PackSlice] = []
        self._len = 0
        self._flat: list[Entry] | None = None

    def add(self, entry: Entry) -> None:
        """Append one entry."""
        parts = self.parts
        if parts and isinstance(parts[-1], list):
            parts[-1].append(entry)
        else:
            parts.append([entry])
        self._len += 1
        self._flat = None

    def add_pack(self, p: Pack, start: int, stop: int) -> None:
        """Append the readings start..stop of a pack."""
        if stop > start:
            self.parts.append(PackSlice(p, start, stop))
            self._len += stop - start
            self._flat = None

    def __len__(self) -> int:
        return self._len

    def _entries(self) -> list[Entry]:
        if self._flat is None:
            flat: list[Entry] = []
            for part in self.parts:
                flat.extend(part if isinstance(part, list) else map(_new_entry, pack_rows(*part)))
            self._flat = flat
        return self._flat

    @overload
    def __getitem__(self, index: int) -> Entry: ...

    @overload
    def __getitem__(self, index: slice) -> list[Entry]: ...

    def __getitem__(self, index: int | slice) -> Entry | list[Entry]:
        if isinstance(index, slice) or self._flat is not None:
            return self._entries()[index]
        # One entry (the Delivery core asks for the first and the last): only that one is built.
        i = index + self._len if index < 0 else index
        if not 0 <= i < self._len:
            raise IndexError("EntryBatch index out of range")
        for part in self.parts:
            size = len(part) if isinstance(part, list) else part.stop - part.start
            if i < size:
                if isinstance(part, list):
                    return part[i]
                return _new_entry(next(iter(pack_rows(part.pack, part.start + i, part.start + i + 1))))
            i -= size
        raise IndexError("EntryBatch index out of range")  # not reached: the parts hold _len entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries())
