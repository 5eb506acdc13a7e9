"""The SensorThings sink in-process, through the core's Delivery, against a real django-ogc-sensorthings server
(tests/feeds/sensorthings_server.py): entities found or created once, DataArray batches, a refused point
dead-lettered alone, bearer auth, and MQTT create payloads on a real Mosquitto that the server accepts."""

from __future__ import annotations

import math
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from aggregators.kpi import KpiPoint
from gateway.journal import Journal
from gateway.metrics import Metrics
from gateway.settings import SensorThingsSection, Settings, load_settings
from gateway.sinks.base import Delivery
from gateway.sinks.sensorthings import SensorThingsSink, build_sensorthings_sinks
from gateway.sinks.sta_mqtt import StaMqttPublisher
from tests.feeds.sensorthings_server import SensorThingsServer
from tests.integration.helpers import wait_for
from tests.servers import Mosquitto

S = 10**9
T0 = 1_790_000_000 * S  # 2026-09-21T…, a whole 10 s boundary


@pytest.fixture(scope="module")
def sta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SensorThingsServer]:
    """One server for the module; each test uses its own gateway id, so their entities do not meet."""
    server = SensorThingsServer(tmp_path_factory.mktemp("sta"))
    try:
        yield server.start()
    finally:
        server.close()


def _settings(tmp_path: Path, gw: str, block: str, extra: str = "", site: bool = True) -> Settings:
    where = "lat = 40.4168\nlon = -3.7038" if site else ""
    text = f"""
[gateway]
id = "{gw}"
data_dir = "{tmp_path / 'data'}"
{where}

[locations]
"noise-1" = {{ lat = 41.3874, lon = 2.1686, alt = 12.0 }}

{block}
{extra}
"""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "kit.toml"
    path.write_text(text)
    return load_settings(path, env={})


def _points(device: str, name: str, unit: str, values: list[float], window: str = "10s",
            invalid: tuple[int, ...] = ()) -> list[KpiPoint]:
    size = 10 * S
    return [KpiPoint(name, device, window, T0 + i * size, T0 + (i + 1) * size, unit, v,
                     {"count": 10, "coverage": 0.2 if i in invalid else 1.0, "max": v + 1, "min": v - 1},
                     {}, i not in invalid)
            for i, v in enumerate(values)]


def _run(sink: SensorThingsSink, journal_path: Path, until: Any, what: str) -> Delivery:
    delivery = Delivery(sink, Journal(journal_path, "normal"), Metrics(), batch_size=sink.batch_size,
                        flush_interval_s=0.1, backoff_initial_s=0.1, backoff_max_s=0.5)
    delivery.start()
    try:
        wait_for(lambda: until(delivery), 60, what)
    finally:
        delivery.stop()
        delivery.journal.close()
    return delivery


def _observations(sta: SensorThingsServer, gw: str) -> dict[str, list[dict[str, Any]]]:
    """Datastream name -> its observations (oldest first), for one gateway."""
    out: dict[str, list[dict[str, Any]]] = {}
    page = sta.get(f"Datastreams?$filter=properties/gateway%20eq%20'{gw}'&$top=100")
    for ds in page["value"]:
        obs, link = [], f"Datastreams('{ds['@iot.id']}')/Observations?$top=100"
        while link:
            chunk = sta.get(link)
            obs += chunk["value"]
            link = chunk.get("@iot.nextLink")
        out[ds["name"]] = sorted(obs, key=lambda o: o["phenomenonTime"])
    return out


