"""The status page, as a technician's phone shows it: a real gateway (real Mosquitto, a simulated PMS5003 on a
pty, simulated JSON and Tasmota devices over MQTT, a sink answering 401) loaded in headless Chromium.

Checked in the DOM: every device and every KPI series of /status.json is on the page; the failing sink is
highlighted with an explanation instead of a raw `HTTP 401: {...}`; AQI values sit on their official colour;
each device with history has its server-drawn SVG chart; the page links /status.json and /metrics and fits a
412-pixel-wide screen without horizontal scrolling. A screenshot is saved under tests/artifacts/.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from aggregators.aqi import CATEGORIES
from simulators.mqtt_publishers import make_payload
from simulators.pms5003 import Pms5003Simulator
from tests.browser import save_screenshot
from tests.integration.helpers import publish_all
from tests.reliability.support import FaultProxy, GatewayProcess, StatusPage, kit_config, metric, wait_for
from tests.servers import InfluxV1, Mosquitto

S = 10**9
MINUTE = 60 * S


def _hex_to_rgb(colour: str) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def _kpi(status: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [k for k in status.get("kpis", []) if k["name"] == name]


def test_status_page_in_headless_chromium(tmp_path: Path, mosquitto: Mosquitto, influx_v1: InfluxV1,
                                          chrome: WebDriver) -> None:
    gw_id = f"page{time.time_ns() % 10**8}"
    proxy = FaultProxy(influx_v1.url, authorization="Bearer not-what-citygw-sends")  # answers 401
    serial_link = tmp_path / "ttyPMS"  # appears once the simulator runs: the device is "waiting" until then
    status = StatusPage()
    extra = f"""
[[mqtt.routes]]
topic = "{gw_id}/tele/+/SENSOR"
format = "tasmota"
device_id = "{{2}}"

[[devices]]
id = "air-pms-1"
kind = "pms5003"
port = "{serial_link}"
timeout = "500ms"

