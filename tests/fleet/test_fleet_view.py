"""`citygw fleet` (issue 14 part 2) against three real `citygw run` kits on a real Mosquitto: every kit's
online/offline state, health reasons, devices up/down, backlog and last KPI, as JSON, as a terminal table and as
a web page in headless Chromium; a SIGKILLed kit and a frozen one (a cut network) show offline within the
kit's keepalive × 1.5."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from devices import json_mapping
from gateway.fleet import add_arguments, run_fleet
from tests.browser import save_screenshot
from tests.integration.helpers import REPO, GatewayProcess, publish_all, wait_for
from tests.servers import Mosquitto, free_port

S = 10**9
KEEPALIVE_S = 5
DEVICES = ("air-pm-1", "noise-1")


def _kit_config(tmp: Path, gw: str, mosquitto: Mosquitto, extra: str = "") -> Path:
    data = tmp / gw
    data.mkdir()
    path = data / "kit.toml"
    path.write_text(f"""
[gateway]
id = "{gw}"
data_dir = "{data / 'data'}"
status_listen = "127.0.0.1:0"

[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
keepalive = {KEEPALIVE_S}

[[mqtt.routes]]
topic = "{gw}/sensors/+/json"
format = "json"
device_id = "{{2}}"

[aggregation]
windows = ["10s"]
grace = "1s"
{extra}
""")
    return path


def _fleet_json(url: str) -> dict[str, Any]:
    """The fleet view's document; empty while the page is not up yet."""
    try:
        with urllib.request.urlopen(url + "fleet.json", timeout=10) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
    except OSError:
        return {"gateways": []}
    return doc


def _kits(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["gateway"]: g for g in doc["gateways"]}


def test_fleet_view_terminal_json_and_chromium(tmp_path: Path, mosquitto: Mosquitto, chrome: WebDriver) -> None:
    run = f"fleet{time.time_ns() % 10**9}"
    gws = [f"{run}-kit-{k}" for k in range(3)]
    dead_influx = free_port()  # nothing listens there: kit 2's sink lags, so it is unhealthy with a backlog
    extras = [
        "",
        '[health]\nstale_after = "3s"\n',  # kit 1's devices count as down 3 s after they fall silent
        f'[[influx]]\napi = "v1"\nurl = "http://127.0.0.1:{dead_influx}"\ndatabase = "x"\ntimeout = "1s"\n'
        '[health]\nsink_lag_after = "2s"\n',
    ]
    kits = [GatewayProcess(_kit_config(tmp_path, gw, mosquitto, extra), tmp_path / f"{gw}.log")
            for gw, extra in zip(gws, extras, strict=True)]
    listen_port = free_port()
    url = f"http://127.0.0.1:{listen_port}/"
    fleet_out = tmp_path / "fleet.jsonl"
    fleet_cmd = [sys.executable, "-m", "gateway.cli", "fleet", "--broker", f"127.0.0.1:{mosquitto.port}",
                 "--json", "--listen", f"127.0.0.1:{listen_port}", "--interval", "0.5"]
    for gw in gws:
        fleet_cmd += ["--gateway", gw]
    fleet = None
    try:
        for kit in kits:
            kit.start()
        with open(fleet_out, "wb") as out, open(tmp_path / "fleet.err", "wb") as err:
            fleet = subprocess.Popen(fleet_cmd, cwd=REPO, stdout=out, stderr=err)
        wait_for(lambda: [k["state"] for k in _kits(_fleet_json(url)).values()] == ["online"] * 3, 90,
                 "three kits online in the fleet view")
        for kit in kits:
            wait_for(lambda kit=kit: kit.input_connections(), 60, "the kit's MQTT input")  # type: ignore[misc]
        time.sleep(1.0)  # the SUBSCRIBE follows the CONNACK the kit logs
        base = (time.time_ns() // (10 * S)) * 10 * S - 40 * S
        publish_all(mosquitto.port, [
            (f"{gw}/sensors/{dev}/json", json_mapping.encode(dev, base + i * S, {"noise_laeq": 50.0 + i % 5}))
            for gw in gws for dev in DEVICES for i in range(15)])

        def settled() -> dict[str, dict[str, Any]] | None:
            kits_now = _kits(_fleet_json(url))
            ok = (kits_now[gws[0]]["devices_up"] == 2 and kits_now[gws[1]]["devices_down"] == 2
                  and kits_now[gws[2]]["healthy"] is False and kits_now[gws[2]]["backlog_entries"]
                  and all(k["last_kpi_end_ns"] == base + 10 * S for k in kits_now.values()))
            return kits_now if ok else None

        view = wait_for(settled, 90, "devices up/down, kit 2's sink lag and every kit's first KPI window")
        assert view is not None
        assert view[gws[0]]["healthy"] is True and view[gws[0]]["reasons"] == []
        assert view[gws[1]]["devices_up"] == 0
        assert any(r.startswith("sink influx") and "waiting" in r for r in view[gws[2]]["reasons"])
        assert view[gws[2]]["backlog_entries"] >= 2 * 15  # the readings it could not deliver
        assert all(k["version"] for k in view.values())

        # --json printed the same document, one per line, whenever it changed.
        lines = [json.loads(line) for line in fleet_out.read_text().splitlines() if line.strip()]
        assert lines and {g["gateway"] for g in lines[-1]["gateways"]} == set(gws)

        # The terminal table, in process.
        args = argparse.ArgumentParser()
        add_arguments(args)
        ns = args.parse_args(["--broker", f"127.0.0.1:{mosquitto.port}", "--duration", "4", "--interval", "3",
                              *[a for gw in gws for a in ("--gateway", gw)]])
        terminal = io.StringIO()
        assert run_fleet(ns, out=terminal) == 0
        table = terminal.getvalue().split("citygw fleet:")[-1]
        assert "3 kit(s), 3 online" in table, table
        for gw in gws:
            assert gw in table
        assert "2 up 0 down" in table and "0 up 2 down" in table and "sink influx" in table

        # The web page in Chromium: one row per kit, all online.
        chrome.get(url)
        rows = chrome.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
        assert sorted(r.get_attribute("data-gateway") or "" for r in rows) == sorted(gws)
        assert {r.get_attribute("data-state") for r in rows} == {"online"}
        assert "<script" not in chrome.page_source and "src=" not in chrome.page_source  # no CDN, no script
        unhealthy = chrome.find_element(By.CSS_SELECTOR, f'tr[data-gateway="{gws[2]}"] .health').text
        assert "sink influx" in unhealthy

        # A power cut (SIGKILL) and a cut network (the process frozen, its socket open): both offline within
        # keepalive × 1.5 (the broker's last will); the page shows them first, in red.
        assert kits[0].proc is not None and kits[1].proc is not None
        kits[0].kill()
        killed_at = time.monotonic()
        os.kill(kits[1].proc.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        # The broker's limit is keepalive × 1.5 from the kit's last packet; the margin is for a loaded machine
        # (the figure this test prints is what to look at, not the margin).
        margin = 10.0
        wait_for(lambda: _kits(_fleet_json(url))[gws[0]]["state"] == "offline", KEEPALIVE_S * 1.5 + margin,
                 "the SIGKILLed kit offline", interval=0.1)
        killed_s = time.monotonic() - killed_at
        wait_for(lambda: _kits(_fleet_json(url))[gws[1]]["state"] == "offline", KEEPALIVE_S * 1.5 + margin,
                 "the frozen kit offline", interval=0.1)
        frozen_s = time.monotonic() - frozen_at
        print(f"offline after SIGKILL: {killed_s:.1f} s; after a freeze: {frozen_s:.1f} s "
              f"(keepalive {KEEPALIVE_S} s)")
        chrome.get(url)
        rows = chrome.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")
        assert [r.get_attribute("data-state") for r in rows[:2]] == ["offline", "offline"]
        assert "2 not online" in chrome.find_element(By.ID, "summary").text
        save_screenshot(chrome, "fleet_page")
        os.kill(kits[1].proc.pid, signal.SIGCONT)
        wait_for(lambda: _kits(_fleet_json(url))[gws[1]]["state"] == "online", 60, "the thawed kit online again")
    finally:
        if fleet is not None:
            fleet.send_signal(signal.SIGTERM)
            fleet_code = fleet.wait(timeout=30)
        for kit in kits:
            if kit.proc is not None and kit.proc.poll() is None:
                os.kill(kit.proc.pid, signal.SIGCONT)
                kit.stop()
    assert fleet_code == 0, (tmp_path / "fleet.err").read_text()
