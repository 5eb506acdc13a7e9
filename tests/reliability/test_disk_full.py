"""Faults: the journal's disk fills up (issue 10, item 1), and the disk cap must count the WAL (item 2).

Both run the real `citygw run` with its data_dir on a real tmpfs of a few megabytes (tests/reliability/
small_disk.py), a real Mosquitto, and an InfluxDB URL nobody answers (the uplink is down, so nothing is
trimmed and the journal only grows).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from devices import json_mapping
from tests.integration.helpers import publish_all
from tests.reliability.small_disk import fill, small_tmpfs
from tests.reliability.support import GatewayProcess, StatusPage, journal_entries, kit_config, metric, wait_for
from tests.servers import Mosquitto, free_port

S = 10**9
MIB = 1024 * 1024
QUANTITIES = ("pm1_0", "pm2_5", "pm10", "no2", "o3", "so2", "co", "temperature", "relative_humidity", "pressure")


def _messages(gw_id: str, n: int, base_ns: int) -> list[tuple[str, bytes]]:
    """n messages of 10 readings each, from 5 devices, one second apart per device."""
    out = []
    for i in range(n):
        device = f"d{i % 5}"
        values = {q: float(10 + (i + k) % 50) if q != "pressure" else 1000.0 + i % 50
                  for k, q in enumerate(QUANTITIES)}
        out.append((f"{gw_id}/{device}/json", json_mapping.encode(device, base_ns + (i // 5) * S, values)))
    return out


def _healthz(status: StatusPage) -> tuple[int, list[str]]:
    try:
        with urllib.request.urlopen(f"http://{status.listen}/healthz", timeout=5) as resp:
            return int(resp.status), []
    except urllib.error.HTTPError as exc:
        return int(exc.code), list(orjson.loads(exc.read()).get("reasons", []))
    except OSError:
        return 0, []


def _config(tmp_path: Path, gw_id: str, status: StatusPage, port: int, extra: str = "") -> Path:
    # An InfluxDB nobody answers: the uplink is down, nothing is delivered, so nothing is trimmed.
    return kit_config(tmp_path, gw_id, status, mqtt_port=port, route_topic=f"{gw_id}/+/json",
                      influx_url=f"http://127.0.0.1:{free_port()}", database="citygw", windows='["1m"]',
                      extra=extra)


def test_disk_full_holds_acks_reports_it_and_resumes_when_space_returns(tmp_path: Path,
                                                                        mosquitto: Mosquitto) -> None:
    gw_id = f"full{time.time_ns() % 10**8}"
    status = StatusPage()
    n = 3000
    total = n * len(QUANTITIES)
    data = tmp_path / "data"
    with small_tmpfs(data, 8 * MIB):
        gateway = GatewayProcess(_config(tmp_path, gw_id, status, mosquitto.port), tmp_path / "gateway.log").start()
        try:
            wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
            ballast = fill(data / "ballast", leave_bytes=600 * 1024)  # the disk is (nearly) full
            base = (time.time_ns() // S - 3600) * S
            publish_all(mosquitto.port, _messages(gw_id, n, base))  # the broker took them all (PUBACKs)

            wait_for(lambda: metric(status.metrics(), "citygw_journal_write_errors_total", thread="ingest",
                                    reason="disk_full") > 0, 60, "the journal write failing on the full disk")
            wait_for(lambda: _healthz(status)[0] == 503, 30, "/healthz 503")
            code, reasons = _healthz(status)
            assert code == 503
            assert any(r.startswith("journal: disk full") for r in reasons), reasons
            stuck = status.status()["accepted"]
            assert stuck < total
            time.sleep(2)  # still full: nothing more is taken, nothing is acknowledged, nothing is lost
            assert status.status()["accepted"] == stuck

            ballast.unlink()  # space returns
            wait_for(lambda: status.status().get("accepted") == total, 120, "every reading journaled after")
            wait_for(lambda: not any(r.startswith("journal:") for r in _healthz(status)[1]), 30,
                     "/healthz without the journal reason")
            log = gateway.log()
            said = f"journal {data / 'journal.sqlite'}: cannot write: the disk is full"
            assert log.count(said) == 1, log[-3000:]  # said once, not once per retry
            assert "writing again after" in log
            assert "cannot rollback" not in log and "Traceback" not in log
            assert metric(status.metrics(), "citygw_thread_restarts_total") == 0  # no thread died
            readings = journal_entries(data / "journal.sqlite", kind=0)
            count, distinct = len(readings), len({(e[3], e[4], e[2]) for e in readings})
            assert count == distinct == total  # each reading once: held, then journaled, none lost or doubled
        finally:
            gateway.stop()


def test_disk_cap_counts_the_wal_so_the_cap_acts_before_the_disk_fills(tmp_path: Path,
                                                                        mosquitto: Mosquitto) -> None:
    gw_id = f"wal{time.time_ns() % 10**8}"
    status = StatusPage()
    # 60,000 readings: well over the cap. The journal packs a batch's readings into one row (about 30 bytes a
    # reading here, gateway/journal.py), so the cap is small enough for them to pass it.
    cap = 3 * MIB // 2
    n = 6000
    total = n * len(QUANTITIES)
    data = tmp_path / "data"
    peak = [0, 0]  # largest database + WAL seen, largest WAL seen
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            sizes = []
            for name in ("journal.sqlite", "journal.sqlite-wal"):
                try:
                    sizes.append((data / name).stat().st_size)
                except FileNotFoundError:
                    sizes.append(0)
            peak[0] = max(peak[0], sum(sizes))
            peak[1] = max(peak[1], sizes[1])

    with small_tmpfs(data, 10 * MIB):
        config = _config(tmp_path, gw_id, status, mosquitto.port, extra=f'\n[journal]\nmax_size = "{cap}B"\n')
        gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
        sampler = threading.Thread(target=sample, name="test-wal-sampler", daemon=True)
        sampler.start()
        try:
            wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
            base = (time.time_ns() // S - 7200) * S
            publish_all(mosquitto.port, _messages(gw_id, n, base))
            wait_for(lambda: status.status().get("accepted") == total, 120, "every reading accepted")
            wait_for(lambda: metric(status.metrics(), "citygw_journal_dropped_total") > 0, 30, "the cap acting")
            log = gateway.log()
            assert "over its cap" in log
            assert metric(status.metrics(), "citygw_journal_write_errors_total") == 0, log[-3000:]
            assert "disk is full" not in log
            # The database and its WAL together stay near the cap: checked four times a second, they exceed it
            # by at most what arrives in between (0.3 MiB seen at this rate; 1 MiB allowed on a loaded machine).
            print(f"peak database + WAL {peak[0]} bytes, peak WAL {peak[1]} bytes, cap {cap}")
            assert peak[0] <= cap + MIB, peak
        finally:
            stop.set()
            sampler.join(5)
            gateway.stop()
