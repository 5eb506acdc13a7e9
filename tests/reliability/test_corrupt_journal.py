"""Fault: the journal file is corrupt when the gateway starts (a torn write, a bad SD card, a wrong file).

Expected: a clear error naming the file and where it went; the file (and its -wal) moved aside, never deleted
or overwritten, byte for byte; the gateway starts on a fresh journal and works.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from devices.reading import Reading
from gateway.journal import KIND_READING, Journal
from tests.integration.helpers import GatewayProcess
from tests.reliability.support import StatusPage, device_state, serial_config, wait_for

S = 10**9
T0 = 1_767_225_600 * S


def _damaged_database(path: Path) -> bytes:
    """A real journal with data, then its pages overwritten in the middle (the header stays valid)."""
    j = Journal(path)
    j.append([Reading("d", "pm2_5", float(i), "ug/m3", T0 + i * S) for i in range(2000)])
    j.close()
    data = bytearray(path.read_bytes())
    assert data[:16] == b"SQLite format 3\x00"
    for offset in range(4096, len(data) - 4096, 4096):
        data[offset + 100:offset + 400] = os.urandom(300)
    path.write_bytes(bytes(data))
    return bytes(data)


def test_corrupt_journals_are_moved_aside_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    first = b"this is not a database, it is a text file someone copied here\n" * 20
    path.write_bytes(first)
    j1 = Journal(path)
    assert j1.moved_aside is not None and j1.moved_aside.read_bytes() == first
    j1.close()
    # Corrupt again within the same second: the second file must not replace the first one aside.
    path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    second = _damaged_database(path)
    j2 = Journal(path)
    assert j2.moved_aside is not None and j2.moved_aside != j1.moved_aside
    assert j1.moved_aside.read_bytes() == first
    assert j2.moved_aside.read_bytes() == second
    # The fresh journal works.
    j2.append([Reading("d", "pm10", 1.0, "ug/m3", T0)])
    assert j2.count(KIND_READING) == 1
    j2.close()
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))]
    assert sorted(aside) == sorted([j1.moved_aside, j2.moved_aside])


def test_gateway_starts_on_a_corrupt_journal_with_a_clear_error(tmp_path: Path) -> None:
    from devices import pms5003
    from simulators.pty_device import PtyDevice

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    journal = data_dir / "journal.sqlite"
    original = _damaged_database(journal)
    with sqlite3.connect(journal) as db:  # really unreadable, not just a different file
        try:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError:
            result = "error"
    assert result != "ok"
    device = PtyDevice(link=tmp_path / "ttyPMS")
    status = StatusPage()
    gateway = GatewayProcess(serial_config(tmp_path, "corrupt", status, str(tmp_path / "ttyPMS")),
                             tmp_path / "gateway.log").start()
    try:
        def flowing() -> bool:
            device.write(pms5003.encode({"pm2_5": 12}))
            return bool(device_state(status, "pm-1").get("readings", 0) > 0)

        wait_for(flowing, 30, "readings flowing into the new journal")
    finally:
        code = gateway.stop()
        device.close()
    log = gateway.log()
    assert code == 0, log
    moved = [p for p in data_dir.iterdir() if p.name.startswith("journal.sqlite.corrupt-")
             and not p.name.endswith(("-wal", "-shm"))]
    assert len(moved) == 1
    assert moved[0].read_bytes() == original  # moved, byte for byte, not deleted
    assert f"journal {journal} is not a readable SQLite database" in log
    assert f"moved it aside to {moved[0]}" in log
    assert f"started with a new journal; the unreadable one is at {moved[0]}" in log
    fresh = Journal(journal)
    assert fresh.moved_aside is None and fresh.count(KIND_READING) > 0
    fresh.close()
