"""Fault: hostile device ids and tags, and a sink refusing one entry over and over (issue 10, items 9 and 10).

- Every character MQTT forbids in a topic (C0/C1 controls, DEL, surrogates, non-characters) is replaced in the
  feed's topic levels: real Mosquitto accepts every topic, and a running gateway whose device id holds a tab
  keeps its feed connection and delivers everything.
- A sink refused the same entry again and again, while it accepts the entries behind it, dead-letters that
  entry (counted, logged, kept) instead of stalling; an outage (everything refused) dead-letters nothing.
- A newline in a device id or tag becomes a space in real influxd 1.6.7 and VictoriaMetrics (README schema).
"""

from __future__ import annotations

import http.server
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from devices.reading import Reading
from gateway.journal import Entry, Journal
from gateway.metrics import Metrics
from gateway.sinks.base import Delivery
from gateway.sinks.influx import InfluxV1Sink, InfluxV2Sink
from gateway.sinks.mqtt_feed import MqttFeedSink, topic_level
from ingest.mqtt_client import MqttOptions
from tests.reliability.support import GatewayProcess, StatusPage, kit_config, metric, wait_for
from tests.servers import InfluxV1, Mosquitto, VictoriaMetrics

S = 10**9
T0 = 1_767_225_600 * S

# One of each kind of character Mosquitto refuses in a topic, plus the separators and wildcards.
FORBIDDEN = ["tab\there", "nl\nhere", "cr\rhere", "del\x7fhere", "nel\x85here", "c1\x9fend", "nul\x00",
             "surrogate\udc80", "nonchar\ufffe", "nonchar\ufdd0", "plane16\U0010ffff", "a/b", "a+b", "a#b"]


class _Subscriber:
    """Collects (topic, payload) of everything under a filter on a real broker."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{time.time_ns()}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic_filter, qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def topics(self) -> set[str]:
        """Topics seen so far."""
        with self._lock:
            return {t for t, _ in self.messages}

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


def test_topic_level_leaves_only_characters_mosquitto_accepts(mosquitto: Mosquitto) -> None:
    levels = [topic_level(text) for text in FORBIDDEN]
    assert all(level.isprintable() and "/" not in level and "+" not in level and "#" not in level
               for level in levels)
    assert topic_level("Zürich – Ωmega 東京 ok") == "Zürich – Ωmega 東京 ok"  # printable unicode is kept
    prefix = f"hostile-{time.time_ns()}"
    sub = _Subscriber(mosquitto.port, f"{prefix}/#")
    disconnects: list[object] = []
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.time_ns()}")
    pub.on_disconnect = lambda *args: disconnects.append(args)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        time.sleep(0.2)  # let the subscription settle (SUBACK) before publishing
        infos = [pub.publish(f"{prefix}/{level}", b"1", qos=1) for level in levels]
        for info in infos:
            info.wait_for_publish(timeout=10)
        assert all(info.is_published() for info in infos)
        wait_for(lambda: len(sub.topics()) == len(set(levels)), 10, "every sanitised topic delivered")
        assert disconnects == []  # the broker never dropped us as "malformed"
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.close()


def test_device_id_with_a_tab_does_not_block_the_feed(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A running gateway, real Mosquitto: a device id holding a tab reaches the feed under a clean topic."""
    gw_id = f"tab-{time.time_ns() % 10**9}"
    status = StatusPage()
    cfg = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json",
                     extra="\n[mqtt.feed]\nraw = true\n")
    sub = _Subscriber(mosquitto.port, f"citygw/{gw_id}/#")
    gateway = GatewayProcess(cfg, tmp_path / "gw.log").start()
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "gateway connected")
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{gw_id}")
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        for i in range(20):
            now_s = time.time()
            for device in ("kerb\tside", "ok-1"):
                body = orjson.dumps({"device_id": device, "ts": now_s, "values": {"pm2_5": 5.0 + i}})
                pub.publish(f"{gw_id}/x/json", body, qos=1).wait_for_publish(timeout=10)
            time.sleep(0.05)
        pub.loop_stop()
        pub.disconnect()
        want = {f"citygw/{gw_id}/reading/kerb_side/pm2_5", f"citygw/{gw_id}/reading/ok-1/pm2_5",
                f"citygw/{gw_id}/kpi/kerb_side/pm2_5/10s", f"citygw/{gw_id}/kpi/ok-1/pm2_5/10s"}
        wait_for(lambda: want <= sub.topics(), 60, "raw readings and KPIs of both devices on the feed")
        raw = [t for t, _ in sub.messages if t.endswith("/reading/kerb_side/pm2_5")]
        assert len(raw) == 20
        payload = orjson.loads(next(p for t, p in sub.messages if t.endswith("/reading/kerb_side/pm2_5")))
        assert payload["device_id"] == "kerb\tside"  # the payload keeps the id exactly; only the topic is cleaned
        wait_for(lambda: all(s["lag"] == 0 for s in status.status().get("sinks", [{"lag": 1}])), 30,
                 "every sink caught up")
        assert "malformed" not in mosquitto.log_tail(400).lower()
    finally:
        gateway.stop()
        sub.close()


