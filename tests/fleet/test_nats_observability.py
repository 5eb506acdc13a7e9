"""The NATS JetStream input is observable like the MQTT input: `citygw_nats_*` on /metrics (a sample from start),
a `nats:` reason on /healthz after `health.nats_down_after`, and a NATS block on /status.json and the status page,
against a real single-node nats-server (tests/fleet/nats_cluster.py `JetStreamServer`).

A gateway started while the server is down: `citygw_nats_connected` reads 0 from the first scrape, /healthz
answers 503 with the NATS reason once the limit has passed, and it stops promptly although nats-py is still
trying to connect. Then the server holds a partition whose durable consumer a killed predecessor left with
fetched, unacknowledged messages: a gateway fetches them again (counted as redelivered), acknowledges everything
after the journal commit, and /healthz says ok. The server is killed (503 with the reason, the gauge 0) and
restarted (200, the gauge 1). In Chromium, the status page
of a connected instance shows the NATS block and the kind of a device heard over NATS; a gateway without [nats]
has no NATS block and no NATS series.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
from nats.js.api import StreamConfig
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from devices import json_mapping
from gateway.app import Gateway
from gateway.settings import load_settings
from ingest.nats_source import NatsOptions, consumer_config
from tests.browser import save_screenshot
from tests.fleet.nats_cluster import JetStreamServer
from tests.reliability.support import GatewayProcess, StatusPage, gateway_section, kit_config, metric, wait_for

S = 10**9
STREAM = "UP"
MAX_ACK_PENDING = 1000
ACK_WAIT_S = 2


def nats_config(tmp: Path, gw_id: str, status: StatusPage, server: JetStreamServer) -> Path:
    """A central instance on the whole stream (subject up.>): canonical JSON, device id = topic level 1."""
    path = tmp / f"{gw_id}.toml"
    path.write_text(gateway_section(tmp, gw_id, status) + f"""
[nats]
servers = ["{server.url}"]
stream = "{STREAM}"
durable = "{gw_id}"
subject = "up.>"
max_ack_pending = {MAX_ACK_PENDING}
ack_wait = "{ACK_WAIT_S}s"
reconnect_max = "1s"

[[nats.routes]]
topic = "up/+/json"
format = "json"
device_id = "{{1}}"

[health]
nats_down_after = "2s"

