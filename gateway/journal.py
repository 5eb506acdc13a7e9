"""The journal: an append-only SQLite log (WAL) of readings and KPI points, with one cursor per sink.

Every reading is appended (in batched transactions) before its source is acknowledged; every sink reads
forward from its own cursor and moves it only after a successful write. See docs/reliability.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from aggregators.kpi import KpiPoint
from devices.reading import Reading
from gateway.journal_packs import (
    KIND_KPI,
    KIND_READING,
    PACK_MIN,
    Entry,
    EntryBatch,
    Pack,
    pack,
    pack_rows,
    tags_json,
    unpack,
)

__all__ = ["KIND_KPI", "KIND_READING", "PACK_COLUMNS", "Entry", "Journal", "WriteFailure", "entry_row_at",
           "expand_rows", "is_disk_full", "wal_budget"]

log = logging.getLogger("citygw.journal")

Synchronous = Literal["off", "normal", "full"]

MIB = 1024 * 1024


def is_disk_full(exc: BaseException) -> bool:
    """Whether SQLite failed because the journal's filesystem is full (SQLITE_FULL)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


def wal_budget(max_bytes: int) -> int:
    """The part of `journal.max_size` kept for the WAL (1/8 of it, at least 1 MiB or 1/4, at most 64 MiB).

    The WAL holds every page written since the last checkpoint; the housekeeping thread checkpoints it
    back to zero bytes (TRUNCATE) whenever it passes half of this, so entries get the rest of the cap.
    """
    if max_bytes <= 0:
        return 64 * MIB
    return min(64 * MIB, max(max_bytes // 8, min(MIB, max_bytes // 4)))


class WriteFailure:
    """A journal connection's current write failure: logged once when it starts and once when it ends.

    `reason` is what the health check shows ("disk full"), None while writes succeed. `count` is called
    with the reason of every failed attempt (the metric); the log never repeats per retry.
    """

    def __init__(self, what: str, path: Path, consequence: str,
                 count: Callable[[str], None] = lambda reason: None) -> None:
        self.what = what
        self.path = path
        self.consequence = consequence
        self.count = count
        self.reason: str | None = None
        self.since = 0.0
        self.failures = 0

    def failed(self, exc: sqlite3.Error) -> None:
        """Record a failed attempt; log it if it starts a failure (or changes its reason)."""
        reason = "disk full" if is_disk_full(exc) else f"{type(exc).__name__}: {exc}"
        self.failures += 1
        self.count("disk_full" if reason == "disk full" else "other")
        if reason == self.reason:
            return
        if self.reason is None:
            self.since = time.monotonic()
        self.reason = reason
        if reason == "disk full":
            try:
                free = f"{shutil.disk_usage(self.path.parent).free / MIB:.1f} MiB free"
            except OSError:
                free = "free space unknown"
            log.error("%s %s: cannot write: the disk is full (%s on %s). %s Retrying until space returns; "
                      "free space on that filesystem, or lower journal.max_size so that the cap drops the "
                      "oldest entries first.", self.what, self.path, free, self.path.parent, self.consequence)
        else:
            log.error("%s %s: cannot write (%s). %s Retrying; check the disk and permissions of %s.",
                      self.what, self.path, reason, self.consequence, self.path.parent)

    def succeeded(self) -> None:
        """Record a successful write; log the recovery once."""
        if self.reason is not None:
            log.warning("%s %s: writing again after %.0f s (%d failed attempts: %s)", self.what, self.path,
                        time.monotonic() - self.since, self.failures, self.reason)
            self.reason = None
            self.failures = 0


def _rollback(db: sqlite3.Connection) -> None:
    # SQLite rolls a transaction back by itself on some errors (SQLITE_FULL among them); a ROLLBACK then
    # fails with "cannot rollback - no transaction is active" and would hide the real error.
    if db.in_transaction:
        db.execute("ROLLBACK")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so cursors stay meaningful after trimming
    kind INTEGER NOT NULL,                  -- 0 reading, 1 KPI point
    ts INTEGER NOT NULL,                    -- event time (window start for KPI points), UTC ns
    device_id TEXT NOT NULL,
    quantity TEXT NOT NULL,                 -- KPI: series name
    unit TEXT NOT NULL,
    value REAL NOT NULL,
    tags TEXT NOT NULL,                     -- JSON object, sorted keys
    quality TEXT NOT NULL,
    extra TEXT,                             -- KPI: JSON {window, end_ns, fields, valid}
    n INTEGER,                              -- a pack: how many readings it holds (NULL: one entry)
    ts_max INTEGER,                         -- a pack: its newest event time (ts is its oldest)
    pack BLOB                               -- a pack: its readings as columns (see journal_packs.py)
);
CREATE INDEX IF NOT EXISTS entries_kind_ts ON entries(kind, ts);  -- rebuild of open windows; KPI-only sinks
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, seq INTEGER NOT NULL,
    reason TEXT NOT NULL, body TEXT NOT NULL, at_ns INTEGER NOT NULL
);
"""

_INSERT = (
    "INSERT INTO entries(kind, ts, device_id, quantity, unit, value, tags, quality, extra)"
    " VALUES (?,?,?,?,?,?,?,?,?)"
)
_INSERT_PACK = (
    "INSERT INTO entries(seq, kind, ts, device_id, quantity, unit, value, tags, quality, extra, n, ts_max, pack)"
    " VALUES (?, 0, ?, '', '', '', 0.0, '{}', '', NULL, ?, ?, ?)"
)

# The columns a reader selects to see every entry, packed or not (`expand_rows` takes rows of these).
PACK_COLUMNS = "seq, kind, ts, device_id, quantity, unit, value, tags, quality, extra, n, pack"

# Packs (one row per appended batch of readings) are described in gateway/journal_packs.py.


def expand_rows(rows: Iterable[Sequence[Any]], after: int = 0) -> Iterator[tuple[Any, ...]]:
    """Rows of PACK_COLUMNS → one (seq, kind, ts, device_id, quantity, unit, value, tags, quality, extra) per
    entry, packs unpacked; entries at or before seq `after` are skipped (a cursor may stop inside a pack)."""
    for r in rows:
        if r[11] is None:
            yield tuple(r[:10])
        else:
            p = unpack(r[0], r[10], r[11])
            yield from pack_rows(p, max(0, after - p.first_seq + 1))


def entry_row_at(db: sqlite3.Connection, seq: int) -> tuple[Any, ...] | None:
    """The entry row of `seq` (unpacked from its pack when it is in one), or None when it left the journal."""
    row = db.execute(f"SELECT {PACK_COLUMNS} FROM entries WHERE seq >= ? ORDER BY seq LIMIT 1", (seq,)).fetchone()
    if row is None or row[0] - (row[10] or 1) >= seq:
        return None
    return next(expand_rows([row], seq - 1))


def reading_row(r: Reading) -> tuple[Any, ...]:
    """The journal row of a reading."""
    return (KIND_READING, r.ts, r.device_id, r.quantity, r.unit, r.value, tags_json(r.tags), r.quality, None)


def kpi_row(p: KpiPoint) -> tuple[Any, ...]:
    """The journal row of a KPI point."""
    extra = orjson.dumps(
        {"window": p.window, "end_ns": p.end_ns, "fields": dict(p.fields), "valid": p.valid},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY,
    ).decode()
    return (KIND_KPI, p.start_ns, p.device_id, p.name, p.unit, p.value, tags_json(p.tags), "good", extra)


class _JournalUpkeep:
    """The housekeeping half of `Journal` (sizes, trimming, checkpoints, the disk cap), on the same connection."""

    path: Path
    max_bytes: int
    wal_budget: int
    _db: sqlite3.Connection
    _lock: threading.Lock

    def _dropped_total(self) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='dropped_undelivered'").fetchone()
        return str(row[0]) if row else None

    def wal_bytes(self) -> int:
        """Size of the WAL file (0 when there is none)."""
        try:
            return os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return 0

    def size_bytes(self) -> int:
        """What counts against `max_bytes`: the database pages in use plus the WAL file."""
        return self.used_bytes() + self.wal_bytes()

    def used_bytes(self) -> int:
        """Bytes of the database in use (pages minus free pages), excluding the WAL."""
        with self._lock:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def trim(self, sinks: Sequence[str], keep_readings_since_ns: int, chunk: int = 2000) -> int:
        """Delete entries every sink has delivered, except readings still needed to rebuild open windows.

        A pack goes as a whole: once every sink delivered all of it and its newest reading is not needed.
        Returns how many entries went.
        """
        if not sinks:
            return 0
        with self._lock:
            db = self._db
            placeholders = ",".join("?" * len(sinks))
            row = db.execute(
                f"SELECT count(*), min(seq) FROM cursors WHERE sink IN ({placeholders})", tuple(sinks)
            ).fetchone()
            if row[0] < len(sinks):
                return 0  # a sink that never delivered anything holds everything
            floor = int(row[1])
        deleted = 0
        while True:
            # Small transactions, the lock released between them: a trim never stalls the ingest thread's
            # commits for long (tail latency), however much there is to delete.
            with self._lock:
                cur = self._db.execute(
                    "DELETE FROM entries WHERE seq IN (SELECT e.seq FROM entries e WHERE e.seq <= ?"
                    " AND (e.kind=1 OR coalesce(e.ts_max, e.ts) < ?)"
                    # dead-lettered entries stay until `citygw backlog --requeue` sends them again (or the cap);
                    # so does the whole pack around one
                    " AND NOT EXISTS (SELECT 1 FROM dead_letters d"
                    " WHERE d.seq BETWEEN e.seq - coalesce(e.n, 1) + 1 AND e.seq)"
                    " ORDER BY e.seq LIMIT ?) RETURNING coalesce(n, 1)", (floor, keep_readings_since_ns, chunk))
                gone = cur.fetchall()
            deleted += sum(r[0] for r in gone)  # entries, not rows: a pack is n of them
            if len(gone) < chunk:
                return deleted

    def checkpoint(self) -> None:
        """Copy the WAL into the database (PASSIVE: writers go on); empty it once it passes half its budget.

        Under a steady write load a PASSIVE checkpoint rarely finds the moment when no commit follows it,
        so SQLite never starts the WAL over and it grows without bound (16 MB beside a 4 MB database was
        seen). TRUNCATE waits, at most 2 s, for a quiet moment, copies what is left and empties the file;
        the ingest thread's next commit waits for it (a few milliseconds: PASSIVE has just run).
        """
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.limit_wal()

    def limit_wal(self) -> None:
        """Empty the WAL (TRUNCATE checkpoint, waiting at most 2 s) once it is over half its budget."""
        if self.wal_bytes() > self.wal_budget // 2:
            with self._lock:
                self._db.execute("PRAGMA busy_timeout=2000")
                try:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    self._db.execute("PRAGMA busy_timeout=30000")

    def enforce_cap(self, sinks: Sequence[str], batch: int = 5000) -> int:
        """Drop the oldest entries while the journal is over `max_bytes`; returns how many undelivered were lost.

        Policy (docs/reliability.md): the oldest data goes first; every entry dropped before some sink
        delivered it is counted in meta `dropped_undelivered` and logged. Entries all sinks have delivered
        go first, so the cap never costs data while sinks keep up.
        """
        if self.max_bytes <= 0:
            return 0
        # The WAL counts (the disk once filled with a WAL four times the cap): entries get the cap minus the
        # WAL's budget, which limit_wal() holds it to. Not minus the WAL's size of the moment: trimming and
        # cursor writes grow it for an instant, and the cap would then drop entries it does not have to.
        self.limit_wal()
        budget = self.max_bytes - self.wal_budget
        if self.used_bytes() <= budget:
            return 0
        lost = 0
        while (used := self.used_bytes()) > budget:
            with self._lock:
                db = self._db
                placeholders = ",".join("?" * len(sinks)) or "''"
                floor_row = db.execute(
                    f"SELECT count(*), min(seq) FROM cursors WHERE sink IN ({placeholders})", tuple(sinks)
                ).fetchone()
                # A sink without a cursor row has delivered nothing: its floor is 0, whatever the others did.
                floor = int(floor_row[1]) if sinks and floor_row[0] == len(sinks) else 0
                rows = int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
                # Drop about as many of the oldest entries as the excess holds, not a whole batch: the cap
                # must cost no more data than it has to (used/rows over-estimates an entry, so no overshoot).
                step = max(1, min(batch, (used - budget) * rows // max(used, 1)))
                oldest = db.execute("SELECT seq, coalesce(n, 1) FROM entries ORDER BY seq LIMIT ?",
                                    (step,)).fetchall()
                if not oldest:
                    break
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute("DELETE FROM entries WHERE seq <= ?", (oldest[-1][0],))
                    # a pack's entries are seq-n+1 .. seq: those after the floor were not delivered
                    undelivered = sum(max(0, min(n, s - floor)) for s, n in oldest)
                    if undelivered:
                        prev = db.execute("SELECT value FROM meta WHERE key='dropped_undelivered'").fetchone()
                        total = (int(prev[0]) if prev else 0) + undelivered
                        db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('dropped_undelivered', ?)",
                                   (str(total),))
                    db.execute("COMMIT")
                except BaseException:
                    _rollback(db)
                    raise
            lost += undelivered
        self.checkpoint()  # the deletions went to the WAL: copy them back so the WAL does not hold the space
        if lost:
            log.warning("journal over its cap of %d bytes (WAL included): dropped the %d oldest undelivered "
                        "entries (total dropped: %s). Raise journal.max_size or restore the uplink.",
                        self.max_bytes, lost, self._dropped_total())
        return lost


def _reading(r: tuple[Any, ...]) -> Reading:
    return Reading(r[3], r[4], r[6], r[5], r[2], orjson.loads(r[7]) if r[7] != "{}" else {}, r[8])


class Journal(_JournalUpkeep):
    """One SQLite connection onto the journal file. Use one instance per thread (writer or sink reader)."""

    def __init__(self, path: str | os.PathLike[str], synchronous: Synchronous = "full",
                 max_bytes: int = 0) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.max_bytes = max_bytes
        self.wal_budget = wal_budget(max_bytes)
        self._lock = threading.Lock()
        # The last pack a read stopped inside of: the next read starts there.
        self._unpacked = Pack(0, [], [], [], [])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open(synchronous)

    def _open(self, synchronous: Synchronous) -> sqlite3.Connection:
        try:
            db = self._connect(synchronous)
        except sqlite3.DatabaseError as exc:
            stamp = time.strftime('%Y%m%dT%H%M%S')
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            n = 1
            # rename() replaces an existing file: never let a second corrupt journal overwrite the first.
            while any(Path(str(aside) + suffix).exists() for suffix in ("", "-wal", "-shm")):
                n += 1
                aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    src.rename(Path(str(aside) + suffix))
            log.error("journal %s is not a readable SQLite database (%s); moved it aside to %s and started "
                      "a new one. Inspect or delete the old file once its data is recovered.",
                      self.path, exc, aside)
            self.moved_aside: Path | None = aside
            return self._connect(synchronous)
        self.moved_aside = None
        return db

    def _connect(self, synchronous: Synchronous) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            db.execute("PRAGMA busy_timeout=30000")
            # Checkpoints normally run inside whichever commit crosses 1000 WAL pages, stalling it; the
            # housekeeping thread checkpoints instead. This is the safety net for when it falls behind (a
            # starved thread in a burst): the committing thread checkpoints once the WAL holds half its
            # budget (at most 20000 pages), so the WAL stays within its share of the disk cap.
            page = int(db.execute("PRAGMA page_size").fetchone()[0])
            db.execute(f"PRAGMA wal_autocheckpoint={max(100, min(20000, self.wal_budget // 2 // page))}")
            # After a checkpoint that empties the WAL, SQLite shrinks the file to this size (it would
            # otherwise keep the file at its largest size, and the disk cap would not see that space).
            db.execute(f"PRAGMA journal_size_limit={self.wal_budget // 2}")
            quick = db.execute("PRAGMA quick_check").fetchone()
            if quick is None or quick[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {quick}")
            db.executescript(_SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(entries)")}
            for column, kind in (("n", "INTEGER"), ("ts_max", "INTEGER"), ("pack", "BLOB")):
                if column not in have:  # a journal from before packs: its rows stay as they are
                    db.execute(f"ALTER TABLE entries ADD COLUMN {column} {kind}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------------------------

    def append(self, readings: Sequence[Reading] = (), kpis: Sequence[KpiPoint] = (),
               meta: dict[str, str] | None = None) -> int:
        """Durably append readings and KPI points (and meta updates) in ONE transaction; returns the last seq.

        Two or more readings become one pack (gateway/journal_packs.py): one row, whatever their number.
        """
        packed = pack(readings) if len(readings) >= PACK_MIN else None
        rows = [reading_row(r) for r in readings] if packed is None else []
        rows.extend(kpi_row(p) for p in kpis)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if packed is not None:
                    before = db.execute("SELECT seq FROM sqlite_sequence WHERE name='entries'").fetchone()
                    n = len(readings)
                    db.execute(_INSERT_PACK, ((before[0] if before else 0) + n, packed[0], n, packed[1], packed[2]))
                if rows:
                    db.executemany(_INSERT, rows)
                if meta:
                    db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", meta.items())
                last = db.execute("SELECT seq FROM sqlite_sequence WHERE name='entries'").fetchone()
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        return int(last[0]) if last else 0

    def set_cursor(self, sink: str, seq: int) -> None:
        """Move `sink`'s cursor to `seq` (everything up to it is delivered)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO cursors(sink, seq) VALUES (?, ?)", (sink, seq))

    def dead_letter(self, sink: str, items: Iterable[tuple[int, str, str]]) -> None:
        """Keep entries a sink refused for good: (seq, reason, body). They never block the queue."""
        now = time.time_ns()
        with self._lock:
            self._db.executemany(
                "INSERT INTO dead_letters(sink, seq, reason, body, at_ns) VALUES (?, ?, ?, ?, ?)",
                [(sink, seq, reason, body, now) for seq, reason, body in items],
            )

    # -- reading -------------------------------------------------------------------------------------------

    def cursor(self, sink: str) -> int:
        """The last seq `sink` has delivered (0 when new)."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM cursors WHERE sink=?", (sink,)).fetchone()
        return int(row[0]) if row else 0

    def read_after(self, seq: int, limit: int, kind: int | None = None) -> EntryBatch:
        """Up to `limit` entries after `seq`, oldest first (only of `kind` when given)."""
        # A row holds at least one entry, so `limit` rows hold at least `limit` entries.
        sql = (f"SELECT {PACK_COLUMNS} FROM entries WHERE seq > ?" + (" AND kind = ?" if kind is not None else "")
               + " ORDER BY seq LIMIT ?")
        loads = orjson.loads
        make = Entry._make  # a reading's row (no extra) becomes its Entry as is: half the cost per row
        out = EntryBatch()
        with self._lock:
            # Rows one at a time (the cursor steps through them): `limit` rows may hold far more than `limit`
            # entries, so reading stops as soon as there are enough.
            for r in self._db.execute(sql, (seq, kind, limit) if kind is not None else (seq, limit)):
                if r[11] is not None:
                    p = self._unpacked if self._unpacked.first_seq == r[0] - r[10] + 1 else unpack(r[0], r[10], r[11])
                    start = max(0, seq - p.first_seq + 1)
                    stop = min(r[10], start + limit - len(out))
                    out.add_pack(p, start, stop)
                    if stop < r[10]:  # the next read starts inside this pack: keep it unpacked for that one
                        self._unpacked = p
                elif r[9] is None:
                    out.add(make(r[:10]))
                else:
                    out.add(Entry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], loads(r[9])))
                if len(out) >= limit:
                    break
        return out

    def last_seq(self) -> int:
        """The highest seq ever appended."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='entries'").fetchone()
        return int(row[0]) if row else 0

    def readings_since(self, ts_ns: int) -> list[Reading]:
        """Readings with event time >= ts_ns in journal order (used to rebuild open windows after a crash)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {PACK_COLUMNS} FROM entries WHERE kind=0 AND coalesce(ts_max, ts)>=? ORDER BY seq",
                (ts_ns,),
            ).fetchall()
        return [_reading(r) for r in expand_rows(rows) if r[2] >= ts_ns]

    def latest_readings(self, limit: int) -> list[Reading]:
        """The last `limit` readings appended, oldest first (to refill the duplicate check after a restart)."""
        newest: list[tuple[Any, ...]] = []  # rows, newest first, until they hold `limit` readings
        held = 0
        with self._lock:
            for row in self._db.execute(f"SELECT {PACK_COLUMNS} FROM entries WHERE kind=0 ORDER BY seq DESC"):
                if held >= limit:
                    break
                newest.append(row)
                held += row[10] or 1
        newest.reverse()
        rows = list(expand_rows(newest))
        return [_reading(r) for r in rows[max(0, len(rows) - limit):]]

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A value from the meta table."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def dead_letters(self, sink: str | None = None) -> list[tuple[str, int, str, str]]:
        """(sink, seq, reason, body) of every dead-lettered entry."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sink, seq, reason, body FROM dead_letters"
                + (" WHERE sink=?" if sink else "") + " ORDER BY id",
                (sink,) if sink else (),
            ).fetchall()
        return [(str(r[0]), int(r[1]), str(r[2]), str(r[3])) for r in rows]

    def count(self, kind: int | None = None) -> int:
        """How many entries the journal holds (of one kind)."""
        with self._lock:
            if kind is None:
                row = self._db.execute("SELECT total(coalesce(n, 1)) FROM entries").fetchone()
            else:
                row = self._db.execute("SELECT total(coalesce(n, 1)) FROM entries WHERE kind=?", (kind,)).fetchone()
        return int(row[0])
