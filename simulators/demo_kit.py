"""The demo kit's simulated devices: a PMS5003 on a pty and a noise sensor publishing JSON over MQTT."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt

from devices import json_mapping, pms5003
from simulators.pty_device import StreamingPtyDevice
from simulators.signals import DiurnalSignal

__all__ = ["DemoNoisePublisher", "start_demo_pms"]


def start_demo_pms(seed: int = 1, period_s: float = 1.0) -> StreamingPtyDevice:
    """A PMS5003 streaming active-mode frames with a diurnal PM signal."""
    pm25 = DiurnalSignal(base=6.0, amplitude=18.0, noise=1.5, seed=seed)

    def frame(now_s: float) -> bytes:
        v = pm25.value_at(now_s)
        return pms5003.encode({
            "pm1_0_cf1": v * 0.7, "pm2_5_cf1": v * 1.05, "pm10_cf1": v * 1.4,
            "pm1_0": v * 0.66, "pm2_5": v, "pm10": v * 1.35,
            "particles_0_3um": v * 120, "particles_0_5um": v * 35, "particles_1_0um": v * 6,
            "particles_2_5um": v * 0.8, "particles_5_0um": v * 0.2, "particles_10um": v * 0.05,
        })

    return StreamingPtyDevice(frame, period_s=period_s)


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
