"""The NGSI-LD sink under the core's Delivery, against a real HTTP server: headers, a 207 that refuses one entity
(only that window is dead-lettered, the rest delivered), the broker's own trouble retried, a broker that is down."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregators.kpi import KpiPoint
from gateway.journal import Journal
from gateway.metrics import Metrics
from gateway.settings import ConfigError, Settings, load_settings
from gateway.sinks.base import Action, Delivery, SinkError
from gateway.sinks.ngsi_ld import NgsiLdSink, build_ngsi_ld_sinks
from gateway.sinks.ngsi_ld_mapping import EntityMapper
from tests.feeds.ngsi_ld_broker import CapturingBroker
from tests.feeds.ngsi_ld_samples import PLACES, T0, journal_entries
from tests.tls import TlsFiles

H = 3_600_000_000_000


def _points(hours: int) -> list[KpiPoint]:
    return [KpiPoint(name, device, "1h", T0 + k * H, T0 + (k + 1) * H, "ug/m3", 10.0 + k)
            for k in range(hours) for device in ("air-1", "air-2") for name in ("pm2_5", "pm10")]


@pytest.fixture
def broker() -> Iterator[CapturingBroker]:
    """A test broker that accepts everything unless told otherwise."""
    b = CapturingBroker().start()
    try:
        yield b
    finally:
        b.stop()


def _deliver(tmp_path: Path, broker: CapturingBroker, points: list[KpiPoint]) -> tuple[Delivery, Journal]:
    writer = Journal(tmp_path / "journal.sqlite")
    writer.append(kpis=points)
    writer.close()
    sink = NgsiLdSink("ngsi-ld-test", broker.url, EntityMapper("kit-7", PLACES.get), tenant="city",
                      token="t0ken", batch_size=8)
    reader = Journal(tmp_path / "journal.sqlite", "normal")
    delivery = Delivery(sink, reader, Metrics(), batch_size=8, flush_interval_s=0.05, backoff_initial_s=0.05,
                        backoff_max_s=0.2)
    delivery.start()
    return delivery, reader


def _wait(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_refused_entity_is_dead_lettered_alone(tmp_path: Path, broker: CapturingBroker) -> None:
    refused = "urn:ngsi-ld:AirQualityObserved:kit-7:air-2:1h"
    broker.refuse = {refused}
    delivery, journal = _deliver(tmp_path, broker, _points(3)[:5])  # hour 0 of both devices + hour 1 of air-1
    try:
        _wait(lambda: delivery.cursor == journal.last_seq(), "the cursor to reach the end")
        letters = journal.dead_letters("ngsi-ld-test")
        assert [(seq, reason.split(":")[0]) for _sink, seq, reason, _body in letters] == [
            (3, "the broker refused 1 of 1 entities (HTTP 207)"), (4, "the broker refused 1 of 1 entities (HTTP 207)")]
        assert all(refused in body for *_rest, body in letters)
        delivered = {(e["id"], e["dateObserved"]["value"]["@value"]) for e in broker.entities()}
        assert delivered == {("urn:ngsi-ld:AirQualityObserved:kit-7:air-1:1h", "2026-01-01T11:00:00.000Z"),
                             ("urn:ngsi-ld:AirQualityObserved:kit-7:air-1:1h", "2026-01-01T12:00:00.000Z")}
        first = broker.requests[0]
        assert first.path == "/ngsi-ld/v1/entityOperations/upsert?options=update"
        assert first.headers["Content-Type"] == "application/ld+json"
        assert first.headers["NGSILD-Tenant"] == "city" and first.headers["Authorization"] == "Bearer t0ken"
    finally:
        delivery.stop()
        journal.close()


def test_the_brokers_own_trouble_is_retried_not_dead_lettered(tmp_path: Path, broker: CapturingBroker) -> None:
    broker.refuse = {"urn:ngsi-ld:AirQualityObserved:kit-7:air-1:1h"}
    broker.refuse_as = "LdContextNotAvailable"  # the broker could not fetch the @context: not the entity's fault
    delivery, journal = _deliver(tmp_path, broker, _points(2))
    try:
        _wait(lambda: len(broker.requests) >= 3, "a few refused attempts")
        assert journal.dead_letters("ngsi-ld-test") == [] and delivery.cursor == 0
        assert "(HTTP 207)" in delivery.last_error and "LdContextNotAvailable" in delivery.last_error
        broker.refuse = set()
        _wait(lambda: delivery.cursor == journal.last_seq(), "delivery once the broker recovers")
        assert journal.dead_letters("ngsi-ld-test") == []
        assert len({(e["id"], e["dateObserved"]["value"]["@value"]) for e in broker.entities()}) == 4
    finally:
        delivery.stop()
        journal.close()


def test_a_broker_that_is_down_keeps_everything_in_the_journal(tmp_path: Path) -> None:
    broker = CapturingBroker()  # not listening yet
    delivery, journal = _deliver(tmp_path, broker, _points(2))
    try:
        _wait(lambda: delivery.failing_since is not None, "the sink to notice the broker is down")
        assert "cannot reach the NGSI-LD broker" in delivery.last_error and delivery.cursor == 0
        broker.start()
        _wait(lambda: delivery.cursor == journal.last_seq(), "delivery once the broker is up")
        windows = [(e["id"], e["dateObserved"]["value"]["@value"]) for e in broker.entities()]
        assert len(windows) == len(set(windows)) == 4
    finally:
        delivery.stop()
        journal.close()
        broker.stop()


def test_config_builds_the_sink_and_refuses_mistakes(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token\n")
    config = tmp_path / "kit.toml"
    config.write_text(f"""
