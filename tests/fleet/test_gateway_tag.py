"""The `gateway` tag in line protocol (issue 14 part 1), checked by a real influxd 1.6.7: every point names the
gateway that wrote it, a reading's own `gateway` tag gives way to it, and one series per gateway comes back."""

from __future__ import annotations

import time
from pathlib import Path

from aggregators.kpi import KpiPoint
from devices.reading import Reading
from gateway.journal import Journal
from gateway.lineproto import entry_line
from gateway.sinks.influx import InfluxV1Sink
from tests.servers import InfluxV1

T0 = 1_700_000_000 * 10**9


def test_every_point_carries_the_gateway_tag(tmp_path: Path, influx_v1: InfluxV1) -> None:
    db = f"gwtag{time.time_ns() % 10**9}"
    influx_v1.create_database(db)
    for gw in ("kit a", "kit-b"):  # a space in the id is escaped like any tag value
        journal = Journal(tmp_path / f"{gw}.sqlite")
        journal.append([Reading("air-pm-1", "pm2_5", 10.0 + i, "ug/m3", T0 + i * 10**9,
                                {"gateway": "spoofed", "site": "plaza"}) for i in range(3)])
        journal.append(kpis=[KpiPoint("pm2_5", "air-pm-1", "1m", T0, T0 + 60 * 10**9, "ug/m3", 11.0,
                                      {"count": 3}, {"gateway": "spoofed"})])
        entries = journal.read_after(0, 100)
        lines = [entry_line(e, gw) for e in entries]
        tag = gw.replace(" ", "\\ ")
        assert all(f",gateway={tag}," in line and "spoofed" not in line for line in lines), lines
        sink = InfluxV1Sink("t", influx_v1.url, db, gateway_id=gw)
        sink.write(entries)
        sink.close()
        journal.close()
    for gw in ("kit a", "kit-b"):
        rows = influx_v1.query(f"SELECT value, site FROM reading WHERE gateway='{gw}' AND device_id='air-pm-1'",
                               db=db)
        assert [r["value"] for r in rows] == [10.0, 11.0, 12.0]
        assert {r["site"] for r in rows} == {"plaza"}
        kpis = influx_v1.query(f"SELECT value FROM kpi WHERE gateway='{gw}'", db=db)
        assert [(r["time"], r["value"]) for r in kpis] == [(T0, 11.0)]
    assert influx_v1.query("SELECT value FROM reading WHERE gateway='spoofed'", db=db) == []
    values = influx_v1.query('SHOW TAG VALUES FROM kpi WITH KEY = "gateway"', db=db)
    assert sorted(str(r["value"]) for r in values) == ["kit a", "kit-b"]



def test_without_a_gateway_id_the_line_is_unchanged(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.append([Reading("d1", "pm2_5", 3.0, "ug/m3", 5, {"gateway": "lora-gw-7"})])
    (entry,) = journal.read_after(0, 10)
    journal.close()
    # A single kit's schema (and a reading's own `gateway` tag, e.g. a LoRa gateway) as before.
    assert entry_line(entry) == "reading,device_id=d1,gateway=lora-gw-7,quantity=pm2_5,unit=ug/m3 value=3.0 5"
