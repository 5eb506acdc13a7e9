"""The live MQTT feed as a subscriber sees it: a real gateway publishes to a real Mosquitto and `citygw watch`'s
client (gateway/feed_client.py, aiomqtt) receives. Every payload is validated against the JSON Schemas shipped in
schemas/feed/; the retained meta describes the kit; raw readings are reported by exception; points that reach the
broker only after an outage carry "historical": true, the others false."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest

from devices.reading import Reading
from gateway.app import Gateway
from gateway.feed_client import Kpi, Meta, RawReading, Status
from gateway.feed_meta import birth_info
from gateway.journal import KIND_READING, Entry
from gateway.settings import ConfigError, FeedSection, load_settings
from gateway.sinks.mqtt_feed import MqttFeedSink, ReportByException
from ingest.mqtt_client import MqttOptions
from simulators.pty_device import StreamingPtyDevice
from tests.feeds.mqtt_feed_support import Collector, S, feed_config, instance, reading, validators
from tests.integration.helpers import wait_for
from tests.servers import Mosquitto


def _gw_id(tag: str) -> str:
    return f"{tag}{time.time_ns() % 10**9}"


def _feed_sink(gateway: Gateway) -> MqttFeedSink:
    return next(s for s in gateway.sinks if isinstance(s, MqttFeedSink))


def test_subscriber_receives_schema_valid_payloads_and_the_retained_meta(tmp_path: Path,
                                                                          mosquitto: Mosquitto) -> None:
    gw = _gw_id("feed")
    pty = StreamingPtyDevice(lambda now: b"", period_s=1.0)  # a real serial device that stays silent
    cfg = feed_config(tmp_path, gw, mosquitto.port, feed="raw = true", extra=f"""
[[devices]]
id = "air-1"
kind = "pms5003"
port = "{pty.port}"
lat = 40.42
lon = -3.70
alt = 650.0
tags = {{ site = "plaza" }}

[[mqtt.routes]]
topic = "{gw}-in/+/json"
format = "json"
device_id = "{{1}}"

