"""`citygw run` with a `[[sensorthings]]` sink against a real SensorThings server (django-ogc-sensorthings on
Django + SQLite, tests/feeds/sensorthings_server.py), read back with Fraunhofer's frost-sta-client and compared
with the KPI points the same gateway wrote to a real InfluxDB 1.x: every Thing, Datastream and Observation.
A server outage, a gateway crash and a lost sink cursor lose nothing and duplicate nothing."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import frost_sta_client as fsc

from devices import json_mapping
from gateway.sinks.sta_model import OM_MEASUREMENT
from tests.feeds.sensorthings_server import SensorThingsServer
from tests.integration.helpers import GatewayProcess, publish_all, wait_for
from tests.reliability.support import StatusPage
from tests.servers import InfluxV1, Mosquitto, free_port

S = 10**9
EEA_PM25 = "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/6001"


def _config(tmp: Path, gw: str, mosquitto: Mosquitto, influx: InfluxV1, db: str, sta: SensorThingsServer,
            window: str, grace: str, status: StatusPage, batch_size: int = 200, extra: str = "") -> Path:
    text = f"""
[gateway]
id = "{gw}"
data_dir = "{tmp / 'data'}"
status_listen = "{status.listen}"
lat = 40.4168
lon = -3.7038

[[devices]]
id = "air-1"
kind = "pms5003"
port = "/dev/null-citygw-test"
lat = 40.42
lon = -3.70
tags = {{ site = "plaza mayor" }}

[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}

[[mqtt.routes]]
topic = "{gw}/sensors/+/json"
format = "json"
device_id = "{{2}}"

[locations]
"noise-1" = {{ lat = 41.3874, lon = 2.1686 }}

[aggregation]
windows = ["{window}"]
grace = "{grace}"

[[influx]]
api = "v1"
url = "{influx.url}"
database = "{db}"

[[sensorthings]]
url = "{sta.url}"
batch_size = {batch_size}
{extra}"""
    path = tmp / "kit.toml"
    path.write_text(text)
    return path


def _subscribed(status: StatusPage) -> None:
    """Wait until the gateway's MQTT input is connected (and so subscribed, a moment later)."""
    wait_for(lambda: status.status().get("mqtt_connected"), 60, "the gateway's MQTT input")
    time.sleep(0.5)


def _start_s(text: str) -> int:
    return int(datetime.fromisoformat(text.split("/")[0]).timestamp())


def read_back(url: str, gw: str) -> dict[str, Any]:
    """Everything the server holds for one gateway, read with frost-sta-client.

    To-one relations are read from the "many" side (Things?$expand=Datastreams and so on): this server's
    $expand of a to-one relation over a collection answers the first related entity for every member
    (django-ogc-sensorthings 1.2.0; Datastreams('…')/Thing is right, and so is every to-many expand).
    """
    service = fsc.SensorThingsService(url)
    mine = lambda name: name.startswith(gw + "/")  # noqa: E731
    things = {t.name: t for t in service.things().query().expand("Locations,Datastreams").list() if mine(t.name)}
    owner: dict[str, dict[str, Any]] = {"thing": {}, "sensor": {}, "observed_property": {}}
    for name, thing in things.items():
        owner["thing"].update({d.name: name for d in thing.datastreams or []})
    for sensor in service.sensors().query().expand("Datastreams").list():
        owner["sensor"].update({d.name: sensor for d in sensor.datastreams or [] if mine(d.name)})
    for prop in service.observed_properties().query().expand("Datastreams").list():
        owner["observed_property"].update({d.name: prop for d in prop.datastreams or [] if mine(d.name)})
    streams = {}
    for ds in service.datastreams().query().list():
        if mine(ds.name):
            observations = sorted(ds.get_observations().query().list(), key=lambda o: _start_s(o.phenomenon_time))
            streams[ds.name] = (ds, observations)
    return {"things": things, "datastreams": streams, **owner}


