"""Finding: MQTT devices never became unavailable (a Tasmota silent for 70 s still showed `available`).

A device heard over MQTT is unavailable once unheard for `health.stale_after`, by default 3x the longest of
its recent intervals (at least 5 s); it is available again when heard. Each change is logged once and shown on
/status.json and as `citygw_device_available`.
"""

from __future__ import annotations

import time
from pathlib import Path

from devices import json_mapping
from devices.reading import Reading
from gateway.device_book import FIRST_INTERVAL_STALE_S, MIN_STALE_S, DeviceBook
from tests.integration.helpers import publish_all
from tests.reliability.support import GatewayProcess, StatusPage, device_state, kit_config, metric, wait_for
from tests.servers import Mosquitto

S = 10**9


class FakeClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _reading(device: str) -> Reading:
    return Reading(device, "pm10", 12.0, "ug/m3", 1_700_000_000 * S)


def test_silent_mqtt_device_goes_unavailable_and_comes_back(tmp_path: Path, mosquitto: Mosquitto) -> None:
    gw_id = f"st{time.time_ns() % 10**8}"
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto.port, route_topic=f"{gw_id}/+/json")
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()

    def send(n: int) -> None:
        for _ in range(n):
            now = time.time_ns()
            publish_all(mosquitto.port, [(f"{gw_id}/tas-1/json", json_mapping.encode("tas-1", now, {"pm10": 9.0}))])
            time.sleep(0.5)

    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected")
        send(6)
        heard = device_state(status, "tas-1")
        assert heard["state"] == "available" and heard["kind"] == "json"
        assert MIN_STALE_S <= heard["stale_after_s"] < 10  # 3x a ~0.5 s interval, at least 5 s
        gone = wait_for(lambda: device_state(status, "tas-1")["state"] == "unavailable" and device_state(
            status, "tas-1"), 30, "the silent device marked unavailable")
        assert gone["reason"].startswith("not heard for") and "3x its longest recent interval" in gone["reason"]
        assert gone["last_seen_age_s"] >= MIN_STALE_S
        assert metric(status.metrics(), "citygw_device_available", device="tas-1") == 0
        send(1)
        wait_for(lambda: device_state(status, "tas-1")["state"] == "available", 30, "the device back")
        assert metric(status.metrics(), "citygw_device_available", device="tas-1") == 1
        time.sleep(1.5)  # a few more ticks: nothing more may be logged while it keeps quiet briefly
    finally:
        code = gateway.stop()
    assert code == 0, gateway.log()
    log = gateway.log()
    assert log.count("device tas-1 is unavailable: not heard for") == 1, log
    assert log.count("device tas-1 is available again") == 1, log


def test_stale_limit_rules() -> None:
    clock = FakeClock()
    reports: list[tuple[str, bool, str]] = []
    book = DeviceBook([("pm-serial", "pms5003")], mono=clock, wall=clock)
    book.report = lambda device, up, reason: reports.append((device, up, reason))
    book.accepted([_reading("mq-1")])
    assert reports == [("mq-1", True, "")]  # first heard: the gauge gets its 1
    # No interval seen yet: a long default, never the 5 s floor.
    clock.now += FIRST_INTERVAL_STALE_S - 1
    assert book.check_stale() == []
    clock.now += 2
    assert book.check_stale() == ["mq-1"]
    assert reports[-1][:2] == ("mq-1", False) and "no interval seen yet" in reports[-1][2]
    assert book.check_stale() == []  # reported once
    # Heard every 10 s, once after 40 s: the limit follows the longest recent gap, 3 x 40 s.
    for gap in (10, 10, 40, 10):
        clock.now += gap
        book.accepted([_reading("mq-1"), _reading("mq-1")])  # two readings of one message: one interval
    assert reports[-1] == ("mq-1", True, "")
    rec = next(d for d in book.snapshot() if d["id"] == "mq-1")
    assert rec["stale_after_s"] == 120
    # A burst (readings 0.1 s apart) is not an interval.
    clock.now += 0.1
    book.accepted([_reading("mq-1")])
    assert next(d for d in book.snapshot() if d["id"] == "mq-1")["stale_after_s"] == 120
    clock.now += 119
    assert book.check_stale() == []
    clock.now += 2
    assert book.check_stale() == ["mq-1"]
    # Serial devices are left to their port owner.
    assert next(d for d in book.snapshot() if d["id"] == "pm-serial")["state"] == "waiting"


def test_configured_stale_after_and_bounded_book() -> None:
    clock = FakeClock()
    book = DeviceBook(stale_after_s=2.0, mono=clock, wall=clock)
    book.accepted([_reading("a")])
    clock.now += 2.5
    assert book.check_stale() == ["a"]
    assert "stale_after" in next(d for d in book.snapshot() if d["id"] == "a")["reason"]
    book.rejected("b", "checksum mismatch: frame says 02c6")
    assert next(d for d in book.snapshot() if d["id"] == "b")["last_rejection"].startswith("checksum mismatch")
    from gateway import device_book

    small = DeviceBook(mono=clock, wall=clock)
    limit = device_book.MAX_DEVICES
    try:
        device_book.MAX_DEVICES = 3
        for i in range(5):
            clock.now += 1
            small.accepted([_reading(f"d{i}")])
        assert [d["id"] for d in small.snapshot()] == ["d2", "d3", "d4"] and small.evicted == 2
        small.accepted([_reading("d2")])  # heard again: now d3 is the least recently heard
        small.accepted([_reading("d5")])
    finally:
        device_book.MAX_DEVICES = limit
    assert [d["id"] for d in small.snapshot()] == ["d2", "d4", "d5"] and small.evicted == 3