[locations]
noise-1 = {{ lat = 40.43, lon = -3.71 }}
""")
    settings = load_settings(cfg, env={})
    check = validators()
    feed = Collector(mosquitto.port, gateways=[gw], raw=True)
    gateway = Gateway(settings)
    try:
        wait_for(lambda: feed.connections >= 1, 30, "the subscriber subscribed")  # so meta and status come live
        gateway.start()
        wait_for(lambda: any(isinstance(m.data, Status) and m.data.online for m in feed.snapshot()), 30,
                 "the kit online on the feed")
        base = (time.time_ns() // (2 * S) - 6) * 2 * S  # 12 s ago, on a window boundary
        sent = [reading("air-1", "pm2_5", v, base + i * S // 2, "ug/m3") for i, v in enumerate([10.0, 20.0, 30.0])]
        sent += [reading("noise-1", "noise_laeq", 50.0 + i, base + i * S // 2, "dBA") for i in range(4)]
        gateway.pipeline.readings(sent)

        def kpi(device: str, name: str) -> list[Kpi]:
            return [m.data for m in feed.snapshot("kpi")
                    if isinstance(m.data, Kpi) and m.data.device_id == device and m.data.name == name]

        wait_for(lambda: kpi("air-1", "pm2_5") and kpi("noise-1", "noise_laeq"), 60, "both KPI series")
        wait_for(lambda: len(feed.snapshot("reading")) == len(sent), 30, "every raw reading")

        # Every message a subscriber received validates against the shipped schema of its kind.
        got = feed.snapshot()
        assert {m.kind for m in got} >= {"status", "meta", "kpi", "reading"}  # and "health" when published
        for m in got:
            errors = [e.message for e in check[m.kind].iter_errors(instance(m))]
            assert not errors, (m.topic, errors)
        assert feed.rejected == 0

        # The KPI points: the mean of the readings in the first 2 s window; sent promptly, so not historical.
        pm = kpi("air-1", "pm2_5")[0]
        assert (pm.window, pm.start, pm.end, pm.value, pm.count, pm.unit) == ("2s", base, base + 2 * S, 20.0, 3,
                                                                                "ug/m3")
        assert pm.gateway == gw and pm.historical is False and pm.valid is True
        # The raw readings, exactly as handed to the pipeline.
        raws = [m.data for m in feed.snapshot("reading") if isinstance(m.data, RawReading)]
        assert sorted((r.device_id, r.quantity, r.value, r.ts) for r in raws) == sorted(
            (r.device_id, r.quantity, r.value, r.ts) for r in sent)
        assert not any(r.historical for r in raws)

        # The meta: retained, published before "online", and exactly the kit's birth information.
        metas = [m for m in got if m.kind == "meta"]
        assert len(metas) == 1
        first_meta = next(i for i, m in enumerate(got) if m.kind == "meta")
        first_online = next(i for i, m in enumerate(got) if m.kind == "status")
        assert first_meta < first_online
        assert orjson.loads(metas[0].payload) == orjson.loads(orjson.dumps(birth_info(settings)))
        meta = metas[0].data
        assert isinstance(meta, Meta)
        assert meta.gateway == gw and meta.prefix == f"citygw/{gw}"
        assert meta.windows == ["2s"] and meta.feed.raw is True
        (dev,) = meta.devices
        assert (dev.id, dev.kind, dev.link, dev.tags) == ("air-1", "pms5003", "serial", {"site": "plaza"})
        assert dev.location is not None and (dev.location.lat, dev.location.lon, dev.location.alt) == (
            40.42, -3.70, 650.0)
        assert "pm2_5" in dev.quantities
        assert meta.routes[0].format == "json" and meta.routes[0].topic == f"{gw}-in/+/json"
        assert meta.locations["noise-1"].lat == 40.43
        assert meta.site is not None and (meta.site.lat, meta.site.lon) == (40.4168, -3.7038)

        # A subscriber that comes later gets the meta, the status and the latest KPIs as retained messages.
        late = Collector(mosquitto.port, gateways=[gw])
        try:
            wait_for(lambda: {m.kind for m in late.snapshot()} >= {"meta", "status", "kpi"}, 30,
                     "retained meta, status and KPIs for a late subscriber")
            kinds = {m.kind: m for m in late.snapshot()}
            assert kinds["meta"].retained and kinds["status"].retained and kinds["kpi"].retained
            assert kinds["meta"].payload == metas[0].payload
        finally:
            late.close()
    finally:
        gateway.stop()
        pty.close()
    try:
        wait_for(lambda: any(isinstance(m.data, Status) and not m.data.online for m in feed.snapshot()), 30,
                 "offline after a clean stop")
    finally:
        feed.close()


def test_raw_readings_are_reported_by_exception(tmp_path: Path, mosquitto: Mosquitto) -> None:
    gw = _gw_id("rbe")
    cfg = feed_config(tmp_path, gw, mosquitto.port, feed="""
