"""Fault: the serial adapter is unplugged (the pty closes, its /dev/serial/by-id style link vanishes) and
plugged back in (a new pty behind the same link).

The gateway marks the device unavailable once, keeps running, reopens the port by itself with backoff and
marks the device available again on the next good frame; frames sent after the replug are all stored.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from devices import pms5003
from simulators.pty_device import PtyDevice
from tests.reliability.support import GatewayProcess, StatusPage, device_state, serial_config, stored_readings, wait_for


def test_unplugged_device_goes_unavailable_and_recovers_without_restart(tmp_path: Path) -> None:
    link = tmp_path / "usb-Plantower_PMS5003-if00-port0"
    device = PtyDevice(link=link)
    status = StatusPage()
    gateway = GatewayProcess(serial_config(tmp_path, "unplug", status, str(link)), tmp_path / "gateway.log").start()
    stop = threading.Event()
    counter = {"n": 0}

    def stream() -> None:
        while not stop.is_set():
            counter["n"] += 1
            device.write(pms5003.encode({"pm2_5": counter["n"] % 1000, "pm10": 7}))
            stop.wait(0.1)

    writer = threading.Thread(target=stream, name="pms-writer")
    writer.start()
    try:
        wait_for(lambda: device_state(status, "pm-1").get("readings", 0) >= 24, 30, "readings before the unplug")
        assert device_state(status, "pm-1")["available"] is True
        pid = gateway.proc.pid if gateway.proc else None
        device.unplug()
        assert not link.exists()
        wait_for(lambda: device_state(status, "pm-1").get("available") is False, 15, "the device unavailable")
        time.sleep(1.5)  # stays unplugged a while: the gateway retries opening the missing port
        assert device_state(status, "pm-1")["available"] is False
        before = len(stored_readings(tmp_path, "pm-1", "pm2_5"))
        sent_before = counter["n"]
        device.plug()
        assert link.resolve() == Path(device.port)
        wait_for(lambda: device_state(status, "pm-1").get("available") is True, 30, "the device available again")
        wait_for(lambda: len(stored_readings(tmp_path, "pm-1", "pm2_5")) >= before + 10, 30,
                 "readings after the replug stored")
        assert gateway.proc is not None and gateway.proc.pid == pid and gateway.proc.poll() is None
    finally:
        stop.set()
        writer.join()
        code = gateway.stop()
        device.close()
    log = gateway.log()
    assert code == 0, log
    assert log.count("device pm-1 is unavailable") == 1, log
    assert log.count("device pm-1 is available again") == 1, log
    assert log.count("running:") == 1  # never restarted
    after = [r["value"] for r in stored_readings(tmp_path, "pm-1", "pm2_5")][before:]
    # What arrives after the replug is the device's own consecutive frames, none lost once the port is open.
    assert after == [float(v) for v in range(int(after[0]), int(after[0]) + len(after))]
    assert after[0] > sent_before % 1000