class _UnsanitisedFeed(MqttFeedSink):
    """The real feed sink with the topic cleaning taken out: the broker refuses a topic holding a tab."""

    def topic_for(self, e: Entry) -> str:
        """The device id as it is, control characters included."""
        return f"{self.prefix}/reading/{e.device_id}/{e.quantity}"


def test_a_publish_the_broker_refuses_is_dead_lettered_and_the_feed_flows(tmp_path: Path,
                                                                          mosquitto: Mosquitto) -> None:
    """Mosquitto drops the connection on the bad publish, every time; paho would send it first after every
    reconnect. The sink starts a fresh client, Delivery isolates the entry and dead-letters it."""
    prefix = f"poison-{time.time_ns() % 10**9}"
    journal = Journal(tmp_path / "j.sqlite")
    journal.append([Reading("bad\tid" if i == 2 else "good", "pm2_5", float(i), "ug/m3", T0 + i * S)
                    for i in range(6)])
    sub = _Subscriber(mosquitto.port, f"{prefix}/reading/#")
    opts = MqttOptions(host="127.0.0.1", port=mosquitto.port, client_id=f"{prefix}-feed")
    sink = _UnsanitisedFeed("feed", opts, prefix, raw=True, publish_timeout_s=0.5)
    delivery = Delivery(sink, Journal(tmp_path / "j.sqlite"), Metrics(), backoff_initial_s=0.05,
                        backoff_max_s=0.2)
    try:
        time.sleep(0.2)  # the subscription settles
        delivery.start()
        wait_for(lambda: delivery.cursor == 6, 90, "the cursor past every entry")
        ((_, seq, reason, body),) = journal.dead_letters()
        assert seq == 3 and "refused 5 times in a row" in reason and '"bad\\tid"' in body
        wait_for(lambda: sorted({orjson.loads(p)["value"] for _, p in sub.messages}) == [0.0, 1.0, 3.0, 4.0, 5.0],
                 30, "every good entry on the broker")
    finally:
        delivery.stop()
        delivery.journal.close()
        sub.close()
        journal.close()


class _RefusingProxy:
    """An HTTP proxy in front of real influxd that answers 503 to any write whose body holds `refuse`
    (or to every request while `outage` is set), and forwards everything else."""

    def __init__(self, target: str, refuse: bytes) -> None:
        self.target = target.rstrip("/")
        self.refuse = refuse
        self.outage = threading.Event()
        self.answers: list[int] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                """Refuse or forward a write."""
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.outage.is_set() or proxy.refuse in body:
                    status, data = 503, b'{"error":"refused by the test proxy"}'
                else:
                    req = urllib.request.Request(proxy.target + self.path, data=body, method="POST",
                                                 headers={"Content-Type": "text/plain"})
                    try:
                        with urllib.request.urlopen(req, timeout=30) as resp:
                            status, data = resp.status, resp.read()
                    except urllib.error.HTTPError as exc:
                        status, data = exc.code, exc.read()
                proxy.answers.append(status)
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="refusing-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def _values(influx: InfluxV1, db: str) -> list[float]:
    return [row["value"] for row in influx.query("SELECT value FROM reading", db=db)]


