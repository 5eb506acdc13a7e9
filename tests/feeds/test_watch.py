"""`citygw watch` as a platform engineer runs it: a subprocess against a real Mosquitto that a real gateway publishes
to. What it prints with --json is exactly what was published (compared with an independent paho subscriber) and
valid against schemas/feed/; --gateway and --name pick kits and series; TLS and a password from the environment
work like the rest of citygw; an unreachable broker is a one-line error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.app import Gateway
from gateway.cli import main
from gateway.feed_cli import parse_broker
from gateway.feed_meta import birth_info
from gateway.settings import load_settings
from gateway.sinks.mqtt_feed import MqttFeedSink
from ingest.mqtt_client import MqttOptions
from tests.feeds.mqtt_feed_support import S, feed_config, reading, validators
from tests.integration.helpers import REPO, FeedSubscriber, wait_for
from tests.servers import MQTT_PASSWORD, MQTT_USER, Mosquitto, free_port
from tests.tls import TlsFiles


class Watch:
    """`citygw watch …` as a subprocess; its stdout lines collected on a thread."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "watch", *args], cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))

    def json_lines(self) -> list[dict[str, Any]]:
        """The --json lines printed so far, decoded."""
        return [orjson.loads(line) for line in list(self.lines)]

    def stop(self) -> tuple[int, str]:
        """SIGTERM (if still running) and wait; (exit code, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        self._reader.join(timeout=10)
        return self.proc.returncode, err.decode()


def _kit_b(tmp_path: Path, gw: str, port: int, **opts: Any) -> MqttFeedSink:
    """A second kit's feed: the real sink with the birth info of its own config (it publishes meta and online)."""
    settings = load_settings(feed_config(tmp_path, gw, port), env={})
    sink = MqttFeedSink("mqtt-feed", MqttOptions(host="127.0.0.1", port=port, client_id=f"{gw}-feed", **opts),
                        settings.feed_prefix, meta=birth_info(settings))
    sink.start()
    return sink


