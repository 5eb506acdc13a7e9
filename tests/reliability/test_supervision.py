"""Fault: a bug kills an owning thread (issue 10, item 13).

Every owning thread runs under the gateway's supervisor: a crash is logged once with its traceback, counted
in `citygw_thread_restarts_total{thread=…}` and restarted after a backoff; a thread that keeps crashing makes
`/healthz` answer 503 naming it. The threads are not daemons and `stop()` joins them (the leaked-thread
fixture of tests/conftest.py now sees citygw's own threads, daemon or not).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aggregators.windows import WindowEngine, WindowSpec
from devices import pms5003
from devices.reading import DecodeContext, Reading
from gateway.app import Gateway
from gateway.health import health_reasons
from gateway.journal import KIND_READING, Journal
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.settings import load_settings
from gateway.supervisor import Supervisor
from ingest.serial_port import SerialDevice, SerialPortOwner
from simulators.pty_device import PtyDevice
from tests.reliability.support import StatusPage, kit_config, metric, wait_for

S = 10**9
BUG_VALUE = 999  # a PM2.5 value the test decoder "cannot handle"


def _buggy_decode(frame: bytes, ctx: DecodeContext) -> list[Reading]:
    readings = pms5003.KIND.decode(frame, ctx)
    if any(r.quantity == "pm2_5" and r.value == BUG_VALUE for r in readings):
        raise ZeroDivisionError("a decoder bug: division by zero")  # not a DecodeError: a bug, not bad data
    return readings


def _pm25_values(journal: Journal) -> list[float]:
    return [e.value for e in journal.read_after(0, 100_000, KIND_READING) if e.quantity == "pm2_5"]


def test_decoder_bug_restarts_the_serial_owner_and_reading_goes_on(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    supervisor = Supervisor(registry, backoff_initial_s=0.2)
    engine = WindowEngine([WindowSpec.parse("1m")], grace_ns=2 * S)
    pipeline = Pipeline(Journal(tmp_path / "journal.sqlite"), engine, Metrics(), start_thread=supervisor.start)
    kind = dataclasses.replace(pms5003.KIND, decode=_buggy_decode)
    device = PtyDevice()
    owner = SerialPortOwner(SerialDevice("pm-bug", kind, device.port, timeout_s=0.5), pipeline,
                            start_thread=supervisor.start)
    pipeline.start()
    owner.start()
    try:
        def sent(value: int) -> bool:
            device.write(pms5003.encode({"pm1_0": 1, "pm2_5": value, "pm10": 2}))
            return value in _pm25_values(pipeline.journal)

        wait_for(lambda: sent(11), 30, "the owner reading the port")
        with caplog.at_level(logging.ERROR, logger="citygw.supervisor"):
            device.write(pms5003.encode({"pm1_0": 1, "pm2_5": BUG_VALUE, "pm10": 2}))
            wait_for(lambda: supervisor.crashes("citygw-serial-pm-bug") == 1, 30, "the crash")
            # Restarted: the port is reopened and new frames are decoded again.
            wait_for(lambda: sent(22), 30, "readings after the restart")
        assert BUG_VALUE not in _pm25_values(pipeline.journal)
        text = generate_latest(registry).decode()
        assert metric(text, "citygw_thread_restarts_total", thread="citygw-serial-pm-bug") == 1
        crash_logs = [r for r in caplog.records if "citygw-serial-pm-bug crashed" in r.getMessage()]
        assert len(crash_logs) == 1 and crash_logs[0].exc_info is not None  # once, with the traceback
        assert "ZeroDivisionError" in caplog.text
        assert supervisor.problems() == []  # one crash is not "keeps failing"
        assert not any(t.daemon for t in threading.enumerate() if t.name.startswith("citygw-"))
    finally:
        owner.stop()
        pipeline.stop()
        pipeline.journal.close()
        device.close()


def test_ingest_thread_crash_is_restarted_and_later_batches_are_journaled(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    supervisor = Supervisor(registry, backoff_initial_s=0.1)
    crashes: list[int] = []

    def after_commit() -> None:
        if not crashes:
            crashes.append(1)
            raise RuntimeError("a bug after the commit")

    engine = WindowEngine([WindowSpec.parse("1m")], grace_ns=2 * S)
    pipeline = Pipeline(Journal(tmp_path / "journal.sqlite"), engine, Metrics(), on_appended=after_commit,
                        start_thread=supervisor.start)
    pipeline.start()
    try:
        t0 = (pipeline.clock_ns() // S - 60) * S
        pipeline.readings([Reading("d", "pm2_5", 1.0, "ug/m3", t0)])
        wait_for(lambda: supervisor.crashes("citygw-ingest") == 1, 30, "the ingest thread's crash")
        pipeline.readings([Reading("d", "pm2_5", 2.0, "ug/m3", t0 + S)])
        wait_for(lambda: pipeline.journal.count(KIND_READING) == 2, 30, "the next batch journaled after the restart")
        assert metric(generate_latest(registry).decode(), "citygw_thread_restarts_total", thread="citygw-ingest") == 1
    finally:
        pipeline.stop()
        pipeline.journal.close()


def test_thread_that_keeps_failing_makes_healthz_503(tmp_path: Path) -> None:
    status = StatusPage()
    gateway = Gateway(load_settings(kit_config(tmp_path, "sup", status), env={}))
    gateway.start()
    stop = threading.Event()
    try:
        own = {t.name: t for t in threading.enumerate() if t.name.startswith("citygw-")}
        assert {"citygw-ingest", "citygw-housekeeping", "citygw-sink-local-store"} <= set(own)
        assert not any(own[name].daemon for name in ("citygw-ingest", "citygw-housekeeping",
                                                     "citygw-sink-local-store"))
        assert health_reasons(gateway) == []

        def broken() -> None:
            raise OSError("always failing")

        gateway.supervisor.start("citygw-always-failing", broken, stop)

        def healthz() -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(f"http://{status.listen}/healthz", timeout=5) as resp:
                    return int(resp.status), bytes(resp.read())
            except urllib.error.HTTPError as exc:
                return int(exc.code), bytes(exc.read())

        wait_for(lambda: healthz()[0] == 503, 30, "/healthz reporting the thread")
        code, body = healthz()
        assert code == 503
        reasons = orjson.loads(body)["reasons"]
        assert any(r.startswith("thread citygw-always-failing: crashed") and "always failing" in r for r in reasons)
        assert metric(status.metrics(), "citygw_thread_restarts_total", thread="citygw-always-failing") >= 3
        stop.set()  # asked to stop, it is no longer a problem
        wait_for(lambda: healthz()[0] == 200, 30, "/healthz healthy again")
    finally:
        stop.set()
        gateway.stop()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("citygw-")]  # all joined