def test_an_entry_refused_over_and_over_is_dead_lettered_not_stalling(
        tmp_path: Path, influx_v1: InfluxV1, caplog: pytest.LogCaptureFixture) -> None:
    db = f"poison_{time.time_ns() % 10**9}"
    influx_v1.create_database(db)
    proxy = _RefusingProxy(influx_v1.url, refuse=b"device_id=poison")
    journal = Journal(tmp_path / "j.sqlite")
    journal.append([Reading("poison" if i == 3 else "good", "pm2_5", float(i), "ug/m3", T0 + i * S)
                    for i in range(10)])
    metrics = Metrics()
    delivery = Delivery(InfluxV1Sink("influx", proxy.url, db, gzip_body=False), Journal(tmp_path / "j.sqlite"),
                        metrics, backoff_initial_s=0.05, backoff_max_s=0.2, flush_interval_s=0.1)
    try:
        with caplog.at_level(logging.ERROR, logger="citygw.delivery"):
            delivery.start()
            wait_for(lambda: sorted(_values(influx_v1, db)) == [float(i) for i in range(10) if i != 3], 60,
                     "every good point in influxd")
            wait_for(lambda: delivery.cursor == 10, 30, "the cursor past every entry")
        ((sink, seq, reason, body),) = journal.dead_letters()
        assert (sink, seq) == ("influx", 4) and "device_id=poison" in body
        assert "refused 5 times in a row" in reason and "503" in reason
        assert metric(_exposition(metrics), "citygw_sink_dead_letters_total", sink="influx") == 1
        assert any("refused 1 entry for good" in r.getMessage() for r in caplog.records)
    finally:
        delivery.stop()
        delivery.journal.close()
        proxy.close()
        journal.close()


def test_an_outage_dead_letters_nothing(tmp_path: Path, influx_v1: InfluxV1) -> None:
    db = f"outage_{time.time_ns() % 10**9}"
    influx_v1.create_database(db)
    proxy = _RefusingProxy(influx_v1.url, refuse=b"\x00never")
    proxy.outage.set()
    journal = Journal(tmp_path / "j.sqlite")
    journal.append([Reading("good", "pm2_5", float(i), "ug/m3", T0 + i * S) for i in range(10)])
    metrics = Metrics()
    delivery = Delivery(InfluxV1Sink("influx", proxy.url, db, gzip_body=False), Journal(tmp_path / "j.sqlite"),
                        metrics, backoff_initial_s=0.05, backoff_max_s=0.1, flush_interval_s=0.1)
    try:
        delivery.start()
        # Far more refusals than it takes to dead-letter a poison entry: the probes were refused too.
        wait_for(lambda: len(proxy.answers) >= 40, 60, "many refused writes")
        assert journal.dead_letters() == []
        proxy.outage.clear()
        wait_for(lambda: sorted(_values(influx_v1, db)) == [float(i) for i in range(10)], 60,
                 "everything delivered after the outage")
        assert journal.dead_letters() == []
    finally:
        delivery.stop()
        delivery.journal.close()
        proxy.close()
        journal.close()


def _exposition(metrics: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def test_newline_in_device_id_and_tag_is_stored_as_a_space(
        tmp_path: Path, influx_v1: InfluxV1, victoria: VictoriaMetrics) -> None:
    """README: newlines become spaces. Real influxd 1.6.7 and VictoriaMetrics store them so."""
    db = f"newline_{time.time_ns() % 10**9}"
    influx_v1.create_database(db)
    device = f"kerb\nside-{time.time_ns() % 10**9}"
    journal = Journal(tmp_path / "j.sqlite")
    journal.append([Reading(device, "pm2_5", 1.5, "ug/m3", T0, {"site": "line one\nline two", "cr": "a\r\nb"}),
                    Reading("plain", "pm2_5", 2.5, "ug/m3", T0)])
    entries = journal.read_after(0, 10)
    v1 = InfluxV1Sink("t", influx_v1.url, db)
    v1.write(entries)  # one batch: before the fix influxd answered 400 for the whole batch
    rows = influx_v1.query("SELECT value, device_id, site, cr FROM reading", db=db)
    flat = device.replace("\n", " ")
    assert sorted((r["device_id"], r["value"]) for r in rows) == [(flat, 1.5), ("plain", 2.5)]
    (row,) = [r for r in rows if r["device_id"] == flat]
    assert (row["site"], row["cr"]) == ("line one line two", "a  b")
    v2 = InfluxV2Sink("t", victoria.url, "org", "bucket", "token")
    v2.write(entries)
    v2.close()
    (series,) = victoria.export(f'{{__name__="reading_value",device_id="{flat}"}}')
    assert series.labels["site"] == "line one line two"
    assert series.points() == [(T0 // 10**6, 1.5)]
    journal.close()
