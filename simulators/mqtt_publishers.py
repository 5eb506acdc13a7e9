"""Simulated MQTT devices: realistic, seeded payloads for every MQTT format, published at a rate (QoS 1).

- `make_payload(fmt, seed, ts_ns, device, timezone="UTC") -> (topic, payload)`: one message, deterministic for
  its arguments, built with the format's own `encode` (no broker needed; tests use it directly). `timezone` is
  the zone of a device that stamps local time without an offset (Tasmota's `Time`): give it the route's
  `timezone` option, as a real device configured for that zone would send.
- `make_faulty_payload(..., fault)`: the same message with one injected fault (see `FAULTS`).
- `run_publisher(host, port, fmt, rate_hz, count, seed, topic_prefix) -> PublisherStats`: connect with
  paho-mqtt 2 (CallbackAPIVersion.VERSION2), publish, wait for the PUBACKs, disconnect; the stats count what
  was published, which message ids the broker acknowledged (on_publish) and which faults were injected.

Topics (before `topic_prefix`): json `sensors/<device>/json`, ttn_v3 `v3/citygw-sim@ttn/devices/<device>/up`,
tasmota `tele/<device>/SENSOR`, zigbee2mqtt `zigbee2mqtt/<device>`, airrohr `airrohr/<device>`,
telraam `telraam/<device>`, line_protocol `influx/<device>`. A non-empty prefix is prepended with a `/`.
"""

from __future__ import annotations

import math
import random
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices import airrohr, json_mapping, line_protocol, tasmota, telraam, ttn_v3, zigbee2mqtt
from simulators.signals import rush_hour_factor

__all__ = [
    "FAULTS",
    "FORMATS",
    "MqttPublisher",
    "PublisherStats",
    "chip_id",
    "make_faulty_payload",
    "make_payload",
    "run_publisher",
]

FORMATS: tuple[str, ...] = ("json", "ttn_v3", "tasmota", "zigbee2mqtt", "airrohr", "telraam", "line_protocol")

# Injectable faults. Every one but "unknown_keys" must be rejected by the format's decoder; unknown keys must
# be ignored (the message still decodes).
FAULTS: tuple[str, ...] = ("malformed_json", "wrong_type", "nan", "missing_fields", "unknown_keys")

Path = tuple[str | int, ...]


@dataclass(slots=True)
class _Built:
    topic: str
    doc: dict[str, Any]
    value_paths: list[Path]  # measured numeric leaves the decoder reads
    required_paths: list[Path]  # what "missing_fields" deletes


def chip_id(device: str) -> int:
    """A stable numeric id for a device name (ESP chip id, Telraam segment id)."""
    return zlib.crc32(device.encode()) % 9_000_000 + 1_000_000


def _rng(seed: int, fmt: str, device: str, ts_ns: int) -> random.Random:
    # A str seed is hashed with SHA-512 by `random`: stable across processes (unlike hash()).
    return random.Random(f"{seed}|{fmt}|{device}|{ts_ns}")


def _air(rng: random.Random, ts_ns: int) -> dict[str, float]:
    """Plausible street-level air and climate values for the hour of `ts_ns` (UTC)."""
    hour = (ts_ns / 1e9 % 86400) / 3600
    traffic = rush_hour_factor(hour)
    daily = 0.5 + 0.5 * math.cos((hour - 15.0) / 24.0 * 2 * math.pi)
    pm25 = max(1.0, 6.0 + 22.0 * traffic + rng.gauss(0, 2.0))
    return {
        "pm2_5": round(pm25, 1),
        "pm10": round(pm25 * rng.uniform(1.3, 1.9), 1),
        "pm1_0": round(pm25 * rng.uniform(0.6, 0.8), 1),
        "temperature": round(9.0 + 12.0 * daily + rng.gauss(0, 0.4), 1),
        "relative_humidity": round(min(99.0, max(15.0, 75.0 - 30.0 * daily + rng.gauss(0, 2.0))), 1),
        "pressure": round(1013.0 + rng.gauss(0, 4.0), 1),
        "co2": float(round(420 + 180 * traffic + rng.gauss(0, 15))),
        "noise_laeq": round(48.0 + 22.0 * traffic + rng.gauss(0, 1.5), 1),
    }


