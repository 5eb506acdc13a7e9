"""Helpers for integration tests: run `citygw run` as a real process, subscribe to the feed, wait for data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import paho.mqtt.client as mqtt

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
INPUT_CONNECTED = "citygw.mqtt: connected to MQTT broker"  # the input's line (the feed logs as citygw.feed)


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def port_open_by(pid: int, path: str) -> bool:
    """Whether process `pid` has `path` (a serial port or pty) open — pyserial discards input that arrived
    before the open, so a test starts streaming only then."""
    target = os.path.realpath(path)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


class GatewayProcess:
    """`python -m gateway.cli run --config FILE` as a subprocess, its log captured to a file."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        """Start the gateway."""
        log = open(self.log_path, "ab")  # noqa: SIM115 — handed to the child, closed with it
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)],
                                     cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait (a clean stop)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: a power cut, as far as the process can tell."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def log(self) -> str:
        """Everything the gateway printed."""
        return self.log_path.read_text(errors="replace")

    def input_connections(self) -> int:
        """How often the MQTT input connected: it logs each connection once its SUBSCRIBE is on the way.

        Wait for this before publishing, not for the feed's `online`: the feed has a connection of its own.
        """
        return self.log().count(INPUT_CONNECTED)


class FeedSubscriber:
    """A plain MQTT client collecting everything under a topic filter (retained messages included)."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: dict[str, list[Any]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload: Any = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            payload = msg.payload.decode(errors="replace")
        with self.lock:
            self.messages.setdefault(msg.topic, []).append(payload)

    def snapshot(self) -> dict[str, list[Any]]:
        """A copy of what arrived so far, by topic."""
        with self.lock:
            return {k: list(v) for k, v in self.messages.items()}

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()  # before disconnect(): after it, paho's thread may end inside loop_stop
        self.client.disconnect()


def publish_all(port: int, messages: list[tuple[str, bytes]], qos: int = 1) -> None:
    """Publish messages in order and wait for every PUBACK."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()