def test_watch_json_prints_what_was_published(tmp_path: Path, fresh_mosquitto: Mosquitto) -> None:
    port = fresh_mosquitto.port
    a, b = "kit-a", "kit-b"
    check = validators()
    published = FeedSubscriber(port, "citygw/#")  # an independent paho subscriber: what the broker carried
    gateway = Gateway(load_settings(feed_config(tmp_path, a, port), env={}))
    (tmp_path / "b").mkdir()
    kit_b = _kit_b(tmp_path / "b", b, port)
    watchers: list[Watch] = []
    try:
        gateway.start()
        wait_for(lambda: all(published.snapshot().get(f"citygw/{k}/status", [None])[-1] == "online" for k in (a, b)),
                 30, "both kits online")
        # One kit, one series, live: start watching, then the kit measures.
        live = Watch("--broker", f"127.0.0.1:{port}", "--gateway", a, "--name", "noise_laeq", "--json")
        watchers.append(live)
        wait_for(lambda: {line["kind"] for line in live.json_lines()} >= {"meta", "status"}, 30,
                 "the retained meta and status printed")
        base = (time.time_ns() // (2 * S) - 5) * 2 * S
        gateway.pipeline.readings(
            [reading("noise-1", "noise_laeq", 50.0 + i, base + i * S // 2, "dBA") for i in range(8)]
            + [reading("air-1", "pm2_5", 12.0, base + i * S // 2, "ug/m3") for i in range(8)])
        noise_topic = f"citygw/{a}/kpi/noise-1/noise_laeq/2s"
        wait_for(lambda: sum(1 for line in live.json_lines() if line["kind"] == "kpi") == 2, 60,
                 "two noise KPI windows printed")
        wait_for(lambda: len(published.snapshot().get(f"citygw/{a}/kpi/air-1/pm2_5/2s", [])) == 2, 30,
                 "the pm2_5 windows published too")
        code, err = live.stop()
        assert code == 0, err
        lines = live.json_lines()
        carried = published.snapshot()
        for line in lines:
            assert line["gateway"] == a and line["topic"].startswith(f"citygw/{a}/")  # --gateway
            errors = [e.message for e in check[line["kind"]].iter_errors(line["payload"])]
            assert not errors, (line["topic"], errors)
        kpis = [line for line in lines if line["kind"] == "kpi"]
        assert {k["topic"] for k in kpis} == {noise_topic}  # --name: the pm2_5 windows were not printed
        # Exactly what the broker carried on that topic, in order, as live (not retained) messages.
        assert [k["payload"] for k in kpis] == carried[noise_topic]
        assert [k["payload"]["start"] for k in kpis] == [base, base + 2 * S]
        assert not any(k["retained"] for k in kpis)
        meta = next(line for line in lines if line["kind"] == "meta")
        assert meta["retained"] and meta["payload"] == carried[f"citygw/{a}/meta"][-1]
        assert next(line for line in lines if line["kind"] == "status")["payload"] == "online"

        # Every kit on the broker: both metas and statuses, retained, and the retained KPIs of kit A.
        everyone = Watch("--broker", f"127.0.0.1:{port}", "--json")
        watchers.append(everyone)
        wait_for(lambda: {(line["gateway"], line["kind"]) for line in everyone.json_lines()}
                 >= {(a, "meta"), (a, "status"), (b, "meta"), (b, "status"), (a, "kpi")}, 30, "both kits printed")
        code, err = everyone.stop()
        assert code == 0, err
        for line in everyone.json_lines():
            assert line["retained"] is True
            assert line["payload"] == carried[line["topic"]][-1]

        # Human lines; --count ends the command by itself.
        human = Watch("--broker", f"127.0.0.1:{port}", "--gateway", b, "--count", "2")
        watchers.append(human)
        assert human.proc.wait(timeout=60) == 0
        code, err = human.stop()
        assert code == 0, err
        assert sorted(human.lines) == sorted([
            f"{b}  meta: citygw {birth_info(load_settings(feed_config(tmp_path / 'b', b, port), env={}))['version']}, "
            "0 device(s), 0 MQTT route(s), windows 2s  [retained]",
            f"{b}  online  [retained]"])
    finally:
        for w in watchers:
            if w.proc.poll() is None:
                w.stop()
        gateway.stop()
        kit_b.close()
        published.close()


def test_watch_with_tls_and_a_password_from_the_environment(tmp_path: Path, mosquitto_tls: Mosquitto,
                                                            tls_files: TlsFiles) -> None:
    gw = f"tls{time.time_ns() % 10**9}"
    assert mosquitto_tls.tls_port is not None
    opts = {"username": MQTT_USER, "password": MQTT_PASSWORD, "tls": True, "ca_file": tls_files.ca_cert}
    settings = load_settings(feed_config(tmp_path, gw, mosquitto_tls.tls_port), env={})
    sink = MqttFeedSink("mqtt-feed", MqttOptions(host="127.0.0.1", port=mosquitto_tls.tls_port,
                                                 client_id=f"{gw}-feed", **opts),  # type: ignore[arg-type]
                        settings.feed_prefix, meta=birth_info(settings))
    sink.start()
    try:
        common = ["--broker", f"127.0.0.1:{mosquitto_tls.tls_port}", "--gateway", gw, "--ca-file",
                  str(tls_files.ca_cert), "--username", MQTT_USER, "--password-env", "WATCH_PASSWORD"]
        ok = Watch(*common, "--json", "--count", "2", env={"WATCH_PASSWORD": MQTT_PASSWORD})
        assert ok.proc.wait(timeout=60) == 0
        code, err = ok.stop()
        assert code == 0, err
        assert {line["kind"] for line in ok.json_lines()} == {"meta", "status"}
        assert MQTT_PASSWORD not in "\n".join(ok.lines) + err

        refused = Watch(*common, env={"WATCH_PASSWORD": "wrong"})
        refused.proc.wait(timeout=60)
        code, err = refused.stop()
        assert code == 1
        assert f"cannot connect to the MQTT broker 127.0.0.1:{mosquitto_tls.tls_port}" in err
        assert "wrong" not in err

        unset = Watch(*common, env={})
        unset.proc.wait(timeout=60)
        code, err = unset.stop()
        assert code == 2 and "WATCH_PASSWORD" in err
    finally:
        sink.close()


def test_watch_says_when_the_broker_cannot_be_reached(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["watch", "--broker", f"127.0.0.1:{port}", "--duration", "30"]) == 1
    err = capsys.readouterr().err
    assert f"cannot connect to the MQTT broker 127.0.0.1:{port}" in err and "check --broker" in err


@pytest.mark.parametrize(("text", "expected"), [
    ("broker.city.example", ("broker.city.example", 1883)),
    ("10.0.0.5:8883", ("10.0.0.5", 8883)),
    ("[::1]:1884", ("::1", 1884)),
    ("[fd00::5]", ("fd00::5", 1883)),
])
def test_parse_broker(text: str, expected: tuple[str, int]) -> None:
    assert parse_broker(text) == expected


@pytest.mark.parametrize("text", ["host:port", ":1883", "host:0", "[::1", "[::1]1883", "host:70000"])
def test_parse_broker_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--broker"):
        parse_broker(text)
