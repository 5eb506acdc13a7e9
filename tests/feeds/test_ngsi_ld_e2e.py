"""End to end: `citygw run` with an InfluxDB 1.x sink and an NGSI-LD sink; the NGSI-LD requests pass through a
capturing server to Prism (which validates each one against the ETSI OpenAPI). The values in the entities equal
the KPI points in InfluxDB for the same windows; after a broker outage and a gateway restart every window arrives
exactly once, with its own observedAt, on the same stable entity ids."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devices import json_mapping
from tests.feeds.ngsi_ld_broker import CapturingBroker
from tests.feeds.prism import Prism
from tests.integration.helpers import FeedSubscriber, GatewayProcess, publish_all, wait_for
from tests.servers import InfluxV1, Mosquitto

S = 10**9
W = 10 * S  # the test's window
LON, LAT = -3.7038, 40.4168
DEVICES = {"air-1": ("AirQualityObserved",), "noise-1": ("NoiseLevelObserved",),
           "traffic-1": ("TrafficFlowObserved",), "water-1": ("WaterConsumptionObserved",)}


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    """Prism validating the NGSI-LD upsert operation."""
    server = Prism(tmp_path_factory.mktemp("prism"))
    try:
        server.start()
        yield server
    finally:
        server.close()


def _config(tmp: Path, gw_id: str, mosquitto: Mosquitto, influx: InfluxV1, db: str, broker: CapturingBroker) -> Path:
    path = tmp / "kit.toml"
    path.write_text(f"""
[gateway]
id = "{gw_id}"
data_dir = "{tmp / 'data'}"
status_listen = ""
lat = {LAT}
lon = {LON}

[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}

[[mqtt.routes]]
topic = "{gw_id}/sensors/+/json"
format = "json"
device_id = "{{2}}"

[aggregation]
windows = ["10s"]
grace = "1s"

[[influx]]
api = "v1"
url = "{influx.url}"
database = "{db}"

