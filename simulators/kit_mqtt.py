"""The MQTT side of a simulated kit: a topic and device id per configured route, a publisher per route, and
what each simulated message carries.

`plan_route` picks a topic matching a route's filter and the device id the gateway will derive from it;
`RoutePublisher` publishes the route's payloads (`simulators.mqtt_publishers`) every `period_s` and remembers
the values it sent; `payload_values` is the publisher's own statement of what a message carries, in
vocabulary terms, to compare with what the gateway stored.
"""

from __future__ import annotations

import collections
import contextlib
import re
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from devices import line_protocol
from devices.vocabulary import QUANTITIES
from simulators.kit_config import KitRoute
from simulators.mqtt_publishers import MqttPublisher, make_payload

__all__ = ["HISTORY", "RoutePlan", "RoutePublisher", "payload_values", "plan_route"]

HISTORY = 512  # values remembered per simulated device (bounded)

Path_ = tuple[str | int, ...]

# What each simulated payload carries, in vocabulary terms: (path in the JSON document, quantity, scale).
# This is the publisher's own statement of what it sent (from the formats' documentation), used to compare
# with what the gateway stored; "*" under a path means every key of that object is a quantity.
_PAYLOAD_VALUES: dict[str, tuple[tuple[Path_, str, float], ...]] = {
    "json": ((("values", "*"), "", 1.0),),
    "ttn_v3": (
        (("uplink_message", "decoded_payload", "pm25"), "pm2_5", 1.0),
        (("uplink_message", "decoded_payload", "pm10"), "pm10", 1.0),
        (("uplink_message", "decoded_payload", "temperature"), "temperature", 1.0),
        (("uplink_message", "decoded_payload", "humidity"), "relative_humidity", 1.0),
        (("uplink_message", "decoded_payload", "noise_laeq"), "noise_laeq", 1.0),
        (("uplink_message", "decoded_payload", "battery"), "battery", 1.0),
        (("uplink_message", "rx_metadata", 0, "rssi"), "rssi", 1.0),
        (("uplink_message", "rx_metadata", 0, "snr"), "snr", 1.0),
    ),
    "tasmota": (
        (("SDS0X1", "PM2.5"), "pm2_5", 1.0),
        (("SDS0X1", "PM10"), "pm10", 1.0),
        (("BME280", "Temperature"), "temperature", 1.0),
        (("BME280", "Humidity"), "relative_humidity", 1.0),
        (("BME280", "Pressure"), "pressure", 1.0),
        (("ENERGY", "Total"), "energy_import", 1.0),
        (("ENERGY", "Power"), "active_power", 1.0),
        (("ENERGY", "Factor"), "power_factor", 1.0),
        (("ENERGY", "Voltage"), "voltage", 1.0),
        (("ENERGY", "Current"), "current", 1.0),
    ),
    "zigbee2mqtt": (
        (("humidity",), "relative_humidity", 1.0),
        (("pm25",), "pm2_5", 1.0),
        (("temperature",), "temperature", 1.0),
        (("voc_index",), "voc_index", 1.0),
    ),
    "airrohr": (
        (("P1",), "pm10", 1.0),
        (("P2",), "pm2_5", 1.0),
        (("temperature",), "temperature", 1.0),
        (("humidity",), "relative_humidity", 1.0),
        (("pressure",), "pressure", 0.01),  # the firmware sends Pa; citygw stores hPa
        (("noise_LAeq",), "noise_laeq", 1.0),
    ),
    "telraam": (
        (("report", 0, "car"), "car_count", 1.0),
        (("report", 0, "heavy"), "heavy_vehicle_count", 1.0),
        (("report", 0, "bike"), "bike_count", 1.0),
        (("report", 0, "pedestrian"), "pedestrian_count", 1.0),
        (("report", 0, "v85"), "speed_v85", 1.0),
        (("report", 0, "uptime"), "uptime_fraction", 1.0),
    ),
}


def _get(doc: Any, path: Path_) -> Any:
    node = doc
    for part in path:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return None
        elif not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return None


def payload_values(fmt: str, payload: bytes) -> dict[str, float]:
    """The values a simulated message of `fmt` carries, by quantity (what the publisher reports it sent)."""
    if fmt == "line_protocol":
        out: dict[str, float] = {}
        for point in line_protocol.parse(payload.decode()):
            out.update({k: float(v) for k, v in point.fields.items() if isinstance(v, int | float)
                        and not isinstance(v, bool) and k in QUANTITIES})
        return out
    doc = orjson.loads(payload)
    if fmt == "airrohr":  # a list of {value_type, value}: index it by value_type first
        doc = {str(item.get("value_type")): item.get("value") for item in doc.get("sensordatavalues", [])}
    out = {}
    for path, quantity, scale in _PAYLOAD_VALUES.get(fmt, ()):
        if path[-1] == "*":
            obj = _get(doc, path[:-1])
            if isinstance(obj, dict):
                for key, raw in obj.items():
                    value = _number(raw)
                    if value is not None:
                        out[str(key)] = value * scale
            continue
        value = _number(_get(doc, path))
        if value is not None:
            out[quantity] = value * scale
    if fmt == "telraam" and "car_count" in out and "heavy_vehicle_count" in out:
        out["vehicle_count"] = out["car_count"] + out["heavy_vehicle_count"]  # Telraam's motorised total
    return out


_LEVEL = re.compile(r"\{(\d+)\}")


