"""Journal: durable append, per-sink cursors, trimming, the disk cap, and a corrupt file moved aside."""

from __future__ import annotations

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
    j.append(_readings(10))
    assert j.trim(["a", "b"], keep_readings_since_ns=T0 + 10**12) == 0  # no cursor yet: keep everything
    j.set_cursor("a", 8)
    j.set_cursor("b", 4)
    assert j.trim(["a", "b"], keep_readings_since_ns=T0 + 10**12) == 4
    assert [e.seq for e in j.read_after(0, 100)] == [5, 6, 7, 8, 9, 10]


def test_trim_keeps_readings_of_open_windows(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    j.append(_readings(10))
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