[[ngsi_ld]]
url = "{broker.url}"
tenant = "e2e"
batch_size = 7
""")
    return path


def _readings(gw_id: str, base: int, windows: range) -> list[tuple[str, bytes]]:
    """Three readings per window and device, meters counting up."""
    out = []
    for w in windows:
        for k in range(3):
            ts = base + w * W + k * 3 * S
            i = w * 3 + k
            values = {"air-1": {"pm2_5": 10.0 + i, "no2": 20.0 + 2 * i, "relative_humidity": 40.0 + i},
                      "noise-1": {"noise_laeq": 50.0 + (i % 7)}, "traffic-1": {"vehicle_count": float(3 + i % 4)},
                      "water-1": {"water_volume": 100.0 + 0.125 * i}}
            for device, vals in values.items():
                out.append((f"{gw_id}/sensors/{device}/json", json_mapping.encode(device, ts, vals)))
    return out


def _attribute(entity: dict[str, Any], attribute: str) -> dict[str, Any]:
    value = entity[attribute]
    assert isinstance(value, dict), value
    return value


def _expected(row: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    """The entity type and (attribute, value) pairs an InfluxDB KPI row must appear as."""
    name, value = row["name"], row["value"]
    if name == "water_volume":  # the meter's total in whole litres, and the window's consumption in m³
        return "WaterConsumptionObserved", [("volumeConsumed", value), ("waterConsumption", round(row["last"] * 1e3))]
    table: dict[str, tuple[str, list[tuple[str, Any]]]] = {
        "pm2_5": ("AirQualityObserved", [("pm25", value)]), "no2": ("AirQualityObserved", [("no2", value)]),
        "relative_humidity": ("AirQualityObserved", [("relativeHumidity", value / 100.0)]),
        "noise_laeq": ("NoiseLevelObserved", [("LAeq", value)]),
        "vehicle_count": ("TrafficFlowObserved", [("intensity", value)]),
    }
    return table[name]


def _check_against_influx(influx: InfluxV1, db: str, gw_id: str, broker: CapturingBroker, windows: int) -> None:
    rows = influx.query('SELECT value, "last", "valid", "device_id", "name" FROM kpi WHERE "window"=\'10s\'', db=db)
    assert len(rows) == windows * 6
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for entity in broker.entities():
        key = (entity["id"], entity["dateObserved"]["value"]["@value"])
        for attr, value in entity.items():
            if isinstance(value, dict) and "observedAt" in value:
                latest.setdefault(key, {})[attr] = value
    for row in rows:
        entity_type, pairs = _expected(row)
        end = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime((row["time"] + W) // S))
        eid = f"urn:ngsi-ld:{entity_type}:{gw_id}:{row['device_id']}:10s"
        attrs = latest.get((eid, end))
        assert attrs is not None, f"no entity {eid} for the window ending {end}"
        for attribute, value in pairs:
            assert attrs[attribute]["value"] == pytest.approx(value, rel=1e-12, abs=1e-12), (eid, end, attribute)
            assert attrs[attribute]["observedAt"] == end
            assert attrs[attribute]["windowValid"]["value"] is (row["valid"] == "true")


def _settle(broker: CapturingBroker, want: int) -> None:
    wait_for(lambda: len({(e["id"], e["dateObserved"]["value"]["@value"]) for e in broker.entities()}) >= want,
             90, f"{want} entity windows at the NGSI-LD broker")


def test_entities_equal_the_kpis_in_influxdb_and_survive_an_outage_and_a_restart(
        tmp_path: Path, mosquitto: Mosquitto, influx_v1: InfluxV1, prism: Prism) -> None:
    gw_id = f"ngsi-{time.time_ns() % 10**9}"
    db = gw_id.replace("-", "_")
    influx_v1.create_database(db)
    broker = CapturingBroker(upstream=prism.url)  # down: the gateway starts during a broker outage
    config = _config(tmp_path, gw_id, mosquitto, influx_v1, db, broker)
    feed = FeedSubscriber(mosquitto.port, f"citygw/{gw_id}/status")
    base = (time.time_ns() // W) * W - 200 * S
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    try:
        wait_for(lambda: "online" in str(feed.snapshot()), 60, "the gateway's online status")
        wait_for(lambda: gateway.input_connections() == 1, 60, "the MQTT input subscribed")
        publish_all(mosquitto.port, _readings(gw_id, base, range(0, 3)))
        wait_for(lambda: len(influx_v1.query("SELECT value FROM kpi", db=db)) == 3 * 6, 90,
                 "18 KPI windows in influxd (3 windows x 6 series)")
        assert broker.requests == []
        assert gateway.stop() == 0  # windows 0..2 are journaled, not yet at the NGSI-LD broker
        broker.start()
        gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
        wait_for(lambda: gateway.input_connections() == 2, 60, "the MQTT input subscribed again")
        # The restarted gateway has closed every window up to its stop: new readings start in the current
        # window (up to 30 s ahead of the clock, well inside what validation accepts), meters counting on.
        now_window = time.time_ns() // W * W
        publish_all(mosquitto.port, _readings(gw_id, now_window - 3 * W, range(3, 6)))
        wait_for(lambda: len(influx_v1.query("SELECT value FROM kpi", db=db)) == 6 * 6, 90, "36 KPI windows in influxd")
        _settle(broker, 6 * 4)
        assert gateway.stop() == 0
    finally:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.kill()
        feed.close()
        broker.stop()

    assert all(r.status == 201 for r in broker.requests), [(r.status, r.path) for r in broker.requests]
    assert prism.violations() == []
    assert {r.headers["NGSILD-Tenant"] for r in broker.requests} == {"e2e"}
    # A window's attributes may come in more than one upsert (a batch can end between two KPI points of one
    # window; options=update merges them), but every attribute of every window arrives exactly once.
    values = [(e["id"], attr, v["observedAt"]) for e in broker.entities() for attr, v in e.items()
              if isinstance(v, dict) and "observedAt" in v]
    assert len(values) == len(set(values)) == 6 * (3 + 1 + 1 + 2), "nothing lost, nothing duplicated"
    windows = sorted({(e["id"], e["dateObserved"]["value"]["@value"]) for e in broker.entities()},
                     key=lambda w: w[1])
    assert len(windows) == 6 * 4
    assert {eid for eid, _ in windows} == {f"urn:ngsi-ld:{t}:{gw_id}:{d}:10s" for d, (t,) in DEVICES.items()}
    for entity in broker.entities():
        assert entity["location"]["value"]["coordinates"] == [LON, LAT]
    # Replayed windows keep their own time: each entity's windows arrive oldest first.
    for device, (entity_type,) in DEVICES.items():
        ends = [end for eid, end in windows if eid == f"urn:ngsi-ld:{entity_type}:{gw_id}:{device}:10s"]
        assert ends == sorted(ends) and len(ends) == 6
    _check_against_influx(influx_v1, db, gw_id, broker, 6)