[aggregation]
windows = ["10s"]
grace = "1s"
""")
    return path


def uplinks(devices: list[str], per_device: int) -> list[tuple[str, bytes]]:
    """(subject, payload) of canonical-JSON readings a second apart, ending now."""
    now = time.time_ns()
    return [(f"up.{d}.json", json_mapping.encode(d, now - (per_device - i) * S, {"pm10": 10.0 + i}))
            for d in devices for i in range(per_device)]


def prepare_partition(server: JetStreamServer, durable: str, messages: list[tuple[str, bytes]],
                      unacked: int) -> None:
    """The stream, the durable consumer as citygw creates it, the messages, and `unacked` of them fetched and never
    acknowledged: what an instance SIGKILLed right after a fetch leaves behind."""
    async def run() -> None:
        nc = await nats.connect(servers=[server.url])
        try:
            js = nc.jetstream(timeout=10)
            await js.add_stream(StreamConfig(name=STREAM, subjects=["up.>"]))
            await js.add_consumer(STREAM, consumer_config(NatsOptions(
                (server.url,), STREAM, durable, "up.>", max_ack_pending=MAX_ACK_PENDING, ack_wait_s=ACK_WAIT_S)))
            for subject, payload in messages:
                await js.publish(subject, payload)
            if unacked:
                sub = await js.pull_subscribe_bind(durable=durable, stream=STREAM)
                fetched = await sub.fetch(unacked, timeout=5)
                assert len(fetched) == unacked
        finally:
            await nc.close()

    asyncio.run(run())


def nats_reasons(status: StatusPage) -> list[str]:
    """The /healthz reasons about the NATS input (empty while healthy or not answering)."""
    code, body = status.healthz()
    return [r for r in body["reasons"] if r.startswith("nats:")] if code == 503 else []


def nats_metric(status: StatusPage, name: str, **labels: str) -> float | None:
    """One citygw_nats_* value, None while the gateway does not answer or the series is missing."""
    text = status.metrics()
    return metric(text, name, **labels) if f"\n{name}{{" in text else None


def test_nats_gauges_and_health_follow_the_server(tmp_path: Path) -> None:
    gw_id = f"nobs{time.time_ns() % 10**8}"
    server = JetStreamServer(tmp_path / "nats")  # its port is chosen; nothing listens there yet
    status = StatusPage()
    devices = ["js-1", "js-2", "js-3"]
    messages = uplinks(devices, 20)
    unacked = 15
    config = nats_config(tmp_path, gw_id, status, server)
    # First without the server: samples from the first scrape, and the reason, before any connection.
    gateway = GatewayProcess(config, tmp_path / "never.log").start()
    try:
        wait_for(lambda: nats_metric(status, "citygw_nats_connected") is not None, 30, "the NATS series")
        assert nats_metric(status, "citygw_nats_connected", consumer=gw_id) == 0
        for counter in ("messages", "redelivered", "acked", "errors"):
            assert f'citygw_nats_{counter}_total{{consumer="{gw_id}"}}' in status.metrics()
        assert nats_metric(status, "citygw_nats_ack_failures_total", reason="stopping") == 0
        reasons = wait_for(lambda: nats_reasons(status), 30, "the NATS reason (never connected)")
        assert server.url.removeprefix("nats://") in reasons[0] and "health.nats_down_after = 2 s" in reasons[0]
        assert f"consumer {gw_id}" in reasons[0] and "last error" in reasons[0], reasons
        block = status.status()["nats"]
        assert block["connected"] is False and block["last_error"] and block["durable"] == gw_id
    finally:
        assert gateway.stop() == 0, gateway.log()
    # The partition as a predecessor SIGKILLed right after a fetch leaves it: 15 messages fetched and never
    # acknowledged. The server keeps running (its delivery state is in memory; a stop and start may lose it).
    server.start()
    prepare_partition(server, gw_id, messages, unacked)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    try:
        wait_for(lambda: nats_metric(status, "citygw_nats_connected", consumer=gw_id) == 1, 30, "connected")
        wait_for(lambda: nats_metric(status, "citygw_nats_acked_total") == len(messages), 30,
                 "every message acknowledged after the journal commit")
        wait_for(lambda: status.healthz() == (200, "ok"), 30, "healthy once connected")
        text = status.metrics()
        # The predecessor's messages came again (after ack_wait): the only redeliveries.
        assert metric(text, "citygw_nats_redelivered_total", consumer=gw_id) == unacked
        assert metric(text, "citygw_nats_messages_total", consumer=gw_id) == len(messages)
        assert metric(text, "citygw_nats_ack_failures_total", consumer=gw_id) == 0
        assert metric(text, "citygw_nats_in_flight", consumer=gw_id) == 0
        assert sum(metric(text, "citygw_readings_total", device=d) for d in devices) == len(messages)
        wait_for(lambda: status.status()["nats"]["pending"] == 0, 30, "the consumer's pending count read")
        block = status.status()["nats"]
        assert block["connected"] and block["server"] == server.url.removeprefix("nats://")
        assert (block["fetched"], block["acked"], block["redelivered"]) == (len(messages), len(messages), unacked)

        server.kill()
        reasons = wait_for(lambda: nats_reasons(status), 30, "the NATS reason after the server was killed")
        assert "health.nats_down_after = 2 s" in reasons[0]
        assert nats_metric(status, "citygw_nats_connected", consumer=gw_id) == 0
        assert status.status()["nats"]["connected"] is False
        server.restart()
        wait_for(lambda: status.healthz() == (200, "ok"), 30, "healthy again after the server came back")
        assert nats_metric(status, "citygw_nats_connected", consumer=gw_id) == 1
    finally:
        code = gateway.stop()
        server.close()
    assert code == 0, gateway.log()
    assert gateway.log().count("unhealthy: nats:") == 1, gateway.log()  # once for the outage


def test_status_page_shows_the_nats_block_in_chromium(tmp_path: Path, chrome: WebDriver) -> None:
    gw_id = f"npage{time.time_ns() % 10**8}"
    server = JetStreamServer(tmp_path / "nats").start()
    status = StatusPage()
    messages = uplinks(["js-page-1"], 5)
    prepare_partition(server, gw_id, messages, 0)
    gateway = GatewayProcess(nats_config(tmp_path, gw_id, status, server), tmp_path / "gateway.log").start()
    try:
        wait_for(lambda: (status.status().get("nats") or {}).get("acked") == len(messages), 30, "the backlog acked")
        chrome.get(f"http://{status.listen}/")
        wait_for(lambda: chrome.find_elements(By.ID, "nats"), 20, "the page loaded")
        block = chrome.find_element(By.ID, "nats")
        text = block.text
        assert "NATS JetStream" in text and "connected" in block.find_element(By.CSS_SELECTOR, ".badge").text
        assert "NOT" not in text
        assert f"stream {STREAM}" in text and f"consumer {gw_id}" in text and "subject up.>" in text
        assert server.url.removeprefix("nats://") in text
        assert f"{len(messages)} fetched" in text and f"{len(messages)} acknowledged" in text
        assert "0 redelivered" in text and "0 acks not sent" in text
        # A device heard over NATS has its route's kind, like an MQTT device.
        card = chrome.find_element(By.CSS_SELECTOR, 'section[data-device="js-page-1"]')
        assert "json" in card.find_element(By.CSS_SELECTOR, ".meta").text
        assert {d["id"]: d["kind"] for d in status.status()["devices"]} == {"js-page-1": "json"}
        assert chrome.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        save_screenshot(chrome, "status_page_nats")
    finally:
        code = gateway.stop()
        server.close()
    assert code == 0, gateway.log()


def test_no_nats_block_or_series_without_nats(tmp_path: Path) -> None:
    status = StatusPage()
    gateway = Gateway(load_settings(kit_config(tmp_path, "plain-1", status), env={}))
    try:
        assert gateway.nats_source is None and gateway.status()["nats"] is None
        assert 'id="nats"' not in gateway.monitor.page()
        assert not [m for m in gateway.metrics.registry.collect() if m.name.startswith("citygw_nats")]
    finally:
        gateway.stop()
