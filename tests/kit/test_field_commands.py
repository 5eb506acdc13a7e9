"""Commands for the field: `citygw backlog` (with dead letters and `--requeue`), `export` (`tail`: test_tail.py)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregators.kpi import KpiPoint
from devices.reading import Reading
from gateway.app import Gateway
from gateway.cli import main
from gateway.fieldcmds import JournalReader, export_csv, parse_when, print_backlog, requeue_dead_letters
from gateway.journal import Journal
from gateway.settings import Settings, load_settings
from gateway.sinks.local_store import LocalStoreSink
from tests.servers import InfluxV1, free_port

REPO = Path(__file__).resolve().parents[2]


def _settings(tmp_path: Path, text: str = "") -> tuple[Settings, Path]:
    path = tmp_path / "kit.toml"
    path.write_text(f'[gateway]\nid = "t"\ndata_dir = "{tmp_path}/data"\nstatus_listen = ""\n\n' + text)
    return load_settings(path, env={}), path


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_backlog_of_an_unreachable_sink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings, path = _settings(
        tmp_path, f'[[influx]]\napi = "v1"\nurl = "http://127.0.0.1:{free_port()}"\ndatabase = "d"\n')
    gateway = Gateway(settings)
    gateway.start()
    try:
        now = time.time_ns()
        gateway.pipeline.readings([Reading("pm1", "pm2_5", float(i), "ug/m3", now - (10 - i) * 10**9)
                                   for i in range(5)])
        _wait(lambda: gateway.pipeline.accepted == 5, 30, "5 readings journaled")
    finally:
        gateway.stop()
    assert main(["backlog", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    name = f"influx-v1:http://127.0.0.1:{settings.influx[0].url.rsplit(':', 1)[1]}/d"
    assert f"sink {name}: 5 entries waiting, oldest from " in out and " s ago); 0 dead letter(s)" in out


def test_dead_letter_listed_then_requeued_after_fixing_the_cause(tmp_path: Path, influx_v1: InfluxV1) -> None:
    db = f"field_{uuid.uuid4().hex[:8]}"
    influx_v1.create_database(db)
    now = time.time_ns()
    # The cause: `value` already holds strings in this database, so a float is refused (HTTP 400, for good).
    influx_v1.write(f'reading,device_id=other,quantity=x,unit=y value="text" {now - 10**9}', db=db)
    settings, path = _settings(tmp_path, f'[[influx]]\napi = "v1"\nurl = "{influx_v1.url}"\ndatabase = "{db}"\n')
    gateway = Gateway(settings)
    gateway.start()
    try:
        gateway.pipeline.readings([Reading("pm1", "pm2_5", 12.5, "ug/m3", now)])

        def dead() -> list[tuple[str, int, str, str, int]]:
            reader = JournalReader(settings.journal_path)
            try:
                return reader.dead_letters()
            finally:
                reader.close()

        letters = _wait(dead, 60, "a dead letter")
        assert len(letters) == 1 and "field type conflict" in letters[0][2]
        gateway.pipeline.housekeeping()  # a trim now must keep the dead-lettered entry for a requeue
        out = io.StringIO()
        print_backlog(settings, out)
        text = out.getvalue()
        assert "1 dead letter(s)" in text and "dead letters (1)" in text and "field type conflict" in text
        assert "pm2_5" in text and "12.5" in text  # the body: the refused line itself

        influx_v1.drop_database(db)  # the fix: a database without the conflicting field
        influx_v1.create_database(db)
        out = io.StringIO()
        assert requeue_dead_letters(settings, None, out) == 0
        assert "requeued 1 entry" in out.getvalue()
        rows = _wait(lambda: influx_v1.query("SELECT value FROM reading WHERE device_id='pm1'", db=db), 60,
                     "the requeued point in InfluxDB")
        assert [r["value"] for r in rows] == [12.5]
    finally:
        gateway.stop()
    assert main(["backlog", "-c", str(path)]) == 0
    assert not dead()


def test_export_reads_store_and_journal_once_each(tmp_path: Path) -> None:
    settings, _ = _settings(tmp_path, '[[devices]]\nid = "pm1"\nkind = "pms5003"\nport = "/dev/null"\n')
    day1 = parse_when("2026-03-01T10:00", "UTC")
    day2 = parse_when("2026-03-02T10:00", "UTC")
    readings = [Reading("pm1", "pm2_5", 5.0, "ug/m3", day1), Reading("pm2", "pm2_5", 7.0, "ug/m3", day1 + 10**9),
                Reading("pm1", "pm2_5", 6.0, "ug/m3", day2)]
    kpi = KpiPoint("pm2_5", "pm1", "1h", day1, day1 + 3600 * 10**9, "ug/m3", 5.0, {"count": 1}, valid=False)
    # Day 1 went through the local store sink (then left the journal); day 2 is still only in the journal.
    scratch = Journal(tmp_path / "scratch.sqlite")
    scratch.append(readings[:2], kpis=[kpi])
    LocalStoreSink("local-store", settings.gateway.data_dir / "store").write(scratch.read_after(0, 100))
    scratch.close()
    journal = Journal(settings.journal_path)
    journal.append(readings[1:])  # pm2's reading is in both: written once
    journal.close()

    out = io.StringIO()
    n = export_csv(settings, parse_when("2026-03-01", "UTC"), parse_when("2026-03-03", "UTC"), out=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert n == 4 == len(rows)
    assert [(r["type"], r["device_id"], r["name"], float(r["value"])) for r in rows] == [
        ("kpi", "pm1", "pm2_5", 5.0), ("reading", "pm1", "pm2_5", 5.0), ("reading", "pm2", "pm2_5", 7.0),
        ("reading", "pm1", "pm2_5", 6.0)]
    assert rows[0]["window"] == "1h" and rows[0]["valid"] == "False"
    assert rows[1]["time"] == "2026-03-01T10:00:00.000Z"

    out = io.StringIO()
    export_csv(settings, parse_when("2026-03-02", "UTC"), parse_when("2026-03-03", "UTC"), ["pm1"], out)
    assert [r["ts_ns"] for r in csv.DictReader(io.StringIO(out.getvalue()))] == [str(day2)]


def test_export_cli_to_a_file_and_bad_dates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings, path = _settings(tmp_path, '[[devices]]\nid = "pm1"\nkind = "pms5003"\nport = "/dev/null"\n')
    journal = Journal(settings.journal_path)
    journal.append([Reading("pm1", "co2", 420.0, "ppm", parse_when("2026-05-05T12:00:00+02:00", "UTC"))])
    journal.close()
    target = tmp_path / "out.csv"
    assert main(["export", "-c", str(path), "--from", "2026-05-05", "--to", "2026-05-06", "-o", str(target)]) == 0
    rows = list(csv.DictReader(target.open()))
    assert len(rows) == 1 and rows[0]["time"] == "2026-05-05T10:00:00.000Z" and rows[0]["unit"] == "ppm"
    assert "1 row(s) exported" in capsys.readouterr().err
    assert main(["export", "-c", str(path), "--from", "yesterday", "--to", "2026-05-06"]) == 2
    assert "is not a date" in capsys.readouterr().err


def test_parse_when_uses_the_gateway_timezone() -> None:
    utc = datetime(2026, 7, 1, 22, 0, tzinfo=UTC)
    assert parse_when("2026-07-02", "Europe/Madrid") == int(utc.timestamp()) * 10**9


def _simulate(stderr_tty: bool) -> tuple[int, str, str]:
    """Run `citygw simulate` for one day of the air kit; stderr on a pty (80×24) or a pipe."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    cmd = [sys.executable, "-m", "gateway.cli", "simulate", "--kit", str(REPO / "config/kits/air.toml"),
           "--days", "1"]
    if not stderr_tty:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
        return proc.returncode, proc.stdout, proc.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, cwd=REPO, text=True)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        out = child.stdout.read() if child.stdout else ""
        code = child.wait(timeout=300)
    finally:
        os.close(master)
    return code, out, b"".join(chunks).decode("utf-8", "replace")