[gateway]
id = "kit-7"
lat = 40.4
lon = -3.7

[[ngsi_ld]]
url = "http://orion.city.example:1026/"
tenant = "madrid"
token_file = "{tmp_path / 'token'}"
kpis = ["pm2_5", "us_aqi"]
windows = ["1h"]
batch_size = 50
flush_interval = "5s"
""")
    settings = load_settings(config, env={})
    [sink] = build_ngsi_ld_sinks(settings)
    assert sink.name == "ngsi-ld:http://orion.city.example:1026/madrid"
    assert (sink.batch_size, sink.flush_interval_s) == (50, 5.0)
    assert sink.mapper.kpis == {"pm2_5", "us_aqi"} and sink.mapper.windows == {"1h"}
    assert sink.mapper.locate("anything") == (-3.7, 40.4)  # the kit's site for a device without its own
    sink.close()
    config.write_text('[[ngsi_ld]]\nurl = "orion:1026"\nkpis = ["pm25"]\ntoken = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    text = str(caught.value)
    assert "token" in text and "token_env" in text
    config.write_text('[[ngsi_ld]]\nurl = "orion:1026"\nkpis = ["pm25"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env={})
    assert "kit.toml:1: ngsi_ld[0]: url" in str(caught.value) and "http://" in str(caught.value)
    config.write_text('[[ngsi_ld]]\nurl = "http://orion:1026"\nkpis = ["pm25"]\n')
    with pytest.raises(ConfigError, match="pm25 have no NGSI-LD mapping"):
        load_settings(config, env={})
    assert isinstance(Settings().ngsi_ld, list)


def test_https_with_the_citys_ca_file(tmp_path: Path, tls_files: TlsFiles) -> None:
    broker = CapturingBroker(tls=(str(tls_files.server_cert), str(tls_files.server_key))).start()
    entries = journal_entries(tmp_path, _points(1))
    try:
        untrusted = NgsiLdSink("ngsi-ld-tls", broker.url, EntityMapper("kit-7", PLACES.get))
        with pytest.raises(SinkError) as caught:
            untrusted.write(entries)
        assert caught.value.action is Action.RETRY and "certificate" in caught.value.reason.lower()
        untrusted.close()
        trusted = NgsiLdSink("ngsi-ld-tls", broker.url, EntityMapper("kit-7", PLACES.get),
                             ca_file=tls_files.ca_cert)
        trusted.write(entries)
        trusted.close()
        assert broker.url.startswith("https://") and len(broker.entities()) == 2
    finally:
        broker.stop()