def test_batch_goes_in_once_and_entities_are_reused(tmp_path: Path, sta: SensorThingsServer) -> None:
    gw = "gw-batch"
    settings = _settings(tmp_path, gw, f'[[sensorthings]]\nurl = "{sta.url}"\nbatch_size = 50\n')
    journal = Journal(settings.journal_path)
    noise = _points("noise-1", "noise_laeq", "dBA", [50.0 + i for i in range(12)], invalid=(3,))
    pm = _points("air-1", "pm2_5", "ug/m3", [7.5, 8.25, 9.0])
    journal.append(kpis=noise + pm)
    things_before = sta.count("Things")
    (sink,) = build_sensorthings_sinks(settings)
    _run(sink, settings.journal_path, lambda d: d.cursor == journal.last_seq(), "every point delivered")
    assert sink._data_array is True  # the server advertises DataArray: one CreateObservations for the batch
    got = _observations(sta, gw)
    assert sorted(got) == [f"{gw}/air-1/pm2_5/10s", f"{gw}/noise-1/noise_laeq/10s"]
    assert [o["result"] for o in got[f"{gw}/noise-1/noise_laeq/10s"]] == [p.value for p in noise]
    assert [o["result"] for o in got[f"{gw}/air-1/pm2_5/10s"]] == [p.value for p in pm]
    first = got[f"{gw}/noise-1/noise_laeq/10s"][0]
    assert first["phenomenonTime"] == "2026-09-21T14:13:20+00:00/2026-09-21T14:13:30+00:00"
    assert first["resultTime"] == "2026-09-21T14:13:30+00:00"
    assert first["parameters"] == {"count": 10, "coverage": 1.0, "max": 51.0, "min": 49.0}
    assert "resultQuality" not in first
    assert got[f"{gw}/noise-1/noise_laeq/10s"][3]["resultQuality"]["valid"] is False
    assert sta.count("Things") == things_before + 2
    journal.close()

    # A second sink (a restarted gateway) on the same journal: ids come from the meta table, no new entities;
    # its first write checks the server, so re-sent windows are not duplicated either.
    journal = Journal(settings.journal_path)
    journal.set_cursor(sink.name, 0)  # as if the cursor had never been persisted: everything is re-sent
    journal.append(kpis=_points("noise-1", "noise_laeq", "dBA", [50.0 + i for i in range(13)])[12:])
    counts = {e: sta.count(e) for e in ("Things", "Locations", "Sensors", "ObservedProperties", "Datastreams")}
    (again,) = build_sensorthings_sinks(settings)
    _run(again, settings.journal_path, lambda d: d.cursor == journal.last_seq(), "the re-sent batch")
    assert again.ids.created == 0
    assert again.skipped_present == 15
    assert {e: sta.count(e) for e in counts} == counts
    got = _observations(sta, gw)
    assert len(got[f"{gw}/noise-1/noise_laeq/10s"]) == 13
    assert len({o["phenomenonTime"] for o in got[f"{gw}/noise-1/noise_laeq/10s"]}) == 13
    journal.close()


def test_entities_found_on_the_server_when_the_journal_is_new(tmp_path: Path, sta: SensorThingsServer) -> None:
    gw = "gw-lookup"
    block = f'[[sensorthings]]\nurl = "{sta.url}"\n'
    first = _settings(tmp_path / "a", gw, block)
    journal = Journal(first.journal_path)
    journal.append(kpis=_points("noise-1", "noise_laeq", "dBA", [60.0, 61.0]))
    (sink,) = build_sensorthings_sinks(first)
    _run(sink, first.journal_path, lambda d: d.cursor == journal.last_seq(), "first gateway delivered")
    assert sink.ids.created >= 2  # its Thing and Datastream (Sensor and ObservedProperty may exist already)
    journal.close()
    # A fresh journal (lost, or moved aside as corrupt): the sink must find its entities by name + properties.
    second = _settings(tmp_path / "b", gw, block)
    journal = Journal(second.journal_path)
    journal.append(kpis=_points("noise-1", "noise_laeq", "dBA", [60.0, 61.0, 62.0]))
    counts = {e: sta.count(e) for e in ("Things", "Sensors", "ObservedProperties", "Datastreams")}
    (sink,) = build_sensorthings_sinks(second)
    _run(sink, second.journal_path, lambda d: d.cursor == journal.last_seq(), "second gateway delivered")
    assert sink.ids.created == 0
    assert {e: sta.count(e) for e in counts} == counts
    assert [o["result"] for o in _observations(sta, gw)[f"{gw}/noise-1/noise_laeq/10s"]] == [60.0, 61.0, 62.0]
    thing = sta.get(f"Things?$filter=name%20eq%20'{gw}/noise-1'&$expand=Locations")["value"][0]
    assert thing["properties"] == {"gateway": gw, "device": "noise-1", "kind": "mqtt", "tags": {}}
    assert thing["Locations"][0]["location"] == {"type": "Point", "coordinates": [2.1686, 41.3874, 12.0]}
    journal.close()