def test_simulate_shows_progress_on_a_terminal_and_is_quiet_when_piped() -> None:
    code, out, err = _simulate(stderr_tty=True)
    assert code == 0 and "simulated 1 day(s)" in out
    bars = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("simulating:")]
    assert bars, err
    assert "1.0/1 days" in bars[-1] and "readings/s" in bars[-1] and "100%" in bars[-1]

    code, out, err = _simulate(stderr_tty=False)
    assert code == 0 and "simulated 1 day(s)" in out
    assert err == ""  # nothing but the result when piped


def test_backlog_reads_a_journal_whose_path_has_uri_characters(tmp_path: Path) -> None:
    odd = tmp_path / "kit #1 ?x"
    odd.mkdir()
    path = odd / "kit.toml"
    path.write_text(f'[gateway]\nid = "t"\ndata_dir = "{odd}/data"\nstatus_listen = ""\n')
    settings = load_settings(path, env={})
    journal = Journal(settings.journal_path)
    journal.append([Reading("pm1", "pm2_5", 1.0, "ug/m3", time.time_ns())])
    journal.close()
    out = io.StringIO()
    print_backlog(settings, out)
    assert "sink local-store: 1 entry waiting" in out.getvalue()


def test_backlog_names_every_configured_sink_as_the_gateway_does(tmp_path: Path) -> None:
    from gateway.fieldcmds import sinks_of

    settings, _ = _settings(tmp_path, '[[devices]]\nid = "pm1"\nkind = "pms5003"\nport = "/dev/null"\nlat = 40.4\n'
                                      'lon = -3.7\n\n[[influx]]\napi = "v1"\nurl = "http://127.0.0.1:1"\n'
                                      'database = "d"\n\n[[sensorthings]]\nurl = "http://127.0.0.1:2/v1.1"\n\n'
                                      '[local_store]\nenabled = true\n')
    gateway = Gateway(settings)
    try:
        built = [(d.sink.name, d.sink.only_kind) for d in gateway.deliveries]
    finally:
        gateway.stop()
    assert sorted(sinks_of(settings), key=str) == sorted(built, key=str) and len(built) == 3