def influx_kpis(influx: InfluxV1, db: str) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(device, name, window) -> the KPI rows in InfluxDB, oldest first."""
    rows = influx.query('SELECT value FROM kpi GROUP BY device_id, "name", "window", valid', db=db)
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["device_id"], r["name"], r["window"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["time"]) for k, v in out.items()}


def assert_same_as_influx(sta: dict[str, Any], influx: dict[tuple[str, str, str], list[dict[str, Any]]],
                          gw: str, window_s: int) -> None:
    """Every KPI point in InfluxDB is exactly one Observation with the same window and value, and no more."""
    assert sorted(sta["datastreams"]) == sorted(f"{gw}/{d}/{n}/{w}" for d, n, w in influx)
    for (device, name, window), rows in influx.items():
        ds, observations = sta["datastreams"][f"{gw}/{device}/{name}/{window}"]
        assert [_start_s(o.phenomenon_time) for o in observations] == [r["time"] // S for r in rows]
        assert [o.result for o in observations] == [r["value"] for r in rows]
        for o, r in zip(observations, rows, strict=True):
            start, end = o.phenomenon_time.split("/")
            assert _start_s(end) - _start_s(start) == window_s
            assert _start_s(o.result_time) == r["time"] // S + window_s
            assert (o.result_quality is not None and o.result_quality["valid"] is False) == (r["valid"] == "false")
        assert ds.observation_type == OM_MEASUREMENT
        assert sta["thing"][ds.name] == f"{gw}/{device}"
        assert sta["observed_property"][ds.name].name == name


def test_round_trip_against_a_real_server_matches_influxdb(tmp_path: Path, mosquitto: Mosquitto,
                                                           influx_v1: InfluxV1,
                                                           server_factory: Callable[..., Any]) -> None:
    sta: SensorThingsServer = server_factory(SensorThingsServer)
    gw = f"sta-{time.time_ns() % 10**9}"
    db = gw.replace("-", "_")
    influx_v1.create_database(db)
    status = StatusPage()
    gateway = GatewayProcess(_config(tmp_path, gw, mosquitto, influx_v1, db, sta, "10s", "1s", status),
                             tmp_path / "gateway.log").start()
    try:
        base = (time.time_ns() // (10 * S)) * 10 * S - 30 * S  # the last readings are about now
        messages = [(f"{gw}/sensors/noise-1/json", json_mapping.encode("noise-1", base + i * S,
                                                                       {"noise_laeq": 50.0 + i % 7}))
                    for i in range(30)]
        # The pms5003 is configured (kind, tags, position) but sends through the JSON route here: window 0
        # is complete, window 1 holds 2 readings of 10 one-second slots and is flagged invalid.
        pm_ts = [base + i * S for i in range(10)] + [base + 10 * S, base + 11 * S]
        messages += [(f"{gw}/sensors/air-1/json", json_mapping.encode("air-1", ts, {"pm2_5": 7.0 + k * 0.5}))
                     for k, ts in enumerate(pm_ts)]
        _subscribed(status)
        # The last reading of each device a moment later, as a batch of its own: a source's windows close by
        # the wall clock once it is quiet for 3 of its usual pauses, and a new source's first pause is the age
        # of its first reading (aggregators/windows.py); this keeps that pause about a second.
        last = {topic: i for i, (topic, _) in enumerate(messages)}
        publish_all(mosquitto.port, [m for i, m in enumerate(messages) if i not in last.values()])
        time.sleep(1.0)
        publish_all(mosquitto.port, [messages[i] for i in sorted(last.values())])
        wait_for(lambda: sum(len(v) for v in influx_kpis(influx_v1, db).values()) == 5, 90, "5 KPI windows in InfluxDB")
        wait_for(lambda: sum(len(o) for _, o in read_back(sta.url, gw)["datastreams"].values()) == 5, 90,
                 "5 Observations on the SensorThings server")
        got = read_back(sta.url, gw)
        influx = influx_kpis(influx_v1, db)
        assert_same_as_influx(got, influx, gw, 10)
        assert [r["valid"] for r in influx[("air-1", "pm2_5", "10s")]] == ["true", "false"]  # both kinds seen

        air = got["things"][f"{gw}/air-1"]
        assert air.properties == {"gateway": gw, "device": "air-1", "kind": "pms5003",
                                  "tags": {"site": "plaza mayor"}}
        assert [loc.location for loc in air.locations] == [{"type": "Point", "coordinates": [-3.70, 40.42]}]
        noise = got["things"][f"{gw}/noise-1"]
        assert noise.properties["kind"] == "mqtt"
        assert [loc.location for loc in noise.locations] == [{"type": "Point", "coordinates": [2.1686, 41.3874]}]
        pm_ds, pm_obs = got["datastreams"][f"{gw}/air-1/pm2_5/10s"]
        assert got["observed_property"][pm_ds.name].definition == EEA_PM25
        assert got["sensor"][pm_ds.name].name == "pms5003"
        assert got["sensor"][f"{gw}/noise-1/noise_laeq/10s"].name == "mqtt"
        uom = pm_ds.unit_of_measurement
        assert (uom.name, uom.symbol, uom.definition) == (
            "microgram per cubic metre", "µg/m³", "http://dd.eionet.europa.eu/vocabulary/uom/concentration/ug.m-3")
        assert pm_ds.properties["window"] == "10s" and pm_ds.properties["unit"] == "ug/m3"
        assert pm_obs[1].result_quality["valid"] is False and pm_obs[1].result_quality["coverage"] == 0.2
        assert pm_obs[0].parameters["count"] == 10
        assert sta.count("Things") == 2 and sta.count("Datastreams") == 2
    finally:
        assert gateway.stop() == 0


def _publish_live(port: int, gw: str, seconds: float) -> set[int]:
    """Publish noise readings stamped with the current time at 4 Hz for `seconds`; the 2 s windows touched.

    Each is published as it is stamped: one held back for a second (they once went in fours) can arrive after
    the wall clock closed its window (grace 500 ms) when the device had been idle before, and is late.
    """
    windows: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ts = time.time_ns()
        windows.add(ts // (2 * S))
        value = 40.0 + (ts // 10**6) % 97 / 7
        publish_all(port, [(f"{gw}/sensors/noise-1/json",
                            json_mapping.encode("noise-1", ts, {"noise_laeq": value}))])
        time.sleep(0.25)
    return windows


def _wait_count(count: Callable[[], int], want: Callable[[], int], timeout: float, what: str) -> None:
    """Wait until count() == want(); the failure says what both were last."""
    seen: list[tuple[int, int]] = []

    def equal() -> bool:
        seen.append((count(), want()))
        return seen[-1][0] == seen[-1][1]

    try:
        wait_for(equal, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last (have, want): {seen[-1] if seen else None}") from None


def _cursor(journal: Path, sink: str) -> tuple[int, int]:
    db = sqlite3.connect(journal, timeout=30)
    try:
        row = db.execute("SELECT seq FROM cursors WHERE sink=?", (sink,)).fetchone()
        # The highest seq ever appended: housekeeping may already have trimmed every delivered entry.
        last = db.execute("SELECT seq FROM sqlite_sequence WHERE name='entries'").fetchone()
    finally:
        db.close()
    return (int(row[0]) if row else 0), int(last[0]) if last else 0


def test_outage_crash_and_lost_cursor_lose_nothing_and_duplicate_nothing(
        tmp_path: Path, mosquitto: Mosquitto, influx_v1: InfluxV1, server_factory: Callable[..., Any]) -> None:
    sta: SensorThingsServer = server_factory(SensorThingsServer)
    gw = f"sta-out-{time.time_ns() % 10**9}"
    db = gw.replace("-", "_")
    influx_v1.create_database(db)
    status = StatusPage()
    # Small batches: the replay after the lost cursor spans many of them, not just the first.
    # A second InfluxDB that never answers holds every entry in the journal (trimming waits for every sink), so
    # the replay after the lost cursor really re-reads windows the server already holds.
    hold = f'[[influx]]\napi = "v1"\nurl = "http://127.0.0.1:{free_port()}"\ndatabase = "hold"\n'
    config = _config(tmp_path, gw, mosquitto, influx_v1, db, sta, "2s", "500ms", status, batch_size=2, extra=hold)
    log = tmp_path / "gateway.log"

    def influx_count() -> int:
        return sum(len(v) for v in influx_kpis(influx_v1, db).values())

    def sta_count() -> int:
        return sum(len(o) for _, o in read_back(sta.url, gw)["datastreams"].values())

    gateway = GatewayProcess(config, log).start()
    try:
        _subscribed(status)
        windows = _publish_live(mosquitto.port, gw, 3)
        _wait_count(influx_count, lambda: len(windows), 60, "the windows in InfluxDB")
        _wait_count(sta_count, lambda: len(windows), 60, "the same windows on the SensorThings server")

        sta.kill()  # outage: the gateway keeps journaling and writing InfluxDB
        windows |= _publish_live(mosquitto.port, gw, 3)
        _wait_count(influx_count, lambda: len(windows), 60, "the outage's windows in InfluxDB")
        gateway.kill()  # and then the gateway crashes, too
        sta.start()
        gateway = GatewayProcess(config, log).start()
        _subscribed(status)
        windows |= _publish_live(mosquitto.port, gw, 2)
        _wait_count(influx_count, lambda: len(windows), 60, "every window in InfluxDB")
        _wait_count(sta_count, lambda: len(windows), 90, "every window on the SensorThings server after the outage")
        assert gateway.stop() == 0

        # A cursor lost (an old journal copy, a crash before it was persisted): everything is read again and
        # the sink must not create a second Observation for any window, nor a second Thing or Datastream.
        journal = tmp_path / "data" / "journal.sqlite"
        sink = f"sensorthings:{sta.url}"
        con = sqlite3.connect(journal)
        con.execute("UPDATE cursors SET seq=0 WHERE sink=?", (sink,))
        con.commit()
        assert con.execute("SELECT count(*) FROM entries WHERE kind=1").fetchone()[0] == len(windows)
        con.close()
        gateway = GatewayProcess(config, log).start()
        wait_for(lambda: (c := _cursor(journal, sink))[0] >= c[1] > 0, 60, "the sink to read the journal again")
        assert gateway.stop() == 0
    finally:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.kill()

    got = read_back(sta.url, gw)
    assert_same_as_influx(got, influx_kpis(influx_v1, db), gw, 2)
    assert list(got["things"]) == [f"{gw}/noise-1"]
    for entity_set, n in (("Things", 1), ("Locations", 1), ("Sensors", 1), ("ObservedProperties", 1),
                          ("Datastreams", 1)):
        assert sta.count(entity_set) == n, entity_set
    assert f"sink {sink} failing, will retry" in log.read_text()  # the outage was seen, and reported once
    assert log.read_text().count(f"sink {sink} failing") == 1