def test_a_point_the_server_cannot_take_is_dead_lettered_alone(tmp_path: Path, sta: SensorThingsServer) -> None:
    gw = "gw-refuse"
    settings = _settings(tmp_path, gw, f'[[sensorthings]]\nurl = "{sta.url}"\n')
    journal = Journal(settings.journal_path)
    values = [1.0, 2.0, math.inf, 4.0, 5.0]  # NaN cannot be journaled; infinity can
    journal.append(kpis=_points("air-1", "pm2_5", "ug/m3", values))
    (sink,) = build_sensorthings_sinks(settings)
    _run(sink, settings.journal_path, lambda d: d.cursor == journal.last_seq(), "the batch handled")
    (dead,) = journal.dead_letters(sink.name)
    assert dead[1] == 3 and "not a number" in dead[2]
    assert orjson.loads(dead[3])["Datastream"] == {"name": f"{gw}/air-1/pm2_5/10s"}
    assert [o["result"] for o in _observations(sta, gw)[f"{gw}/air-1/pm2_5/10s"]] == [1.0, 2.0, 4.0, 5.0]
    journal.close()


def test_bearer_token_and_kpi_selection(tmp_path: Path) -> None:
    server = SensorThingsServer(tmp_path / "sta", bearer_token="t0ken-for-tests")
    try:
        server.start()
        gw = "gw-auth"
        block = f'[[sensorthings]]\nurl = "{server.url}"\ntoken_env = "STA_TOKEN"\nkpis = ["pm2_5"]\n'
        settings = _settings(tmp_path, gw, block)
        journal = Journal(settings.journal_path)
        journal.append(kpis=_points("air-1", "pm2_5", "ug/m3", [3.0, 4.0])
                       + _points("noise-1", "noise_laeq", "dBA", [55.0]))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STA_TOKEN", "wrong")
            (bad,) = build_sensorthings_sinks(settings)
        delivery = Delivery(bad, Journal(settings.journal_path, "normal"), Metrics(), flush_interval_s=0.1,
                            backoff_initial_s=0.1, backoff_max_s=0.2)
        delivery.start()
        try:
            wait_for(lambda: delivery.failing_since is not None, 30, "the refused token to be reported")
            assert "401 unauthorized" in delivery.last_error and "t0ken" not in delivery.last_error
            assert delivery.cursor == 0
        finally:
            delivery.stop()
            delivery.journal.close()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STA_TOKEN", "t0ken-for-tests")
            (good,) = build_sensorthings_sinks(settings)
        _run(good, settings.journal_path, lambda d: d.cursor == journal.last_seq(), "delivery with the token")
        got = _observations(server, gw)
        assert list(got) == [f"{gw}/air-1/pm2_5/10s"]  # noise_laeq is not among the configured kpis
        assert [o["result"] for o in got[f"{gw}/air-1/pm2_5/10s"]] == [3.0, 4.0]
        journal.close()
    finally:
        server.close()


