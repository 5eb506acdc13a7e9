"""Commands for the field: `citygw backlog`, `citygw export`, and the summary `run` logs on stop.

They read the gateway's journal through a read-only SQLite connection (WAL lets a reader run beside the
gateway without blocking it), so they work on a running kit and on a stopped one. Run them as the user
that owns the data directory: `sudo -u citygw citygw backlog -c /etc/citygw/citygw.toml`. (`citygw tail`
follows a running gateway through its status server instead: gateway/live_stream.py.)
"""

from __future__ import annotations

import csv
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import orjson

from gateway.journal import KIND_KPI, PACK_COLUMNS, entry_row_at, expand_rows
from gateway.settings import Settings

__all__ = ["JournalReader", "SinkBacklog", "export_csv", "parse_when", "print_backlog", "requeue_dead_letters",
           "sinks_of", "stop_summary"]

# Rows are selected with PACK_COLUMNS and unpacked by expand_rows: a pack row holds a batch of readings, each an
# entry of its own with its own seq (gateway/journal.py). What the methods return is one row per entry.
_COLUMNS = PACK_COLUMNS


def sinks_of(settings: Settings) -> list[tuple[str, int | None]]:
    """(cursor name, only_kind) of every sink the config runs, named as the gateway names them."""
    from gateway.sinks.influx import influx_sink_name
    from gateway.sinks.ngsi_ld import NgsiLdSink, ngsi_ld_sink_name
    from gateway.sinks.sensorthings import SensorThingsSink, sensorthings_sink_name

    sinks: list[tuple[str, int | None]] = [(influx_sink_name(cfg), None) for cfg in settings.influx]
    sinks += [(sensorthings_sink_name(cfg), SensorThingsSink.only_kind) for cfg in settings.sensorthings]
    sinks += [(ngsi_ld_sink_name(cfg), NgsiLdSink.only_kind) for cfg in settings.ngsi_ld]
    if settings.mqtt.host and settings.mqtt.feed.enabled:
        sinks.append(("mqtt-feed", None if settings.mqtt.feed.raw else KIND_KPI))
    if settings.local_store_enabled:
        sinks.append(("local-store", None))
    return sinks


@dataclass(frozen=True, slots=True)
class SinkBacklog:
    """What one sink has not delivered yet."""

    name: str
    waiting: int
    oldest_ts_ns: int | None  # event time of the oldest undelivered entry
    dead_letters: int


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _age(ts_ns: int, now_ns: int) -> str:
    seconds = max(0.0, (now_ns - ts_ns) / 1e9)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


