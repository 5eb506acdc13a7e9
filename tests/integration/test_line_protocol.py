"""Line protocol formatted by citygw is parsed back exactly by real influxd (tags and fields with spaces,
commas, equals signs, quotes, backslashes and unicode), and the sinks classify server errors."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import orjson
import pytest
import urllib3

from aggregators.kpi import KpiPoint
from devices.reading import Reading
from gateway.journal import Entry, Journal, reading_row
from gateway.lineproto import entry_line, entry_lines
from gateway.metrics import Metrics
from gateway.sinks.base import Action, Delivery, SinkError
from gateway.sinks.http_pool import http_pool
from gateway.sinks.influx import InfluxV1Sink, InfluxV2Sink
from tests.integration.helpers import wait_for
from tests.reliability.support import FaultProxy
from tests.servers import InfluxV1, VictoriaMetrics

T0 = 1_767_225_600_000_000_000

NASTY = ["plaza mayor", "a,b", "k=v", 'say "hi"', "trailing\\", "Zürich – Ωmega 東京", "tab\there", "back\\slash"]


def test_tags_and_fields_round_trip_through_influxd(tmp_path: Path, influx_v1: InfluxV1) -> None:
    db = f"lp_{time.time_ns() % 10**9}"
    influx_v1.create_database(db)
    j = Journal(tmp_path / "j.sqlite")
    j.append([Reading(f"dev {i}", "pm2_5", float(i) + 0.25, "ug/m3", T0 + i, {"site": s, "odd key,=": s})
              for i, s in enumerate(NASTY)],
             [KpiPoint("pm2_5", "dev, kpi", "1h", T0, T0 + 3600 * 10**9, "ug/m3", 1.5,
                       {"count": 7, "mean": 1.5, "coverage": 0.5}, {"site": NASTY[3]}, valid=False)])
    sink = InfluxV1Sink("t", influx_v1.url, db)
    sink.write(j.read_after(0, 100))
    rows = influx_v1.query('SELECT value, device_id, site, "odd key,=" FROM reading', db=db)
    assert [r["value"] for r in rows] == [i + 0.25 for i in range(len(NASTY))]
    assert [r["device_id"] for r in rows] == [f"dev {i}" for i in range(len(NASTY))]
    # Tag values keep every character, except that a trailing backslash (which would escape the separator
    # after it) is stored as a trailing space (documented in README's schema section).
    expected = [s[:-1] + " " if s.endswith("\\") else s for s in NASTY]
    assert [r["site"] for r in rows] == expected
    assert [r["odd key,="] for r in rows] == [r["site"] for r in rows]
    (kpi,) = influx_v1.query('SELECT * FROM kpi', db=db)
    assert (kpi["device_id"], kpi["count"], kpi["valid"], kpi["window"], kpi["site"]) == \
        ("dev, kpi", 7, "false", "1h", 'say "hi"')


def test_bad_point_is_isolated_and_everything_else_written(tmp_path: Path, influx_v1: InfluxV1) -> None:
    """A field type conflict makes influxd answer 400; the sink asks the core to split."""
    db = f"conflict_{time.time_ns() % 10**9}"
    influx_v1.create_database(db)
    influx_v1.write(f"reading,device_id=d,quantity=pm2_5,unit=ug/m3 value=\"text\" {T0 - 10**9}", db=db)
    j = Journal(tmp_path / "j.sqlite")
    j.append([Reading("d", "pm2_5", 1.0, "ug/m3", T0)])
    sink = InfluxV1Sink("t", influx_v1.url, db)
    with pytest.raises(SinkError) as info:
        sink.write(j.read_after(0, 10))
    assert info.value.action is Action.SPLIT and "400" in info.value.reason


def test_unreachable_server_is_a_retry() -> None:
    sink = InfluxV1Sink("t", "http://127.0.0.1:9", "db", timeout_s=2)
    with pytest.raises(SinkError) as info:
        sink.write([])
    assert info.value.action is Action.RETRY and "cannot reach" in info.value.reason


def test_v2_client_writes_to_victoria_metrics(tmp_path: Path, victoria: VictoriaMetrics) -> None:
    j = Journal(tmp_path / "j.sqlite")
    device = f"v2-{time.time_ns() % 10**9}"
    j.append([Reading(device, "noise_laeq", 55.5 + i, "dBA", T0 + i * 10**9, {"site": "Zürich"}) for i in range(3)])
    sink = InfluxV2Sink("t", victoria.url, "org", "bucket", "token")
    sink.write(j.read_after(0, 10))
    sink.close()
    (series,) = victoria.export(f'{{__name__="reading_value",device_id="{device}"}}')
    assert series.labels["site"] == "Zürich" and series.labels["unit"] == "dBA"
    assert series.points() == [((T0 + i * 10**9) // 10**6, 55.5 + i) for i in range(3)]


def test_line_format_is_stable() -> None:
    j_entry = Reading("d 1", "pm2_5", 3.0, "ug/m3", 5, {"b": "x y", "a": "1"})
    row = reading_row(j_entry)
    e = Entry(1, row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], None)
    assert entry_line(e) == r"reading,a=1,b=x\ y,device_id=d\ 1,quantity=pm2_5,unit=ug/m3 value=3.0 5"


def test_a_batch_formats_as_its_entries_do(tmp_path: Path) -> None:
    """entry_lines (the sinks' per-batch path) gives exactly entry_line's line for every entry, packs included."""
    j = Journal(tmp_path / "j.sqlite")
    readings = [Reading(f"dev {i % 3}", ("pm2_5", "no2")[i % 2], float(i) + 0.1, "ug/m3", T0 + i,
                        {"site": NASTY[i % len(NASTY)]} if i % 4 else {}, "clock_unsynced" if i == 5 else "good")
                for i in range(24)]
    j.append(readings, [KpiPoint("pm2_5", "dev 0", "1m", T0, T0 + 60 * 10**9, "ug/m3", 2.5, {"count": 3}, {},
                                 True)])
    j.append(readings[:1])
    entries = j.read_after(0, 100)
    assert len(entries) == 26
    for gateway in ("", "kit 7"):
        assert entry_lines(entries, gateway) == [entry_line(e, gateway) for e in entries]
    # Reads that start and stop inside the pack: the pack's columns are formatted only from the cursor on.
    for after, limit in ((3, 10), (0, 1), (23, 2), (24, 5), (10, 100)):
        part = j.read_after(after, limit)
        first, last = part[0], part[-1]  # built alone, before the batch is ever materialized
        assert [e.seq for e in part] == list(range(after + 1, min(26, after + limit) + 1))
        every = list(part)
        assert (first, last) == (every[0], every[-1])
        assert entry_lines(part, "kit 7") == [entry_line(e, "kit 7") for e in part]


def _write_requests(influx: InfluxV1) -> int:
    """Write requests influxd has answered since it started (its httpd statistics)."""
    with urllib.request.urlopen(f"{influx.url}/debug/vars", timeout=10) as resp:
        stats = orjson.loads(resp.read())
    return sum(int(v["values"].get("writeReq", 0)) for k, v in stats.items() if k.startswith("httpd"))


def test_linger_makes_fewer_larger_writes_while_readings_keep_coming(tmp_path: Path, influx_v1: InfluxV1) -> None:
    """A reading appended every 10 ms for 1.5 s, the sink woken after each (as the pipeline does): with a linger of
    0.5 s, a write that did not fill its batch is followed by the next only 0.5 s later, so a handful of writes
    carry all 150 readings (without it, about one write per append)."""
    db = f"linger_{time.time_ns() % 10**8}"
    influx_v1.create_database(db)
    journal = Journal(tmp_path / "j.sqlite")
    delivery = Delivery(InfluxV1Sink("influx", influx_v1.url, db), Journal(tmp_path / "j.sqlite"), Metrics(),
                        flush_interval_s=5.0, linger_s=0.5)
    delivery.start()
    try:
        before = _write_requests(influx_v1)
        started = time.monotonic()
        for i in range(150):
            journal.append([Reading("dev-1", "pm2_5", float(i), "ug/m3", T0 + i * 10**9)])
            delivery.wake.set()
            time.sleep(0.01)
        appending_s = time.monotonic() - started  # 1.5 s, more on a loaded machine
        wait_for(lambda: len(influx_v1.query("SELECT value FROM reading", db=db)) == 150, 30, "150 readings")
        writes = _write_requests(influx_v1) - before
        # One write at the first append, then at most one per 0.5 s while appends go on, and the last one after.
        assert writes <= 2 + appending_s / 0.5, f"{writes} writes in {appending_s:.1f} s of appends"
    finally:
        delivery.stop()
        delivery.journal.close()
        journal.close()


def test_writes_share_one_kept_alive_connection(tmp_path: Path, influx_v1: InfluxV1) -> None:
    """Every write and the database creation go over one TCP connection (urllib opened one per request)."""
    db = f"keepalive_{time.time_ns() % 10**8}"
    proxy = FaultProxy(influx_v1.url)
    sink = InfluxV1Sink("t", proxy.url, db, create_database=True)
    journal = Journal(tmp_path / "j.sqlite")
    try:
        for i in range(3):
            journal.append([Reading("dev-1", "pm2_5", float(i), "ug/m3", T0 + i * 10**9)])
        with pytest.raises(SinkError, match="was missing: created it"):
            sink.write(journal.read_after(0, 1))
        for seq in range(3):
            sink.write(journal.read_after(seq, 1))
        assert len(influx_v1.query("SELECT value FROM reading", db=db)) == 3
        assert [status for _, _, status in proxy.log] == [404, 200, 204, 204, 204]  # write, CREATE, 3 writes
        assert proxy.connections == 1
    finally:
        sink.close()
        proxy.close()
        journal.close()


def test_http_sinks_use_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.city.example:3128")
    monkeypatch.setenv("no_proxy", "influx.local")
    proxied = http_pool("http://influx.city.example:8086/write")
    assert isinstance(proxied, urllib3.ProxyManager) and proxied.proxy is not None
    assert (proxied.proxy.host, proxied.proxy.port) == ("proxy.city.example", 3128)
    assert not isinstance(http_pool("http://influx.local:8086/write"), urllib3.ProxyManager)
    monkeypatch.delenv("http_proxy")
    assert not isinstance(http_pool("http://influx.city.example:8086/write"), urllib3.ProxyManager)