def _plausible(quantity: str, rng_value: float) -> float:
    """A value inside the quantity's plausible range (for JSON routes with a declarative field mapping)."""
    q = QUANTITIES.get(quantity)
    if q is None:
        return round(rng_value * 100, 2)
    low, high = max(q.low, 0.0), min(q.high, max(q.low, 0.0) + 1000.0)
    return round(low + (high - low) * (0.1 + 0.3 * rng_value), 2)


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Where a route's simulated device publishes and what id the gateway gives it."""

    topic: str
    payload_device: str  # the device name put in the payload
    device_id: str  # the id the gateway's readings carry


def plan_route(route: KitRoute, index: int) -> RoutePlan:
    """Choose a topic matching the route's filter and the device id the gateway will derive for it."""
    fmt = route.format
    name = f"sim-{fmt.replace('_', '-')}-{index + 1}"
    filt = route.topic.split("/", 2)[2] if route.topic.startswith("$share/") else route.topic
    levels = filt.split("/")
    template = route.device_id
    wanted = {int(m) for m in _LEVEL.findall(template)}
    topic_levels: list[str] = []
    for i, level in enumerate(levels):
        if level == "#":
            topic_levels.append(name)  # the rest of the topic: one level naming the device (Z2M friendly name)
        elif level == "+":
            topic_levels.append(name if (i in wanted or not wanted) else "sim")
        else:
            topic_levels.append(level)
    topic = "/".join(topic_levels)
    if template:
        got = topic.split("/")
        device_id = _LEVEL.sub(lambda m: got[int(m.group(1))] if int(m.group(1)) < len(got) else "", template)
        # json and line protocol carry their own device id, which wins over the route: send the same one.
        return RoutePlan(topic, device_id, device_id)
    # No template: the format names the device itself (docs/devices/<format>.md).
    if fmt in ("airrohr", "telraam"):
        from simulators.mqtt_publishers import chip_id

        prefix = "esp8266" if fmt == "airrohr" else "telraam"
        return RoutePlan(topic, name, f"{prefix}-{chip_id(name)}")
    if fmt == "zigbee2mqtt":
        base = str(route.options.get("base_topic", "zigbee2mqtt")).rstrip("/")
        friendly = topic[len(base) + 1:] if topic.startswith(base + "/") else name
        return RoutePlan(topic, friendly, friendly)
    if fmt == "tasmota":
        level = route.options.get("topic_level", 1)
        got = topic.split("/")
        device_id = got[level] if isinstance(level, int) and level < len(got) else name
        return RoutePlan(topic, device_id, device_id)
    return RoutePlan(topic, name, name)


class RoutePublisher:
    """Publishes one route's simulated device every `period_s` (QoS 1) and remembers what it sent."""

    def __init__(self, route: KitRoute, plan: RoutePlan, host: str, port: int, seed: int, period_s: float,
                 username: str | None, password: str | None) -> None:
        self.route = route
        self.plan = plan
        self.seed = seed
        self.period_s = period_s
        self.history: collections.deque[dict[str, float]] = collections.deque(maxlen=HISTORY)
        self.published = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._publisher = MqttPublisher(host, port, client_id=f"citygw-sim-{plan.device_id}-{seed}"[:64],
                                        username=username, password=password)
        self._thread = threading.Thread(target=self._run, name=f"sim-mqtt {plan.device_id}", daemon=True)

    def start(self) -> None:
        self._publisher.connect()
        self._thread.start()

    def message(self, ts_ns: int) -> tuple[bytes, dict[str, float]]:
        """The payload for `ts_ns` and the values it carries by quantity."""
        fmt, device = self.route.format, self.plan.payload_device
        options = self.route.options
        if fmt == "json" and options.get("fields"):
            # A declaratively mapped JSON device: put a plausible value at every mapped path.
            doc: dict[str, Any] = {}
            values: dict[str, float] = {}
            for i, spec in enumerate(options["fields"]):
                quantity = str(spec["quantity"])
                r = (zlib.crc32(f"{self.seed}|{ts_ns}|{i}".encode()) % 10_000) / 10_000
                engineering = _plausible(quantity, r)
                scale, offset = float(spec.get("scale", 1.0)), float(spec.get("offset", 0.0))
                raw = round((engineering - offset) / scale, 6) if scale else engineering
                _set_path(doc, str(spec["path"]), raw)
                values[quantity] = raw * scale + offset
            ts_path = options.get("ts_path", "ts")
            _set_path(doc, str(ts_path), ts_ns)
            if "device_id_path" in options:
                _set_path(doc, str(options["device_id_path"]), device)
            return orjson.dumps(doc), values
        if fmt == "line_protocol":
            tag = str(options.get("device_tag") or "device_id")
            _, sample = make_payload(fmt, self.seed, ts_ns, device)
            fields = payload_values(fmt, sample)
            text = line_protocol.format_line("air", {tag: device}, fields, ts_ns)
            return text.encode(), fields
        # A device stamping local time (Tasmota) is set to the zone its route's `timezone` option names.
        _, payload = make_payload(fmt, self.seed, ts_ns, device, str(options.get("timezone", "UTC")))
        return payload, payload_values(fmt, payload)

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            payload, values = self.message(time.time_ns())
            if self._publisher.publish(self.plan.topic, payload) is None:
                self.refused += 1  # the client's bounded queue is full (broker away): counted, not queued
            else:
                with self._lock:
                    self.history.append(values)
                    self.published += 1
            next_t += self.period_s
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def recent(self) -> list[dict[str, float]]:
        with self._lock:
            return list(self.history)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._publisher.close()
