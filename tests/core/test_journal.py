"""Journal: durable append, per-sink cursors, trimming, the disk cap, and a corrupt file moved aside."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from aggregators.kpi import KpiPoint
from devices.reading import Reading
from gateway.journal import KIND_KPI, KIND_READING, Journal

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def _readings(n: int, start: int = 0) -> list[Reading]:
    return [Reading("dev-1", "pm2_5", float(i), "ug/m3", T0 + (start + i) * 10**9, {"site": "a b"})
            for i in range(n)]


def test_append_and_read_back_in_order(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    kpi = KpiPoint("pm2_5", "dev-1", "1m", T0, T0 + 60 * 10**9, "ug/m3", 4.5, {"count": 10, "mean": 4.5}, {}, False)
    last = j.append(_readings(10), [kpi])
    assert last == 11
    entries = j.read_after(0, 100)
    assert [e.seq for e in entries] == list(range(1, 12))
    assert [e.value for e in entries[:10]] == [float(i) for i in range(10)]
    assert entries[0].tags == {"site": "a b"} and entries[0].kind == KIND_READING
    back = entries[10].as_kpi()
    assert entries[10].kind == KIND_KPI
    assert (back.window, back.end_ns, back.fields["count"], back.valid) == ("1m", T0 + 60 * 10**9, 10, False)


def test_cursors_are_per_sink_and_survive_reopen(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    j.append(_readings(5))
    j.set_cursor("influx", 3)
    j.set_cursor("feed", 5)
    j.close()
    j2 = Journal(tmp_path / "j.sqlite")
    assert (j2.cursor("influx"), j2.cursor("feed"), j2.cursor("new")) == (3, 5, 0)
    assert [e.seq for e in j2.read_after(j2.cursor("influx"), 10)] == [4, 5]


def test_sigkill_after_append_loses_nothing(tmp_path: Path) -> None:
    """A process killed right after append() returned: every appended reading is in the file."""
    path = tmp_path / "j.sqlite"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from gateway.journal import Journal
        from devices.reading import Reading
        j = Journal({str(path)!r}, synchronous="full")
        for b in range(20):
            j.append([Reading("d", "pm2_5", float(b * 100 + i), "ug/m3", {T0} + (b * 100 + i) * 10**9)
                      for i in range(100)])
        print("appended", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9 and "appended" in proc.stdout
    j = Journal(path)
    assert j.count(KIND_READING) == 2000
    assert j.last_seq() == 2000


def test_trim_keeps_what_a_sink_has_not_delivered(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    for r in _readings(10):
        j.append([r])  # one reading per append: plain rows, trimmed one entry at a time
    assert j.trim(["a", "b"], keep_readings_since_ns=T0 + 10**12) == 0  # no cursor yet: keep everything
    j.set_cursor("a", 8)
    j.set_cursor("b", 4)
    assert j.trim(["a", "b"], keep_readings_since_ns=T0 + 10**12) == 4
    assert [e.seq for e in j.read_after(0, 100)] == [5, 6, 7, 8, 9, 10]


def test_trim_keeps_readings_of_open_windows(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    for r in _readings(10):
        j.append([r])
    j.set_cursor("a", 10)
    assert j.trim(["a"], keep_readings_since_ns=T0 + 6 * 10**9) == 6
    assert [r.value for r in j.readings_since(0)] == [6.0, 7.0, 8.0, 9.0]


def test_disk_cap_drops_oldest_and_counts_exactly(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite", max_bytes=200_000)
    for b in range(40):
        j.append(_readings(200, start=b * 200))
    j.set_cursor("sink", 1000)
    used_before = j.used_bytes()
    assert used_before > 200_000
    lost = j.enforce_cap(["sink"], batch=500)
    assert j.used_bytes() <= 200_000
    remaining = j.read_after(0, 10**6)
    first_kept = remaining[0].seq
    # Every entry below the first kept one is gone; those above the cursor were undelivered and counted.
    assert lost == first_kept - 1 - 1000
    assert j.get_meta("dropped_undelivered") == str(lost)
    assert [e.seq for e in remaining] == list(range(first_kept, 8001))


def test_corrupt_file_is_moved_aside_not_deleted(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is not a database" * 200)
    j = Journal(path)
    assert j.moved_aside is not None and j.moved_aside.exists()
    assert j.moved_aside.read_bytes().startswith(b"this is not a database")
    j.append(_readings(1))
    assert j.count() == 1
    assert os.path.exists(path)


def test_a_batch_is_one_pack_whose_readings_are_entries_of_their_own(tmp_path: Path) -> None:
    """Two or more readings appended at once are one row; sinks, cursors and trimming still count entries."""
    j = Journal(tmp_path / "j.sqlite")
    tagged = [Reading("dev-2", "no2", 7.0, "ug/m3", T0, {"site": "x"}, "clock_unsynced")]
    assert j.append(_readings(4)) == 4
    assert j.append(tagged) == 5  # one reading: a plain row
    assert j.append(_readings(3, start=4) + tagged) == 9
    rows = j._db.execute("SELECT seq, n FROM entries ORDER BY seq").fetchall()
    assert rows == [(4, 4), (5, None), (9, 4)]
    assert j.count() == j.count(KIND_READING) == 9
    everything = j.read_after(0, 100)
    assert [e.seq for e in everything] == list(range(1, 10))
    assert [(e.value, e.tags, e.quality) for e in everything[-2:]] == [(2.0, {"site": "a b"}, "good"),
                                                                     (7.0, {"site": "x"}, "clock_unsynced")]
    # A cursor inside a pack, and a limit that ends inside one.
    assert [e.seq for e in j.read_after(2, 3)] == [3, 4, 5]
    assert [e.seq for e in j.read_after(6, 100)] == [7, 8, 9]
    assert [e.seq for e in j.read_after(0, 100, KIND_KPI)] == []
    assert [r.value for r in j.latest_readings(3)] == [1.0, 2.0, 7.0]
    assert [r.ts for r in j.readings_since(T0 + 5 * 10**9)] == [T0 + 5 * 10**9, T0 + 6 * 10**9]
    # A pack goes only as a whole: delivered up to its middle, it stays.
    j.set_cursor("a", 7)
    assert j.trim(["a"], keep_readings_since_ns=T0 + 10**12) == 5
    assert [e.seq for e in j.read_after(0, 100)] == [6, 7, 8, 9]
    j.set_cursor("a", 9)
    assert j.trim(["a"], keep_readings_since_ns=T0 + 10**12) == 4 and j.count() == 0


def test_a_journal_from_before_packs_gets_them_on_open(tmp_path: Path) -> None:
    """A journal written before packs existed: its rows read as they did, new batches are packed beside them."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind INTEGER NOT NULL, ts INTEGER NOT NULL,
            device_id TEXT NOT NULL, quantity TEXT NOT NULL, unit TEXT NOT NULL, value REAL NOT NULL,
            tags TEXT NOT NULL, quality TEXT NOT NULL, extra TEXT);
        CREATE TABLE cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    """)
    db.executemany("INSERT INTO entries(kind, ts, device_id, quantity, unit, value, tags, quality, extra)"
                   " VALUES (0, ?, 'dev-1', 'pm2_5', 'ug/m3', ?, '{}', 'good', NULL)",
                   [(T0 + i * 10**9, float(i)) for i in range(3)])
    db.execute("INSERT INTO cursors VALUES ('influx', 2)")
    db.commit()
    db.close()
    j = Journal(path)
    assert j.append(_readings(2, start=3)) == 5
    assert [(e.seq, e.value) for e in j.read_after(j.cursor("influx"), 10)] == [(3, 2.0), (4, 0.0), (5, 1.0)]
    assert [r.value for r in j.readings_since(0)] == [0.0, 1.0, 2.0, 0.0, 1.0]


def test_dead_letters_keep_their_pack_until_requeued(tmp_path: Path) -> None:
    """An entry dead-lettered inside a pack keeps the pack from trimming; requeue copies that entry alone."""
    from gateway.fieldcmds import requeue_dead_letters
    from gateway.settings import Settings

    j = Journal(tmp_path / "journal.sqlite")
    j.append(_readings(5))
    j.dead_letter("a", [(3, "refused", "body")])
    j.set_cursor("a", 5)
    assert j.trim(["a"], keep_readings_since_ns=T0 + 10**12) == 0
    settings = Settings.model_validate({"gateway": {"data_dir": str(tmp_path)}})
    assert settings.journal_path == tmp_path / "journal.sqlite"
    assert requeue_dead_letters(settings, out=io.StringIO()) == 0
    again = j.read_after(5, 10)
    assert [(e.seq, e.value, e.tags) for e in again] == [(6, 2.0, {"site": "a b"})]
    assert j.trim(["a"], keep_readings_since_ns=T0 + 10**12) == 5


def test_the_field_commands_reader_counts_and_unpacks_entries_of_packs(tmp_path: Path) -> None:
    """backlog counts entries after a cursor inside a pack; after/span/between give one row per entry."""
    from gateway.fieldcmds import JournalReader

    j = Journal(tmp_path / "j.sqlite")
    j.append(_readings(6))  # seqs 1..6 in one pack, event times T0 .. T0+5 s
    j.append(_readings(1, start=6))  # seq 7, a plain row
    j.set_cursor("influx", 4)
    reader = JournalReader(tmp_path / "j.sqlite")
    try:
        backlog = reader.backlog("influx", None)
        assert (backlog.waiting, backlog.dead_letters) == (3, 0)
        assert reader.backlog("kpi-only", KIND_KPI).waiting == 0
        assert [r[0] for r in reader.after(2)] == [3, 4, 5, 6, 7]
        assert [r[0] for r in reader.after(2, limit=2)] == [3, 4]
        assert [r[0] for r in reader.span(3, 7, 100)] == [4, 5, 6, 7]
        assert [r[0] for r in reader.span(0, 7, 3, newest_first=True)] == [7, 6, 5]
        between = sorted(r[2] for r in reader.between(T0 + 2 * 10**9, T0 + 5 * 10**9))
        assert between == [T0 + i * 10**9 for i in (2, 3, 4)]
        assert reader.after(0)[1][1:9] == (KIND_READING, T0 + 10**9, "dev-1", "pm2_5", "ug/m3", 1.0, '{"site":"a b"}',
                                           "good")
    finally:
        reader.close()


def test_a_pack_gives_values_back_as_the_real_column_did(tmp_path: Path) -> None:
    """Ints (counts) and numpy floats come back as plain floats, as from a plain row's REAL column."""
    import numpy as np

    j = Journal(tmp_path / "j.sqlite")
    j.append([Reading("d", "vehicles", 5, "1", T0), Reading("d", "pm2_5", np.float64(2.5), "ug/m3", T0)])
    j.append([Reading("d", "vehicles", 7, "1", T0 + 1)])
    values = [e.value for e in j.read_after(0, 10)]
    assert values == [5.0, 2.5, 7.0] and all(type(v) is float for v in values)