class JournalReader:
    """A read-only view of a journal file (never creates, migrates or moves it)."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"no journal at {path}: has the gateway run with this config (data_dir)?")
        self.path = path
        # A URI (percent-encoded by as_uri) so that mode=ro applies whatever characters the path holds.
        self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def last_seq(self) -> int:
        """The highest seq ever appended."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='entries'").fetchone()
        return int(row[0]) if row else 0

    def cursor(self, sink: str) -> int:
        """The sink's durable cursor (up to a second behind a running gateway's)."""
        row = self._db.execute("SELECT seq FROM cursors WHERE sink=?", (sink,)).fetchone()
        return int(row[0]) if row else 0

    def backlog(self, sink: str, only_kind: int | None) -> SinkBacklog:
        """Entries after the sink's cursor (of the kinds it takes), the oldest one's event time, dead letters."""
        cursor = self.cursor(sink)
        kind_sql = " AND kind=?" if only_kind is not None else ""
        args: tuple[Any, ...] = (cursor, only_kind) if only_kind is not None else (cursor,)
        # A pack (n readings, seq-n+1 .. seq) may be partly delivered: only its entries after the cursor count.
        waiting, oldest = self._db.execute(
            f"SELECT total(max(0, min(coalesce(n, 1), seq - ?))), min(ts) FROM entries WHERE seq>?{kind_sql}",
            (cursor, *args)).fetchone()
        dead = self._db.execute("SELECT count(*) FROM dead_letters WHERE sink=?", (sink,)).fetchone()[0]
        return SinkBacklog(sink, int(waiting), int(oldest) if oldest is not None else None, int(dead))

    def dead_letters(self) -> list[tuple[str, int, str, str, int]]:
        """(sink, seq, reason, body, at_ns) of every dead letter, oldest first."""
        rows = self._db.execute("SELECT sink, seq, reason, body, at_ns FROM dead_letters ORDER BY id").fetchall()
        return [(str(r[0]), int(r[1]), str(r[2]), str(r[3]), int(r[4])) for r in rows]

    def after(self, seq: int, limit: int = 5000) -> list[tuple[Any, ...]]:
        """Raw entry rows after `seq`, oldest first."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE seq>? ORDER BY seq LIMIT ?", (seq, limit))
        return list(islice(expand_rows(rows, seq), limit))

    def span(self, after: int, upto: int, limit: int, newest_first: bool = False) -> list[tuple[Any, ...]]:
        """Raw entry rows with after < seq <= upto, oldest (or newest) first, at most `limit`."""
        if newest_first:  # newest rows first, each pack's entries newest first
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE seq>? AND seq<=? ORDER BY seq DESC"
                                    " LIMIT ?", (after, upto, limit))
            entries: Iterator[tuple[Any, ...]] = (e for row in rows for e in reversed(list(expand_rows([row], after))))
        else:
            entries = expand_rows(self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE seq>? AND seq<=?"
                                                   " ORDER BY seq LIMIT ?", (after, upto, limit)), after)
        return [e for e in islice(entries, limit) if e[0] <= upto]

    def between(self, start_ns: int, end_ns: int) -> Iterator[tuple[Any, ...]]:
        """Raw entry rows with event time in [start_ns, end_ns) (in no particular order: packs overlap)."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM entries WHERE ts<? AND coalesce(ts_max, ts)>=?",
                                (end_ns, start_ns))
        yield from (r for r in expand_rows(rows) if start_ns <= r[2] < end_ns)

    def size_bytes(self) -> int:
        """The journal file plus its WAL on disk."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


# -- backlog ------------------------------------------------------------------------------------------------


def print_backlog(settings: Settings, out: TextIO | None = None, show_bodies: bool = True) -> int:
    """Per sink: entries waiting and the oldest one's age; then every dead letter with its reason."""
    out = out or sys.stdout
    reader = JournalReader(settings.journal_path)
    now = time.time_ns()
    try:
        print(f"journal {reader.path}: {reader.size_bytes() / 1e6:.1f} MB, last entry #{reader.last_seq()}",
              file=out)
        for name, only_kind in sinks_of(settings):
            b = reader.backlog(name, only_kind)
            oldest = (f", oldest from {_iso(b.oldest_ts_ns)} ({_age(b.oldest_ts_ns, now)} ago)"
                      if b.oldest_ts_ns is not None else "")
            print(f"sink {name}: {b.waiting} entr{'y' if b.waiting == 1 else 'ies'} waiting{oldest}; "
                  f"{b.dead_letters} dead letter(s)", file=out)
        letters = reader.dead_letters()
    finally:
        reader.close()
    if letters:
        print(f"dead letters ({len(letters)}): entries a sink refused for good, kept here", file=out)
        for sink, seq, reason, body, at_ns in letters:
            print(f"  #{seq} → {sink} at {_iso(at_ns)}: {reason}", file=out)
            if show_bodies:
                print(f"      {body[:200]}", file=out)
    return 0


def requeue_dead_letters(settings: Settings, sink: str | None = None, out: TextIO | None = None) -> int:
    """Append the dead-lettered entries (of `sink`, or all) to the journal again and forget the dead letters.

    The copies get new sequence numbers, so every sink receives them again: InfluxDB overwrites an identical
    point, the local store may hold a line twice (`citygw export` writes it once). Works beside a running
    gateway (SQLite serialises the writers); its sinks pick the copies up within their flush interval.
    """
    out = out or sys.stdout
    path = settings.journal_path
    if not path.exists():
        raise FileNotFoundError(f"no journal at {path}")
    db = sqlite3.connect(path, timeout=30)
    try:
        where = " WHERE d.sink=?" if sink else ""
        args: tuple[Any, ...] = (sink,) if sink else ()
        with db:
            found = [(int(d[0]), int(d[1]), entry_row_at(db, int(d[1])))
                     for d in db.execute(f"SELECT d.id, d.seq FROM dead_letters d{where} ORDER BY d.id", args)]
            letters = [(id_, seq, seq if row is not None else None) for id_, seq, row in found]
            rows = {seq: row for _, seq, row in found if row is not None}  # a packed entry comes out alone
            kept = sorted(rows)
            gone = [seq for _, seq, row in found if row is None]
            for seq in kept:
                db.execute("INSERT INTO entries(kind, ts, device_id, quantity, unit, value, tags, quality, extra)"
                           " VALUES (?,?,?,?,?,?,?,?,?)", rows[seq][1:])
            db.executemany("DELETE FROM dead_letters WHERE id=?", [(id_,) for id_, _, row in found if row is not None])
    finally:
        db.close()
    what = f" of sink {sink}" if sink else ""
    if not letters:
        print(f"no dead letters{what}", file=out)
        return 0
    print(f"requeued {len(kept)} entr{'y' if len(kept) == 1 else 'ies'}{what}: the running gateway sends them "
          "again; a refusal for the same reason dead-letters them again", file=out)
    if gone:
        print(f"{len(gone)} dead letter(s) cannot be requeued: their entries left the journal (disk cap); their "
              f"bodies stay listed by `citygw backlog` (seq {', '.join(map(str, gone[:10]))})", file=out)
        return 1
    return 0


# -- export -------------------------------------------------------------------------------------------------