def _iso(ts_ns: int, local_offset_s: int = 0, with_z: bool = True) -> str:
    sec = ts_ns // 1_000_000_000 + local_offset_s
    text = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + ("Z" if with_z else "")


def _local_iso(ts_ns: int, timezone: str) -> str:
    """Wall-clock time in `timezone`, without an offset (what Tasmota puts in `Time`)."""
    local = datetime.fromtimestamp(ts_ns // 1_000_000_000, UTC).astimezone(ZoneInfo(timezone))
    return local.strftime("%Y-%m-%dT%H:%M:%S")


def _build_json(rng: random.Random, air: dict[str, float], ts_ns: int, device: str, timezone: str) -> _Built:
    """A json message."""
    values = {q: air[q] for q in ("pm2_5", "pm10", "temperature", "relative_humidity")}
    doc = orjson.loads(json_mapping.encode(device, ts_ns, values))
    return _Built(f"sensors/{device}/json", doc, [("values", q) for q in values], [("values",)])


def _build_ttn_v3(rng: random.Random, air: dict[str, float], ts_ns: int, device: str, timezone: str) -> _Built:
    """A ttn_v3 message."""
    decoded = {
        "pm25": air["pm2_5"],
        "pm10": air["pm10"],
        "temperature": air["temperature"],
        "humidity": air["relative_humidity"],
        "noise_laeq": air["noise_laeq"],
        "battery": float(rng.randint(60, 100)),
    }
    payload = ttn_v3.encode(
        device,
        ts_ns,
        decoded,
        dev_eui=f"70B3D57ED0{chip_id(device):06X}",
        f_cnt=ts_ns // 60_000_000_000 % 65536,
        rssi=float(rng.randint(-120, -70)),
        snr=round(rng.uniform(-10.0, 10.0), 1),
    )
    doc = orjson.loads(payload)
    paths: list[Path] = [("uplink_message", "decoded_payload", k) for k in decoded]
    topic = f"v3/citygw-sim@ttn/devices/{device}/up"
    return _Built(topic, doc, paths, [("uplink_message", "decoded_payload")])


def _build_tasmota(rng: random.Random, air: dict[str, float], ts_ns: int, device: str, timezone: str) -> _Built:
    """A tasmota message."""
    power = round(max(0.0, 60.0 + 900.0 * rush_hour_factor((ts_ns / 3.6e12) % 24) + rng.gauss(0, 20)), 1)
    voltage = round(rng.gauss(230.0, 1.5), 1)
    sensors: dict[str, dict[str, Any]] = {
        "SDS0X1": {"PM2.5": air["pm2_5"], "PM10": air["pm10"]},
        "BME280": {
            "Temperature": air["temperature"],
            "Humidity": air["relative_humidity"],
            "DewPoint": round(air["temperature"] - 5.0, 1),
            "Pressure": air["pressure"],
        },
        "ENERGY": {
            "TotalStartTime": "2024-01-01T00:00:00",
            "Total": round(ts_ns / 3.6e12 * 0.25 % 100000, 3),
            "Yesterday": 4.2,
            "Today": 1.1,
            "Power": power,
            "Factor": 0.95,
            "Voltage": voltage,
            "Current": round(power / voltage / 0.95, 3),
        },
    }
    # Tasmota sends local time without an offset, in the zone it is configured for: the same zone the
    # route's `timezone` option names, or the gateway would place every reading hours off.
    doc = orjson.loads(tasmota.encode(sensors, local_time=_local_iso(ts_ns, timezone)))
    read = ("PM2.5", "PM10", "Temperature", "Humidity", "Pressure", "Total", "Power", "Factor", "Voltage")
    paths: list[Path] = [(obj, key) for obj, values in sensors.items() for key in values if key in read]
    return _Built(f"tele/{device}/SENSOR", doc, paths, [(obj,) for obj in sensors])


def _build_zigbee2mqtt(rng: random.Random, air: dict[str, float], ts_ns: int, device: str, timezone: str) -> _Built:
    """A zigbee2mqtt message."""
    state: dict[str, Any] = {
        "humidity": air["relative_humidity"],
        "pm25": round(air["pm2_5"]),
        "temperature": air["temperature"],
        "voc_index": rng.randint(40, 180),
        "linkquality": rng.randint(40, 255),
        "update": {"state": "idle", "installed_version": 16842803, "latest_version": 16842803},
    }
    doc = orjson.loads(zigbee2mqtt.encode(state, last_seen=_iso(ts_ns)))
    paths: list[Path] = [(k,) for k in ("humidity", "pm25", "temperature", "voc_index")]
    return _Built(f"zigbee2mqtt/{device}", doc, paths, list(paths))


def _build_airrohr(rng: random.Random, air: dict[str, float], ts_ns: int, device: str, timezone: str) -> _Built:
    """A airrohr message."""
    values = {
        "P1": air["pm10"],
        "P2": air["pm2_5"],
        "temperature": air["temperature"],
        "humidity": air["relative_humidity"],
        "pressure": air["pressure"] * 100.0,  # the firmware sends Pa
        "noise_LAeq": air["noise_laeq"],
    }
    doc = orjson.loads(airrohr.encode(values, chip_id=str(chip_id(device))))
    paths: list[Path] = [("sensordatavalues", i, "value") for i in range(len(values))]
    return _Built(f"airrohr/{device}", doc, paths, [("sensordatavalues",)])


def _build_telraam(rng: random.Random, air: dict[str, float], ts_ns: int, device: str, timezone: str) -> _Built:
    """A telraam message."""
    hour_start = ts_ns // 3_600_000_000_000 * 3_600_000_000_000
    hour = (hour_start / 1e9 % 86400) / 3600
    traffic = rush_hour_factor(hour)
    uptime = round(rng.uniform(0.55, 0.95), 4)
    observed = {
        "car": float(round(uptime * 700 * traffic * rng.uniform(0.85, 1.15))),
        "heavy": float(round(uptime * 70 * traffic * rng.uniform(0.8, 1.2))),
        "bike": float(round(uptime * 200 * traffic * rng.uniform(0.7, 1.3))),
        "pedestrian": float(round(uptime * 90 * traffic * rng.uniform(0.7, 1.3))),
    }
    date = datetime.fromtimestamp(hour_start // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    payload = telraam.encode(chip_id(device), date, uptime, observed, v85=round(rng.uniform(25, 55), 1))
    doc = orjson.loads(payload)
    paths: list[Path] = [("report", 0, k) for k in ("heavy", "car", "bike", "pedestrian", "v85", "uptime")]
    return _Built(f"telraam/{device}", doc, paths, [("report", 0, "date")])


# Format name -> the builder of its message (the format's own `encode`); line protocol has its own path.
_BUILDERS: dict[str, Callable[[random.Random, dict[str, float], int, str, str], _Built]] = {
    "json": _build_json,
    "ttn_v3": _build_ttn_v3,
    "tasmota": _build_tasmota,
    "zigbee2mqtt": _build_zigbee2mqtt,
    "airrohr": _build_airrohr,
    "telraam": _build_telraam,
}


def _build(fmt: str, seed: int, ts_ns: int, device: str, timezone: str = "UTC") -> _Built:
    builder = _BUILDERS.get(fmt)
    if builder is None:
        raise ValueError(f"unknown simulated format {fmt!r}; known: {', '.join(FORMATS)}")
    rng = _rng(seed, fmt, device, ts_ns)
    air = _air(rng, ts_ns)
    return builder(rng, air, ts_ns, device, timezone)


def _line_values(seed: int, ts_ns: int, device: str) -> dict[str, float]:
    air = _air(_rng(seed, "line_protocol", device, ts_ns), ts_ns)
    return {q: air[q] for q in ("pm2_5", "pm10", "temperature", "relative_humidity", "noise_laeq")}


def _prefixed(prefix: str, topic: str) -> str:
    return f"{prefix.strip('/')}/{topic}" if prefix.strip("/") else topic


def make_payload(fmt: str, seed: int, ts_ns: int, device: str, timezone: str = "UTC") -> tuple[str, bytes]:
    """One realistic message of format `fmt` from `device` at `ts_ns` (local times in `timezone`); same
    arguments, same bytes."""
    if fmt == "line_protocol":
        values = _line_values(seed, ts_ns, device)
        return f"influx/{device}", line_protocol.encode(device, ts_ns, values, "air")
    built = _build(fmt, seed, ts_ns, device, timezone)
    return built.topic, orjson.dumps(built.doc)


def _set(doc: Any, path: Path, value: Any) -> None:
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _delete(doc: Any, path: Path) -> None:
    node = doc
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


_MARKER = 987654.321  # a value no signal produces, replaced by the fault text


def _faulty_line(seed: int, ts_ns: int, device: str, fault: str, rng: random.Random) -> bytes:
    values: dict[str, Any] = dict(_line_values(seed, ts_ns, device))
    tags = {"device_id": device}
    if fault == "malformed_json":  # for line protocol: an unterminated string field
        return (line_protocol.format_line("air", tags, values, ts_ns) + ',note="unterminated').encode()
    if fault == "missing_fields":
        return line_protocol.format_line("air", tags, {}, None).rstrip().encode() + f" {ts_ns}".encode()
    if fault in ("wrong_type", "nan"):
        key = rng.choice(sorted(values))
        values[key] = _MARKER
        text = line_protocol.format_line("air", tags, values, ts_ns)
        bad = "NaN" if fault == "nan" else rng.choice(["abc", "12.5.1", "0x1F"])
        return text.replace(f"{key}={_MARKER!r}", f"{key}={bad}").encode()
    if fault == "unknown_keys":
        values["sim_unknown_gauge"] = 1.5
        return line_protocol.format_line("air", tags, values, ts_ns).encode()
    raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")


def make_faulty_payload(fmt: str, seed: int, ts_ns: int, device: str, fault: str) -> tuple[str, bytes]:
    """`make_payload` with one injected fault (malformed JSON, wrong type, NaN, missing or unknown fields)."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    rng = _rng(seed, f"fault:{fault}", device, ts_ns)
    if fmt == "line_protocol":
        return f"influx/{device}", _faulty_line(seed, ts_ns, device, fault, rng)
    built = _build(fmt, seed, ts_ns, device)
    doc = built.doc
    if fault == "malformed_json":
        good = orjson.dumps(doc)
        return built.topic, good[: rng.randint(1, len(good) - 1)]  # any proper prefix of an object is invalid
    if fault == "wrong_type":
        _set(doc, rng.choice(built.value_paths), rng.choice(["n/a", True, {"value": 1}]))
    elif fault == "nan":
        _set(doc, rng.choice(built.value_paths), "NaN")
    elif fault == "missing_fields":
        for path in built.required_paths:
            _delete(doc, path)
    elif fault == "unknown_keys":
        doc["sim_unknown_key"] = rng.random()
        doc["sim_unknown_object"] = {"Foo": "bar"}
        if fmt == "airrohr":
            doc["sensordatavalues"].append({"value_type": "sim_unknown", "value": "1"})
    return built.topic, orjson.dumps(doc)


@dataclass
class PublisherStats:
    """What a publisher run did; `acked` counts PUBACKs the broker sent for our message ids.

    `sent`, `sent_mids` and `acked_mids` keep the last `keep` messages / mids only (bounded).
    """

    fmt: str
    published: int = 0
    acked: int = 0
    failed: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    sent: deque[tuple[str, bytes, str]] = field(default_factory=lambda: deque(maxlen=0))
    sent_mids: deque[int] = field(default_factory=lambda: deque(maxlen=0))
    acked_mids: deque[int] = field(default_factory=lambda: deque(maxlen=0))
    elapsed_s: float = 0.0

    @property
    def unacked(self) -> int:
        """Messages published but not (yet) acknowledged by the broker."""
        return self.published - self.acked


class MqttPublisher:
    """A paho-mqtt 2 client that publishes at QoS 1 and counts broker acknowledgements (thread-safe)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str = "",
        qos: int = 1,
        keepalive: int = 30,
        max_queued: int = 10_000,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port, self.qos, self.keepalive = host, port, qos, keepalive
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
        )
        self._client.max_queued_messages_set(max_queued)  # bounded: publish() refuses beyond this
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._connect_error = ""
        # A PUBACK may arrive before publish() returns its mid: both sides meet in these two bounded sets.
        self._outstanding: set[int] = set()
        self._early: set[int] = set()
        self._all_acked = threading.Condition(self._lock)
        self.acked = 0
        self.acked_mids: deque[int] = deque(maxlen=max_queued)  # most recent acknowledged message ids

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._connect_error = str(reason)
        self._connected.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            if mid in self._outstanding:
                self._outstanding.discard(mid)
                self.acked += 1
                self.acked_mids.append(mid)
                if not self._outstanding:
                    self._all_acked.notify_all()
            else:
                self._early.add(mid)

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and start the network thread; ConnectionError when the broker refuses or is silent."""
        try:
            self._client.connect(self.host, self.port, self.keepalive)
        except OSError as exc:
            raise ConnectionError(f"cannot reach MQTT broker {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout) or self._connect_error:
            self.close()
            raise ConnectionError(
                f"MQTT broker {self.host}:{self.port} did not accept the connection: "
                f"{self._connect_error or 'timeout'}"
            )

    def publish(self, topic: str, payload: bytes) -> int | None:
        """Queue one message; its mid, or None when the client refused it (queue full)."""
        info = self._client.publish(topic, payload, qos=self.qos)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return None
        if self.qos == 0:
            with self._lock:
                self.acked += 1  # QoS 0 has no acknowledgement: count it as done
            return info.mid
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked += 1
                self.acked_mids.append(info.mid)
            else:
                self._outstanding.add(info.mid)
        return info.mid

    def wait_acked(self, timeout: float) -> bool:
        """Wait until every published message is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._outstanding:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._all_acked.wait(remaining)
        return True

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()


def run_publisher(
    host: str,
    port: int,
    fmt: str,
    rate_hz: float,
    count: int | None,
    seed: int,
    topic_prefix: str = "",
    *,
    duration_s: float | None = None,
    faults: float = 0.0,
    fault_kinds: Sequence[str] = FAULTS,
    devices: int | Iterable[str] = 3,
    qos: int = 1,
    keep: int = 0,
    ack_timeout: float = 10.0,
    clock: Callable[[], int] = time.time_ns,
    stop: threading.Event | None = None,
) -> PublisherStats:
    """Publish `count` messages (or for `duration_s`) of `fmt` at `rate_hz` (0 = as fast as possible).

    `faults` is the probability that a message carries one fault drawn from `fault_kinds`; `keep` bounds how
    many (topic, payload, fault) tuples are remembered in `stats.sent` for inspection.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown simulated format {fmt!r}; known: {', '.join(FORMATS)}")
    if count is None and duration_s is None:
        raise ValueError("give a message count, a duration, or both")
    if isinstance(devices, int):
        names = [f"sim-{fmt.replace('_', '-')}-{i + 1}" for i in range(devices)]
    else:
        names = list(devices)
    if not names:
        raise ValueError("at least one simulated device is needed")
    rng = random.Random(seed)
    stats = PublisherStats(fmt, sent=deque(maxlen=keep), sent_mids=deque(maxlen=keep))
    client_id = f"citygw-sim-{fmt}-{seed}-{rng.randrange(1 << 30)}"
    publisher = MqttPublisher(host, port, client_id=client_id, qos=qos)
    publisher.connect()
    start = time.monotonic()
    try:
        i = 0
        while count is None or i < count:
            if stop is not None and stop.is_set():
                break
            if duration_s is not None and time.monotonic() - start >= duration_s:
                break
            if rate_hz > 0:
                delay = start + i / rate_hz - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            device = names[i % len(names)]
            ts_ns = clock()
            fault = ""
            if faults > 0 and rng.random() < faults:
                fault = rng.choice(list(fault_kinds))
                topic, payload = make_faulty_payload(fmt, seed, ts_ns, device, fault)
            else:
                topic, payload = make_payload(fmt, seed, ts_ns, device)
            topic = _prefixed(topic_prefix, topic)
            mid = publisher.publish(topic, payload)
            if mid is None:
                stats.failed += 1
                stats.errors.append(f"publish refused for {topic} (client queue full)")
            else:
                stats.published += 1
                if fault:
                    stats.faults[fault] += 1
                stats.sent.append((topic, payload, fault))
                stats.sent_mids.append(mid)
            i += 1
        if not publisher.wait_acked(ack_timeout):
            missing = stats.published - publisher.acked
            stats.errors.append(f"{missing} message(s) not acknowledged within {ack_timeout}s")
    finally:
        stats.acked = publisher.acked
        stats.acked_mids = deque(list(publisher.acked_mids)[-keep:] if keep else [], maxlen=keep)
        publisher.close()
        stats.elapsed_s = time.monotonic() - start
    return stats
