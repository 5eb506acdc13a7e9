"""Issue 10 item 12 (and the input side of 18), for both MQTT inputs against a real Mosquitto 2: a route removed
from the config is unsubscribed from the persistent session; another client with our client id is reported once
(log line and metric callback); a retained message is acknowledged and counted, never read as a new reading;
a payload that names no device is refused with what to set."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from devices.registry import get_kind
from ingest.mqtt_bulk import BulkMqttSource
from ingest.mqtt_client import MqttOptions
from ingest.mqtt_source import MqttSource, Route
from tests.ingest.bulk_support import Collector, messages, wait_for
from tests.servers import Mosquitto

INPUTS = ["paho", "bulk"]
TAKEOVER_LINE = "another client is using our MQTT client id"


def _source(kind: str, emitter: Any, port: int, client_id: str, routes: list[Route], **kw: Any) -> Any:
    """A started MQTT input of `kind` ("paho" or "bulk") with reconnects within a second."""
    opts = MqttOptions(host="127.0.0.1", port=port, client_id=client_id, reconnect_max_s=1.0,
                       protocol=kw.pop("protocol", "3.1.1"))
    cls = BulkMqttSource if kind == "bulk" else MqttSource
    src = cls(emitter, opts, routes, **kw)
    src.start()
    return src


def _route(topic: str) -> Route:
    return Route(topic, get_kind("json"), "{2}")


def _publisher(port: int, client_id: str = "", **kw: Any) -> mqtt.Client:
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, **kw)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    return pub


def _stop(client: mqtt.Client) -> None:
    client.loop_stop()
    client.disconnect()


@pytest.mark.parametrize("kind", INPUTS)
def test_route_removed_from_the_config_is_unsubscribed_from_the_session(
        kind: str, mosquitto: Mosquitto, tmp_path: Path) -> None:
    prefix = f"uns{kind}{time.time_ns() % 10**9}"
    client_id = f"{prefix}-in"
    record = tmp_path / "mqtt-subscriptions.json"
    keep, drop = f"{prefix}/keep/+/json", f"{prefix}/drop/+/json"
    pub = _publisher(mosquitto.port)
    first = Collector()
    src = _source(kind, first, mosquitto.port, client_id, [_route(keep), _route(drop)], session_file=record)
    try:
        wait_for(lambda: src.connected, 10, "the first connection")
        # Recorded on the SUBACKs, which may come a moment after the connection counts as up.
        wait_for(lambda: sorted(src.memory.recorded()) == sorted([keep, drop]), 10, "both filters recorded")
        topic, payload = messages(f"{prefix}/drop", 1)[0]
        pub.publish(topic, payload, qos=1).wait_for_publish(timeout=10)
        wait_for(lambda: first.count() == 1, 10, "a message on the route about to be removed")
    finally:
        src.stop()
    # The config no longer has the `drop` route; the broker's session still has its subscription.
    second = Collector()
    src = _source(kind, second, mosquitto.port, client_id, [_route(keep)], session_file=record)
    try:
        wait_for(lambda: src.memory.recorded() == [keep], 10, "the UNSUBACK for the removed filter")
        for t, p in [*messages(f"{prefix}/drop", 3, start=10), *messages(f"{prefix}/keep", 1, start=20)]:
            pub.publish(t, p, qos=1).wait_for_publish(timeout=10)
        # In order from one publisher: once the `keep` message is in, a `drop` one would have arrived first.
        wait_for(lambda: second.count() == 1, 10, "the message on the kept route")
        assert second.rejections == [], "a message of the removed route still reached us"
    finally:
        src.stop()
        _stop(pub)


@pytest.mark.parametrize(("kind", "protocol"), [("paho", "3.1.1"), ("bulk", "3.1.1"), ("paho", "5")])
def test_another_client_with_our_id_is_reported_once(kind: str, protocol: str, fresh_mosquitto: Mosquitto,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    broker = fresh_mosquitto
    client_id = f"twin-{kind}-{protocol}"
    reports: list[int] = []
    got = Collector()
    with caplog.at_level(logging.INFO, logger="citygw.mqtt"):
        src = _source(kind, got, broker.port, client_id, [_route("twin/+/x/json")], protocol=protocol,
                      on_takeover=lambda: reports.append(1))
        twin_connects = 0
        lock = threading.Lock()

        def counted(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            nonlocal twin_connects
            with lock:
                twin_connects += 1

        # A second gateway configured with the same client id: it reconnects whenever it is thrown off.
        twin = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                           protocol=mqtt.MQTTv311)
        twin.on_connect = counted
        twin.reconnect_delay_set(min_delay=1, max_delay=1)
        try:
            wait_for(lambda: src.connected, 10, "our connection")
            twin.connect("127.0.0.1", broker.port)
            twin.loop_start()
            wait_for(lambda: reports, 40, "the takeover to be reported")
            seen = twin_connects
            wait_for(lambda: twin_connects >= seen + 2, 40, "two more rounds of the two throwing each other off")
        finally:
            twin.loop_stop()
            twin.disconnect()
        wait_for(lambda: src.connected, 15, "our input to reconnect once the twin has gone")
        src.stop()
    lines = [r for r in caplog.records if TAKEOVER_LINE in r.getMessage()]
    assert len(reports) == 1 and len(lines) == 1, [r.getMessage() for r in lines]
    assert src.takeover.takeovers == 1
    assert lines[0].levelno == logging.ERROR and repr(client_id) in lines[0].getMessage()
    assert "mqtt.client_id" in lines[0].getMessage()  # says how to fix it
    # Mosquitto 2.0.11 closes the old connection without a DISCONNECT 0x8E even under MQTT 5 (its log says
    # "Client … already connected, closing old connection."), so both protocols are caught by the repeated closes.
    assert "closed our connection 3 times" in lines[0].getMessage()


def test_takeover_watch_episodes_and_the_mqtt5_reason() -> None:
    """Unit level: one close is a restart; three quick ones are an episode, reported once until a connection
    lasts; an MQTT 5 DISCONNECT 0x8E (brokers that send it) is reported at once."""
    from ingest.mqtt_session import TakeoverWatch

    now = [0.0]
    reports: list[int] = []
    watch = TakeoverWatch("MQTT input", "gw-in", "h", 1883, lambda: reports.append(1), clock=lambda: now[0])
    for step in (100.0, 1.0, 1.0, 1.0, 1.0, 1.0):  # a broker restart after 100 s, then a twin every second
        watch.connected()
        now[0] += step
        watch.closed_by_broker()
    assert reports == [1] and watch.takeovers == 1
    watch = TakeoverWatch("MQTT input", "gw-in", "h", 1883, lambda: reports.append(2), clock=lambda: now[0])
    for _ in range(5):  # a broker restarted five times in a minute: each reconnect needed retries
        watch.connected(failures=2)
        now[0] += 5.0
        watch.closed_by_broker()
    assert reports == [1] and watch.takeovers == 0
    watch.connected()
    now[0] += 120.0  # the twin is gone: a connection lasts, the episode ends
    assert watch.closed_by_broker() is False
    assert watch.closed_by_broker(definite=True) is True and reports == [1, 2]


@pytest.mark.parametrize("kind", INPUTS)
def test_retained_message_is_acknowledged_and_counted_not_read(kind: str, mosquitto: Mosquitto) -> None:
    prefix = f"ret{kind}{time.time_ns() % 10**9}"
    pub = _publisher(mosquitto.port)
    (old_topic, old_payload), (live_topic, live_payload) = messages(prefix, 2)
    pub.publish(old_topic, old_payload, qos=1, retain=True).wait_for_publish(timeout=10)
    got = Collector()
    src = _source(kind, got, mosquitto.port, f"{prefix}-in", [_route(f"{prefix}/+/json")])
    try:
        wait_for(lambda: got.rejections, 10, "the retained copy at subscription")
        pub.publish(live_topic, live_payload, qos=1).wait_for_publish(timeout=10)
        wait_for(lambda: got.count() == 1, 10, "the live message")
        assert got.keys == [("d1", got.keys[0][1])]  # the live one only
        (reason,) = got.rejections
        assert reason.startswith("retained message ignored: ") and old_topic in reason
    finally:
        src.stop()
        pub.publish(old_topic, b"", qos=1, retain=True).wait_for_publish(timeout=10)  # clear the retained copy
        _stop(pub)


@pytest.mark.parametrize("kind", INPUTS)
def test_payload_without_a_device_id_is_refused_with_the_fix(kind: str, mosquitto: Mosquitto) -> None:
    """airrohr's local data.json names no device: `run` needs the id from the route (item 18)."""
    prefix = f"noid{kind}{time.time_ns() % 10**9}"
    data_json = (Path(__file__).parents[1] / "formats" / "vectors" / "airrohr" / "local_data_json_without_id"
                 / "input.json").read_bytes()
    got = Collector()
    routes = [Route(f"{prefix}/anon", get_kind("airrohr")), Route(f"{prefix}/+/named", get_kind("airrohr"), "{1}")]
    src = _source(kind, got, mosquitto.port, f"{prefix}-in", routes)
    pub = _publisher(mosquitto.port)
    try:
        wait_for(lambda: src.connected, 10, "the connection")
        time.sleep(0.3)  # the SUBSCRIBE goes out right after CONNACK; let the broker register it
        pub.publish(f"{prefix}/anon", data_json, qos=1).wait_for_publish(timeout=10)
        pub.publish(f"{prefix}/kit7/named", data_json, qos=1).wait_for_publish(timeout=10)
        wait_for(lambda: got.count() == 5, 10, "the readings of the named device")
        assert {d for d, _ in got.keys} == {"kit7"}
        (reason,) = got.rejections
        assert "no device id" in reason and "set device_id on the route" in reason
    finally:
        src.stop()
        _stop(pub)