def parse_when(text: str, timezone: str) -> int:
    """A date (local midnight) or an ISO date-time (local unless it has an offset) → UTC ns."""
    tz = ZoneInfo(timezone)
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            moment = datetime(d.year, d.month, d.day, tzinfo=tz)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=tz)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (2026-11-30) or date-time (2026-11-30T08:00)") from None
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


_CSV_HEADER = ["type", "time", "ts_ns", "device_id", "name", "value", "unit", "window", "end_ns", "valid",
               "quality", "tags"]


def _store_rows(directory: Path, start_ns: int, end_ns: int) -> Iterator[list[Any]]:
    """Rows of the local store's day files that overlap [start, end)."""
    day = datetime.fromtimestamp(start_ns / 1e9, UTC).date()
    last = datetime.fromtimestamp(end_ns / 1e9, UTC).date()
    while day <= last:
        for prefix in ("readings", "kpi"):
            path = directory / f"{prefix}-{day.isoformat()}.jsonl"
            if not path.exists():
                continue
            with path.open("rb") as fh:
                for line in fh:
                    try:
                        item = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue  # a line cut by a power loss: the journal still has that entry
                    if prefix == "kpi":
                        ts = int(item["start"])
                        row = ["kpi", _iso(ts), ts, item["device_id"], item["name"], item["value"], item["unit"],
                               item.get("window") or "", item.get("end") or "", item.get("valid", True), "",
                               orjson.dumps(item["tags"]).decode() if item.get("tags") else ""]
                    else:
                        ts = int(item["ts"])
                        row = ["reading", _iso(ts), ts, item["device_id"], item["quantity"], item["value"],
                               item["unit"], "", "", "", item.get("quality", "good"),
                               orjson.dumps(item["tags"]).decode() if item.get("tags") else ""]
                    if start_ns <= ts < end_ns:
                        yield row
        day += timedelta(days=1)


def _journal_row(r: tuple[Any, ...]) -> list[Any]:
    _seq, kind, ts, device_id, quantity, unit, value, tags, quality, extra = r
    tag_text = tags if tags and tags != "{}" else ""
    if kind == KIND_KPI:
        x = orjson.loads(extra) if extra else {}
        return ["kpi", _iso(ts), ts, device_id, quantity, value, unit, x.get("window") or "", x.get("end_ns") or "",
                x.get("valid", True), "", tag_text]
    return ["reading", _iso(ts), ts, device_id, quantity, value, unit, "", "", "", quality, tag_text]


def export_csv(settings: Settings, start_ns: int, end_ns: int, devices: Sequence[str] = (),
               out: TextIO | None = None, kinds: Sequence[str] = ("reading", "kpi")) -> int:
    """Write readings and KPI points with event time in [start, end) as CSV; return the number of rows.

    Both the local store (history, when it runs) and the journal (what is not yet trimmed) are read; an entry
    found in both is written once.
    """
    out = out or sys.stdout
    rows: dict[tuple[Any, ...], list[Any]] = {}
    store = settings.local_store.path or settings.gateway.data_dir / "store"
    if store.is_dir():
        for row in _store_rows(store, start_ns, end_ns):
            rows.setdefault((row[0], row[2], row[3], row[4], row[7]), row)
    if settings.journal_path.exists():
        reader = JournalReader(settings.journal_path)
        try:
            for r in reader.between(start_ns, end_ns):
                row = _journal_row(r)
                rows.setdefault((row[0], row[2], row[3], row[4], row[7]), row)
        finally:
            reader.close()
    writer = csv.writer(out)
    writer.writerow(_CSV_HEADER)
    n = 0
    for key in sorted(rows, key=lambda k: (k[1], k[2], k[3], k[0], k[4])):
        row = rows[key]
        if (devices and row[3] not in devices) or row[0] not in kinds:
            continue
        writer.writerow(row)
        n += 1
    return n


# -- run's summary on stop ----------------------------------------------------------------------------------


def stop_summary(settings: Settings, accepted: int, rejected: int,
                 sinks: list[tuple[str, int | None]] | None = None) -> str:
    """One line: readings accepted and rejected, backlog left per sink (name, only_kind), journal size."""
    try:
        reader = JournalReader(settings.journal_path)
    except (FileNotFoundError, sqlite3.Error) as exc:
        return f"citygw stopped: {accepted} readings accepted, {rejected} rejected; journal unreadable: {exc}"
    try:
        left = ", ".join(f"{b.name} {b.waiting}" for b in
                         (reader.backlog(name, kind) for name, kind in
                          (sinks if sinks is not None else sinks_of(settings)))) or "no sinks"
        size = reader.size_bytes()
    except sqlite3.Error as exc:
        left, size = f"unknown ({exc})", 0
    finally:
        reader.close()
    return (f"citygw stopped: {accepted} readings accepted, {rejected} rejected; backlog left per sink: {left}; "
            f"journal {size / 1e6:.1f} MB at {settings.journal_path}")