class _Collector:
    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_mqtt_transport_publishes_observations_the_server_accepts(tmp_path: Path, sta: SensorThingsServer,
                                                                  mosquitto: Mosquitto) -> None:
    """No STA server here bridges MQTT, so: entities over HTTP to the real server, Observations published on
    a real Mosquitto at the standard's topic, and every payload received there then created on the real
    server in the Datastream its topic names, which must accept it."""
    gw = "gw-mqtt"
    block = (f'[[sensorthings]]\nurl = "{sta.url}"\ntransport = "mqtt"\nmqtt_host = "127.0.0.1"\n'
             f'mqtt_port = {mosquitto.port}\n')
    settings = _settings(tmp_path, gw, block)
    journal = Journal(settings.journal_path)
    points = _points("air-1", "pm2_5", "ug/m3", [11.0, 12.0, 13.0], invalid=(1,))
    journal.append(kpis=points)
    collector = _Collector(mosquitto.port, "v1.1/#")
    try:
        (sink,) = build_sensorthings_sinks(settings)
        _run(sink, settings.journal_path, lambda d: d.cursor == journal.last_seq(), "publishes acknowledged")
        received = wait_for(lambda: (m := collector.snapshot()) and len(m) >= 3 and m, 30, "3 observations")
    finally:
        collector.close()
    ds = sta.get(f"Datastreams?$filter=name%20eq%20'{gw}/air-1/pm2_5/10s'")["value"][0]["@iot.id"]
    assert {topic for topic, _ in received} == {f"v1.1/Datastreams('{ds}')/Observations"}
    bodies = [orjson.loads(payload) for _, payload in received]
    assert [b["result"] for b in bodies] == [11.0, 12.0, 13.0]
    assert bodies[1]["resultQuality"]["valid"] is False and "resultQuality" not in bodies[0]
    assert _observations(sta, gw)[f"{gw}/air-1/pm2_5/10s"] == []  # nothing went over HTTP
    # What a bridging server does with each message: create it in the Datastream its topic names (this
    # server has no nested-path POST, so the link goes into the body; the payload is otherwise unchanged).
    for body in bodies:
        assert "Datastream" not in body
        request = urllib.request.Request(f"{sta.url}/Observations",
                                         data=orjson.dumps({**body, "Datastream": {"@iot.id": ds}}),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
    got = _observations(sta, gw)[f"{gw}/air-1/pm2_5/10s"]
    assert [o["result"] for o in got] == [11.0, 12.0, 13.0]
    assert got[0]["phenomenonTime"] == "2026-09-21T14:13:20+00:00/2026-09-21T14:13:30+00:00"
    journal.close()


def test_the_mqtt_publisher_touches_the_network_only_when_started(mosquitto: Mosquitto) -> None:
    cfg = SensorThingsSection(url="http://127.0.0.1:9/v1.1", transport="mqtt", mqtt_host="127.0.0.1",
                              mqtt_port=mosquitto.port)
    idle = StaMqttPublisher(cfg, "gw-lazy", "", "")
    assert idle.client.socket() is None
    assert not any("gw-lazy" in t.name for t in threading.enumerate())
    idle.close()  # closing a publisher that never started is a no-op

    publisher = StaMqttPublisher(cfg, "gw-lazy", "", "")
    try:
        publisher.start()
        publisher.publish([(7, {"result": 1.0})])  # returns once the broker acknowledged it
    finally:
        publisher.close()


def test_a_datastream_deleted_on_the_server_is_created_again(tmp_path: Path, sta: SensorThingsServer) -> None:
    gw = "gw-deleted"
    settings = _settings(tmp_path, gw, f'[[sensorthings]]\nurl = "{sta.url}"\n')
    journal = Journal(settings.journal_path)
    journal.append(kpis=_points("air-1", "pm2_5", "ug/m3", [1.0, 2.0]))
    (sink,) = build_sensorthings_sinks(settings)
    _run(sink, settings.journal_path, lambda d: d.cursor == journal.last_seq(), "the first points")
    old = sta.get(f"Datastreams?$filter=name%20eq%20'{gw}/air-1/pm2_5/10s'")["value"][0]["@iot.id"]
    request = urllib.request.Request(f"{sta.url}/Datastreams('{old}')", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 204)
    journal.append(kpis=_points("air-1", "pm2_5", "ug/m3", [1.0, 2.0, 3.0])[2:])
    (sink,) = build_sensorthings_sinks(settings)  # a restart: the id of the deleted Datastream is in the journal
    _run(sink, settings.journal_path, lambda d: d.cursor == journal.last_seq(), "the point after the delete")
    (new,) = sta.get(f"Datastreams?$filter=name%20eq%20'{gw}/air-1/pm2_5/10s'")["value"]
    assert new["@iot.id"] != old
    assert [o["result"] for o in _observations(sta, gw)[f"{gw}/air-1/pm2_5/10s"]] == [3.0]
    assert sta.count("Things") == len({t["name"] for t in sta.get("Things?$top=100")["value"]})  # none doubled
    journal.close()


def test_a_device_without_a_position_is_dead_lettered_with_the_fix(tmp_path: Path, sta: SensorThingsServer) -> None:
    gw = "gw-nowhere"
    settings = _settings(tmp_path, gw, f'[[sensorthings]]\nurl = "{sta.url}"\n', site=False)
    journal = Journal(settings.journal_path)
    journal.append(kpis=_points("noise-1", "noise_laeq", "dBA", [50.0]) + _points("roof-7", "pm10", "ug/m3", [9.0]))
    (sink,) = build_sensorthings_sinks(settings)
    _run(sink, settings.journal_path, lambda d: d.cursor == journal.last_seq(), "the batch handled")
    (dead,) = journal.dead_letters(sink.name)
    assert dead[1] == 2 and "device roof-7 has no coordinates" in dead[2] and "[locations]" in dead[2]
    assert list(_observations(sta, gw)) == [f"{gw}/noise-1/noise_laeq/10s"]  # [locations] places noise-1
    journal.close()
