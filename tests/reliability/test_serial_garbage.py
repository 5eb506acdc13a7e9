"""Fault: garbage bytes, cut frames and corrupted frames on a serial line, between good frames.

Every bad span is rejected with a reason and counted (/metrics citygw_rejected_total per device and reason);
every good frame around them is kept, in order, with nothing invented. The frames come in one burst, so
several good frames share one read: each must still be kept (not taken for a duplicate of its neighbour).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from devices import pms5003
from simulators.pty_device import PtyDevice
from tests.reliability.support import (
    GatewayProcess,
    StatusPage,
    device_state,
    metric,
    serial_config,
    stored_readings,
    wait_for,
)

SEED = 5003


def _frame(pm25: int) -> bytes:
    # Values chosen so that no data byte is 0x42 or 0x4D: the only headers in the stream are real ones.
    return pms5003.encode({"pm1_0": 3, "pm2_5": pm25, "pm10": 9})


def test_garbage_and_cut_frames_are_rejected_and_good_frames_kept(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    device = PtyDevice(link=tmp_path / "ttyPMS")
    status = StatusPage()
    gateway = GatewayProcess(serial_config(tmp_path, "garbage", status, str(tmp_path / "ttyPMS")),
                             tmp_path / "gateway.log").start()
    try:
        # Warm up until the gateway has the port open (pyserial drops what arrived before the open).
        def warm() -> bool:
            device.write(_frame(1))
            return bool(device_state(status, "pm-1").get("readings", 0) > 0)

        wait_for(warm, 30, "the gateway reading the port")
        time.sleep(0.3)
        stream = bytearray()
        good: list[int] = []
        faults = {"garbage": 0, "cut": 0, "corrupt": 0}
        for i in range(60):
            value = 100 + i
            good.append(value)
            stream += _frame(value)
            kind = ("garbage", "cut", "corrupt", None)[i % 4]
            if kind == "garbage":
                stream += bytes(rng.choice([b for b in range(256) if b not in (0x42, 0x4D)])
                                for _ in range(rng.randint(1, 40)))
            elif kind == "cut":
                stream += _frame(900)[: rng.randint(5, 28)]
            elif kind == "corrupt":
                bad = bytearray(_frame(901))
                bad[rng.randint(6, 29)] ^= 0x01
                stream += bad
            if kind:
                faults[kind] += 1
        stream += _frame(160)  # a last good frame so the trailing fault is followed by a header
        good.append(160)
        device.write(bytes(stream))

        def values() -> list[float]:
            return [r["value"] for r in stored_readings(tmp_path, "pm-1", "pm2_5") if r["value"] >= 100]

        wait_for(lambda: len(values()) >= len(good), 30, f"{len(good)} good frames stored")
        time.sleep(0.5)
        text = status.metrics()
    finally:
        code = gateway.stop()
        device.close()
    assert code == 0, gateway.log()
    assert values() == [float(v) for v in good]  # all good frames, in order, nothing from the bad ones
    stored = stored_readings(tmp_path, "pm-1", "pm2_5")
    assert len({r["ts"] for r in stored}) == len(stored)
    assert 901.0 not in {r["value"] for r in stored} and 900.0 not in {r["value"] for r in stored}
    garbage = metric(text, "citygw_rejected_total", device="pm-1", reason="garbage bytes before frame header skipped")
    checksum = metric(text, "citygw_rejected_total", device="pm-1", reason="checksum mismatch")
    total = metric(text, "citygw_rejected_total", device="pm-1")
    assert garbage >= faults["garbage"] + faults["cut"]  # the tail of a cut frame is garbage before the next one
    assert checksum >= faults["corrupt"] + faults["cut"]  # a cut frame fails its check against the next bytes
    assert total == garbage + checksum  # no other kind of rejection, and nothing uncounted
    assert metric(text, "citygw_readings_total", device="pm-1") >= len(good) * 12
    log = gateway.log()
    assert "checksum mismatch: frame says" in log and "garbage bytes before frame header skipped" in log