@pytest.mark.parametrize("kind", INPUTS)
def test_gateway_forgets_a_removed_route_across_restarts_and_counts_takeovers(
        kind: str, mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Through the composition root: the record lives in data_dir, a config change unsubscribes on the next run,
    and a takeover report lands in /metrics as citygw_mqtt_session_takeovers_total{client="in"}."""
    from gateway.app import Gateway
    from gateway.settings import load_settings

    prefix = f"gw{kind}{time.time_ns() % 10**9}"

    def config(*topics: str) -> Any:
        routes = "".join(f'\n[[mqtt.routes]]\ntopic = "{t}"\nformat = "json"\ndevice_id = "{{2}}"\n' for t in topics)
        path = tmp_path / "kit.toml"
        path.write_text(f'[gateway]\nid = "{prefix}"\ndata_dir = "{tmp_path}/data"\nstatus_listen = ""\n\n'
                        f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\ninput_client = "{kind}"\n'
                        f'[mqtt.feed]\nenabled = false\n{routes}', encoding="utf-8")
        return load_settings(path, env={})

    keep, drop = f"{prefix}/keep/+/json", f"{prefix}/drop/+/json"
    record = tmp_path / "data" / "mqtt-subscriptions.json"
    gateway = Gateway(config(keep, drop))
    gateway.start()
    try:
        wait_for(lambda: gateway.mqtt_source is not None and gateway.mqtt_source.connected, 15, "the MQTT input")
        assert record.exists() and drop in record.read_text()
    finally:
        gateway.stop()
    gateway = Gateway(config(keep))
    gateway.start()
    pub = _publisher(mosquitto.port)
    try:
        source = gateway.mqtt_source
        assert source is not None
        wait_for(lambda: source.memory.recorded() == [keep], 15, "the removed route's UNSUBACK")
        assert drop not in record.read_text()
        for t, p in [*messages(f"{prefix}/drop", 2), *messages(f"{prefix}/keep", 1, start=5)]:
            pub.publish(t, p, qos=1).wait_for_publish(timeout=10)
        wait_for(lambda: gateway.pipeline.accepted == 1, 15, "the reading of the kept route")
        assert gateway.pipeline.rejected_count == 0
        source.takeover.on_takeover()  # what a detected takeover calls (detection: the tests above)
        value = gateway.metrics.registry.get_sample_value("citygw_mqtt_session_takeovers_total", {"client": "in"})
        assert value == 1.0
    finally:
        _stop(pub)
        gateway.stop()
