"""Fault: the MQTT broker is SIGKILLed and restarted while devices publish.

Every message the broker acknowledged to its publisher (PUBACK) must reach InfluxDB exactly once, with its
value and event timestamp, and the gateway's MQTT input must keep consuming after the restart (its reconnect
loop: the Telegraf consumer's best-known failure is to stop after a broker restart).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from devices import json_mapping
from tests.reliability.support import GatewayProcess, Publisher, StatusPage, kit_config, wait_for
from tests.servers import InfluxV1, Mosquitto

S = 10**9
N = 240  # messages per device
DEVICES = ("bk-a", "bk-b")


def test_broker_sigkill_loses_no_acknowledged_message(tmp_path: Path, server_factory: object,
                                                       influx_v1: InfluxV1) -> None:
    # The broker saves its state after every change, so what it acknowledged survives its SIGKILL
    # (a broker that acknowledges before persisting can lose messages itself; that is not what we test).
    broker: Mosquitto = server_factory(Mosquitto, autosave_interval=1, autosave_on_changes=True)  # type: ignore[operator]
    gw_id = f"bk{time.time_ns() % 10**8}"
    db = f"db_{gw_id}"
    influx_v1.create_database(db)
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=broker.port, route_topic=f"{gw_id}/+/json",
                        influx_url=influx_v1.url, database=db)
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    base = (time.time_ns() // S - 3 * 3600) * S  # event time: three hours ago, one reading a second
    expected: dict[tuple[str, int], float] = {}
    publishers = [Publisher(broker.port, f"{gw_id}-{d}") for d in DEVICES]
    try:
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway connected to the broker")

        def publish(pub: Publisher, device: str) -> None:
            for i in range(N):
                ts = base + i * S
                value = round(20 + (i % 17) * 0.25 + (0.5 if device == "bk-b" else 0.0), 2)
                expected[(device, ts)] = value
                pub.publish((device, ts), f"{gw_id}/{device}/json",
                            json_mapping.encode(device, ts, {"temperature": value}))
                time.sleep(0.01)

        threads = [threading.Thread(target=publish, args=(p, d)) for p, d in zip(publishers, DEVICES, strict=True)]
        for t in threads:
            t.start()
        time.sleep(0.8)
        broker.kill()  # SIGKILL mid-stream
        time.sleep(1.0)
        broker.start()  # same port, same persistence file
        for t in threads:
            t.join()
        # Publishers resend what was in flight; wait until each publish is acknowledged.
        wait_for(lambda: all(p.pending() == 0 for p in publishers), 60, "every publish acknowledged")
        acked = {key for p in publishers for key in p.acked}
        assert len(acked) == N * len(DEVICES)

        def rows() -> list[dict[str, object]]:
            return influx_v1.query("SELECT value, device_id FROM reading", db=db)

        wait_for(lambda: len(rows()) >= len(acked), 60, f"{len(acked)} readings in InfluxDB")
        got = rows()
        got_keys = [(str(r["device_id"]), int(r["time"])) for r in got]  # type: ignore[call-overload]
        # Exactly once: no key twice, none missing, nothing that was never published; values intact.
        assert len(got_keys) == len(set(got_keys))
        assert set(got_keys) == acked
        assert {(str(r["device_id"]), int(r["time"])): r["value"] for r in got} == expected  # type: ignore[call-overload]
        # The gateway's input survived the restart and reconnected by itself.
        st = status.status()
        assert st["mqtt_connected"] is True
        assert st["accepted"] >= len(acked)
        assert gateway.proc is not None and gateway.proc.poll() is None
    finally:
        for p in publishers:
            p.close()
        code = gateway.stop()
    log = gateway.log()
    assert code == 0, log
    assert "disconnected from MQTT broker" in log and log.count("connected to MQTT broker") >= 2, log


def test_ack_owed_from_before_a_reconnect_is_not_sent_on_the_new_connection() -> None:
    """A message journaled after its connection dropped must not be acked on the next connection: there its
    packet id may already name another, not yet journaled, message. The broker redelivers the first one."""
    import paho.mqtt.client as mqtt

    from devices.registry import get_kind
    from ingest.mqtt_client import MqttOptions
    from ingest.mqtt_source import MqttSource, Route

    class Client:
        def __init__(self) -> None:
            self.acks: list[int] = []

        def ack(self, mid: int, qos: int) -> None:
            self.acks.append(mid)

        def subscribe(self, topics: object) -> None:
            pass

        def socket(self) -> None:  # paho's Client.socket(): no real socket here
            return None

    class Ok:
        is_failure = False

    owed: list[object] = []

    class Emitter:
        def readings(self, readings: object, ack: object = None) -> None:
            owed.append(ack)  # the pipeline will call it after its commit

        def rejected(self, device_id: str, reason: str, data: bytes | None = None) -> None:
            raise AssertionError(reason)

        def device_state(self, device_id: str, available: bool, reason: str = "") -> None:
            pass

    source = MqttSource(Emitter(), MqttOptions(host="127.0.0.1", client_id="gw-in"),
                        [Route("t/+", get_kind("json"), "{1}")])
    client = Client()
    source._on_connect(client, None, None, Ok(), None)  # type: ignore[arg-type]
    for mid in (5, 6):
        msg = mqtt.MQTTMessage(mid, b"t/dev")
        msg.payload = json_mapping.encode("dev", 1_767_225_600 * S + mid, {"pm2_5": 1.0})
        msg.qos = 1
        source._on_message(client, None, msg)  # type: ignore[arg-type]
    owed[0]()  # type: ignore[operator]  # committed while still connected: acked
    source._on_disconnect(client, None, None, Ok(), None)  # type: ignore[arg-type]
    source._on_connect(client, None, None, Ok(), None)  # type: ignore[arg-type]
    owed[1]()  # type: ignore[operator]  # committed after the reconnect: must not be acked
    assert client.acks == [5]