raw = true
raw_deadband = { pm2_5 = 0.5 }
raw_max_interval = "10s"
historical_after = "10m"
""")
    feed = Collector(mosquitto.port, gateways=[gw], raw=True)
    gateway = Gateway(load_settings(cfg, env={}))
    try:
        gateway.start()
        base = (time.time_ns() // S - 60) * S
        values = [10.0, 10.3, 10.5, 10.6, 10.2, 10.2] + [10.4] * 8 + [9.8] * 11  # i = 0 … 24, one a second
        pm = [reading("air-1", "pm2_5", v, base + i * S, "ug/m3") for i, v in enumerate(values)]
        # A change of quality is reported even inside the deadband.
        pm.append(Reading("air-1", "pm2_5", 9.8, "ug/m3", base + 25 * S, quality="clock_unsynced"))
        noise = [reading("noise-1", "noise_laeq", 50.0, base + i * S, "dBA") for i in range(10)]
        for start in range(0, len(pm), 7):  # several journal batches: state carries across writes
            gateway.pipeline.readings(pm[start:start + 7] + noise[start:start + 7])

        def raws(quantity: str) -> list[RawReading]:
            return [m.data for m in feed.snapshot("reading")
                    if isinstance(m.data, RawReading) and m.data.quantity == quantity]

        wait_for(lambda: any(r.ts == base + 25 * S for r in raws("pm2_5")), 60, "the last pm2_5 reading")
        wait_for(lambda: len(raws("noise_laeq")) == 10, 30, "every noise reading")
        # First reading; 10.6 moved by more than 0.5 from 10.0 (10.5 did not: "more than"); 10.4 at 13 s is the
        # heartbeat, 10 s after 10.6; 9.8 moved by 0.6; 9.8 again at 24 s is the next heartbeat; then the
        # change of quality. One publisher connection keeps order, so nothing else came before the last one.
        assert [(r.ts - base) // S for r in raws("pm2_5")] == [0, 3, 13, 14, 24, 25]
        assert [r.value for r in raws("pm2_5")] == [10.0, 10.6, 10.4, 9.8, 9.8, 9.8]
        assert raws("pm2_5")[-1].quality == "clock_unsynced"
        # A quantity without a deadband is published every time, even unchanged.
        assert len(raws("noise_laeq")) == 10
        # What was held back is counted (and still journaled: the local store has every reading).
        assert gateway.metrics.registry.get_sample_value("citygw_feed_suppressed_total") == 26 - 6
        assert _feed_sink(gateway).report.suppressed == 20
    finally:
        gateway.stop()
        feed.close()
    stored = [orjson.loads(line) for f in (tmp_path / "data" / "store").glob("readings-*.jsonl")
              for line in f.read_bytes().splitlines()]
    assert sum(1 for r in stored if r["quantity"] == "pm2_5") == 26


def _entry(seq: int, value: float, ts_s: int, quantity: str = "pm2_5", device: str = "d") -> Entry:
    return Entry(seq, KIND_READING, ts_s * S, device, quantity, "ug/m3", value, "{}", "good", None)


def test_report_by_exception_remembers_only_what_was_acknowledged() -> None:
    rbe = ReportByException({"pm2_5": 1.0}, {"*": 60.0}, max_series=2)
    batch = [_entry(1, 5.0, 0), _entry(2, 5.5, 1), _entry(3, 7.0, 2)]
    chosen, pending, held = rbe.select(batch)
    assert [e.seq for e in chosen] == [1, 3] and held == 1
    # The write failed (no commit): the retry decides the same, instead of suppressing what was never sent.
    again, pending, held = rbe.select(batch)
    assert [e.seq for e in again] == [1, 3]
    rbe.commit(pending, held)
    assert rbe.suppressed == 1
    chosen, _, _ = rbe.select([_entry(4, 7.5, 3), _entry(5, 7.5, 62)])  # inside the band; then the heartbeat
    assert [e.seq for e in chosen] == [5]
    # State stays bounded: a third series evicts the least recently published one, whose next reading is sent.
    for seq, device in ((6, "e"), (7, "f")):
        chosen, pending, held = rbe.select([_entry(seq, 1.0, 0, device=device)])
        rbe.commit(pending, held)
    chosen, _, _ = rbe.select([_entry(8, 7.0, 63)])
    assert [e.seq for e in chosen] == [8]
    # Quantities without a deadband pass untouched.
    assert rbe.select([_entry(9, 1.0, 0, quantity="noise_laeq")] * 3)[2] == 0


def test_historical_flag_after_a_broker_outage(tmp_path: Path, fresh_mosquitto: Mosquitto) -> None:
    broker = fresh_mosquitto
    gw = _gw_id("hist")
    cfg = feed_config(tmp_path, gw, broker.port, feed='raw = true\nhistorical_after = "4s"')
    # A persistent session: the broker queues what is published while this subscriber reconnects.
    feed = Collector(broker.port, gateways=[gw], raw=True, persistent=True, client_id=f"{gw}-subscriber")
    gateway = Gateway(load_settings(cfg, env={}))
    sink = _feed_sink(gateway)
    sent: dict[int, str] = {}  # ts -> phase

    def emit(phase: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ts = time.time_ns()
            sent[ts] = phase
            gateway.pipeline.readings([reading("air-1", "pm2_5", float(len(sent)), ts, "ug/m3")])
            time.sleep(0.5)

    try:
        gateway.start()
        wait_for(lambda: sink._connected.is_set() and feed.connections >= 1, 30, "feed and subscriber connected")
        emit("before", 2.0)
        wait_for(lambda: len(feed.snapshot("reading")) == len(sent), 30, "the readings sent before the outage")
        down_ns = time.time_ns()
        broker.stop()
        emit("outage", 9.0)
        up_ns = time.time_ns()  # nothing can reach the broker before this instant
        broker.start()
        wait_for(lambda: sink._connected.is_set(), 30, "the feed reconnected")
        emit("after", 2.0)
        # Nothing lost: every reading reaches the subscriber, the outage's ones replayed from the journal.
        wait_for(lambda: {m.data.ts for m in feed.snapshot("reading") if isinstance(m.data, RawReading)}
                 >= set(sent), 60, "every reading on the feed")
    finally:
        gateway.stop()
        feed.close()
    after_s = 4 * S
    readings = [m.data for m in feed.snapshot("reading") if isinstance(m.data, RawReading)]
    by_phase = {phase: [r for r in readings if sent.get(r.ts) == phase] for phase in ("before", "outage", "after")}
    # Sent when the reading was new: not historical.
    assert by_phase["before"] and not any(r.historical for r in by_phase["before"])
    assert by_phase["after"] and not any(r.historical for r in by_phase["after"])
    # Taken during the outage more than historical_after before the broker came back: certainly sent late.
    late = [r for r in by_phase["outage"] if r.ts < up_ns - after_s]
    assert late and all(r.historical for r in late)
    # KPI windows: those that closed (end + 1 s grace) long before the broker returned are historical too;
    # those that reached the subscriber before the outage were not.
    kpis = [(m, t) for m, t in zip(feed.snapshot(), feed.arrived_ns, strict=True) if isinstance(m.data, Kpi)]
    # A window closes at end + grace (1 s): one that closed after the broker went down was sent after it returned.
    old = [m.data for m, _ in kpis if isinstance(m.data, Kpi) and down_ns < m.data.end + S < up_ns - after_s]
    assert old and all(k.historical for k in old)
    early = [m.data for m, t in kpis if t < down_ns and isinstance(m.data, Kpi)]
    assert not any(k.historical for k in early)


def test_the_feed_sink_touches_the_network_only_when_started(mosquitto: Mosquitto) -> None:
    client_id = _gw_id("nostart")
    opts = MqttOptions(host="127.0.0.1", port=mosquitto.port, client_id=client_id)
    idle = MqttFeedSink("mqtt-feed", opts, f"citygw/{client_id}")
    assert idle.client.socket() is None
    assert not any(client_id in t.name for t in threading.enumerate())
    idle.close()  # closing a sink that never started is a no-op

    sink = MqttFeedSink("mqtt-feed", opts, f"citygw/{client_id}")
    feed = Collector(mosquitto.port, prefixes=[f"citygw/{client_id}"])
    try:
        sink.start()
        wait_for(lambda: any(isinstance(m.data, Status) and m.data.online for m in feed.snapshot()), 30,
                 "online after start()")
    finally:
        sink.close()
        feed.close()


@pytest.mark.parametrize("kind", ["kpi", "reading", "status", "meta"])
def test_schema_refuses_a_broken_payload(kind: str) -> None:
    check = validators()[kind]
    broken: dict[str, object] = {"kpi": {"device_id": "d", "name": "pm2_5", "window": "1h", "start": 0, "end": 1,
                                         "unit": "ug/m3", "value": "12", "valid": True, "historical": False},
                                 "reading": {"device_id": "d", "quantity": "pm2_5", "value": 1.0, "unit": "ug/m3",
                                             "ts": 1, "historical": False, "extra": 1},
                                 "status": "away",
                                 "meta": {"schema": 1, "gateway": "bad id"}}
    assert list(check.iter_errors(broken[kind]))


@pytest.mark.parametrize(("feed", "line", "message"), [
    ('raw_deadband = { pm25 = 0.5 }', 4, "mqtt.feed.raw_deadband: unknown quantity pm25"),
    ('raw_deadband = { pm2_5 = -1 }', 4, "mqtt.feed.raw_deadband.pm2_5: Input should be greater than or equal to 0"),
    ('raw_max_interval = "5 minutes"', 4, "invalid duration '5 minutes'"),
    ('raw_deadband = { pm2_5 = 0.5 }\nraw_max_interval = { noise_laeq = "1m" }', 3,
     "raw_max_interval for noise_laeq has no effect without a deadband: add raw_deadband = { noise_laeq = 0 }"),
])
def test_feed_options_are_checked_at_load(tmp_path: Path, feed: str, line: int, message: str) -> None:
    cfg = tmp_path / "kit.toml"
    cfg.write_text(f'[mqtt]\nhost = "127.0.0.1"\n[mqtt.feed]\n{feed}\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    (problem,) = err.value.problems
    assert message in str(problem)
    assert problem.line == line  # the key's line; the [mqtt.feed] table's for a check across keys


def test_feed_options_parse() -> None:
    feed = FeedSection(raw_deadband={"pm2_5": 0.5, "*": 1.0}, raw_max_interval="5m", historical_after="2m")
    assert feed.raw_max_interval == {"*": 300.0} and feed.historical_after == 120.0
    assert FeedSection(raw_deadband={"pm2_5": 0}, raw_max_interval={"pm2_5": "1m"}).raw_max_interval == {"pm2_5": 60.0}
