"""The demo kit's MQTT device: a noise sensor publishing citygw's canonical JSON (the PMS5003 is
`simulators.pms5003.Pms5003Simulator`)."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt

from devices import json_mapping
from simulators.signals import DiurnalSignal

__all__ = ["DemoNoisePublisher"]


class DemoNoisePublisher:
    """Publishes citygw canonical JSON with LAeq (1 s) every second, QoS 1."""

    def __init__(self, host: str, port: int, topic: str, seed: int = 2, period_s: float = 1.0) -> None:
        self.topic = topic
        self.period_s = period_s
        self._signal = DiurnalSignal(base=48.0, amplitude=20.0, noise=2.0, seed=seed)
        self._stop = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self._client.connect_async(host, port)
        self._thread = threading.Thread(target=self._run, name="demo-noise", daemon=True)
        self.published = 0

    def start(self) -> None:
        """Start publishing."""
        self._client.loop_start()
        self._thread.start()

    def _run(self) -> None:
        device_id = self.topic.split("/")[2]
        while not self._stop.wait(self.period_s):
            now = time.time_ns()
            level = round(self._signal.value_at(now / 1e9), 1)
            self._client.publish(self.topic, json_mapping.encode(device_id, now, {"noise_laeq": level}), qos=1)
            self.published += 1

    def stop(self) -> None:
        """Stop publishing and disconnect."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.disconnect()
        self._client.loop_stop()