[local_store]
enabled = true
"""
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/sensors/+/json",
                        influx_url=proxy.url, database="never_reached", windows='["10s", "1h"]', extra=extra)
    text = config.read_text().replace('device_id = "{1}"', 'device_id = "{2}"', 1)
    config.write_text(text)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    sim: Pms5003Simulator | None = None
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        # Four hours of a JSON air sensor, one message a minute: hourly windows close, NowCast and US AQI follow.
        now = time.time_ns()
        start = now - now % MINUTE - 4 * 60 * MINUTE
        backfill = []
        for i in range(4 * 60):
            topic, payload = make_payload("json", 3, start + i * MINUTE, "air-json-1")
            backfill.append((f"{gw_id}/{topic}", payload))
        publish_all(mosquitto.port, backfill)
        wait_for(lambda: _kpi(status.status(), "us_aqi"), 60, "a US AQI point from the backfilled hours")

        sim = Pms5003Simulator(seed=5, period_s=0.5)
        serial_link.symlink_to(sim.stable_port)
        for _ in range(12):
            topic, payload = make_payload("tasmota", 4, time.time_ns(), "plug-7")
            publish_all(mosquitto.port, [(f"{gw_id}/{topic}", payload)])
            time.sleep(1.0)
        publish_all(mosquitto.port, [(f"{gw_id}/tele/plug-7/SENSOR", b'{"Time": "not a time", "ENERGY": 5}')])

        def ready() -> dict[str, Any] | None:
            st = status.status()
            devices = {d["id"]: d for d in st.get("devices", [])}
            kpi_devices = {k["device_id"] for k in st.get("kpis", []) if k["window"] == "10s"}
            failing = [s for s in st.get("sinks", []) if s["failing"]]
            if ({"air-pms-1", "plug-7", "air-json-1"} <= kpi_devices and failing
                    and devices.get("plug-7", {}).get("last_rejection")):
                return st
            return None

        st = wait_for(ready, 60, "10-second KPIs of every device, a failing sink and a rejection")
        chrome.get(f"http://{status.listen}/")
        wait_for(lambda: chrome.find_elements(By.ID, "health"), 20, "the page loaded")
        st = status.status()  # the snapshot closest to the page just loaded; KPIs only get added

        # Every device, with its kind and state.
        for d in st["devices"]:
            card = chrome.find_element(By.CSS_SELECTOR, f'section[data-device="{d["id"]}"]')
            assert d["kind"] in card.text and card.find_element(By.CSS_SELECTOR, ".badge").text
        kinds = {d["id"]: d["kind"] for d in st["devices"]}
        assert kinds["air-pms-1"] == "pms5003" and kinds["plug-7"] == "tasmota" and kinds["air-json-1"] == "json"
        assert "Last rejection" in chrome.find_element(By.CSS_SELECTOR, 'section[data-device="plug-7"]').text
        pms_card = chrome.find_element(By.CSS_SELECTOR, 'section[data-device="air-pms-1"]')
        assert "pm2_5" in pms_card.text and "last seen" in pms_card.text

        # Every KPI series (latest point of each): nothing cut off.
        rows = chrome.find_elements(By.CSS_SELECTOR, "tr[data-kpi]")
        on_page = {r.get_attribute("data-kpi") for r in rows}
        expected = {f"{k['device_id']}/{k['name']}/{k['window']}" for k in st["kpis"]}
        assert expected <= on_page, sorted(expected - on_page)
        # Many more points closed than the old page's bound of the 50 latest; the early hourly ones are still here.
        assert metric(status.metrics(), "citygw_kpi_points_total") > 50
        assert {"air-json-1/pm2_5/1h", "air-json-1/us_aqi/1h"} <= on_page

        # AQI values on their official colour.
        for k in _kpi(st, "us_aqi"):
            cell = chrome.find_element(By.CSS_SELECTOR,
                                       f'tr[data-kpi="{k["device_id"]}/us_aqi/{k["window"]}"] td.num')
            colour = next(c for _lo, hi, _name, c in CATEGORIES if k["value"] <= hi)
            assert cell.value_of_css_property("background-color") in (_hex_to_rgb(colour),
                                                                       _hex_to_rgb(colour).replace("rgb", "rgba")
                                                                       .replace(")", ", 1)"))

        # The failing sink is highlighted and explained; the healthy one is not.
        influx = chrome.find_element(By.CSS_SELECTOR, 'section[data-sink="influx"]')
        assert "failing" in (influx.get_attribute("class") or "")
        assert "refused our credentials" in influx.find_element(By.CSS_SELECTOR, ".error strong").text
        store = chrome.find_element(By.CSS_SELECTOR, 'section[data-sink="local-store"]')
        assert "failing" not in (store.get_attribute("class") or "")

        # A chart of the last 24 h for the backfilled device, drawn by the server.
        chart = chrome.find_element(By.CSS_SELECTOR, 'svg.chart[data-device="air-json-1"]')
        paths = chart.find_elements(By.TAG_NAME, "path")
        assert paths and all(len((p.get_attribute("d") or "").split()) >= 3 for p in paths)

        # Links, phone viewport, no horizontal scrolling, no script and nothing fetched from elsewhere.
        assert chrome.find_elements(By.CSS_SELECTOR, 'a[href="/status.json"]')
        assert chrome.find_elements(By.CSS_SELECTOR, 'a[href="/metrics"]')
        assert chrome.find_elements(By.CSS_SELECTOR, 'meta[name="viewport"]')
        assert chrome.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert not chrome.find_elements(By.TAG_NAME, "script")
        resources = chrome.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert not [r for r in resources if not r.startswith(f"http://{status.listen}")], resources
        path = save_screenshot(chrome, "status_page")
        assert path.stat().st_size > 10_000
        if os.environ.get("CITYGW_KEEP_PAGE"):
            (path.parent / "status_page.html").write_text(chrome.page_source)
    finally:
        code = gateway.stop()
        proxy.close()
        if sim is not None:
            sim.close()
    assert code == 0, gateway.log()
