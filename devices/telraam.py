"""Telraam traffic counts: a report object, the API reply `{"report": [...]}`, or the live-snapshot GeoJSON.

Each report (one counting interval of one segment or camera) becomes readings stamped with `date`, the UTC
start of the interval: heavy_vehicle_count, car_count, vehicle_count (= car + heavy), bike_count,
pedestrian_count, speed_v85 and uptime_fraction. See docs/devices/telraam.md.

Telraam's counts are extrapolated: already divided by `uptime`, the fraction of the interval the camera was
counting (uptime 0.73 and 452 cars seen → car 619.178). They are kept as such by default.

Options:
- `de_extrapolate` (bool, default false): multiply counts by uptime to report the cars actually seen.
- `min_uptime` (float 0..1, default 0): skip reports whose uptime is at or below this (uptime 0 always is).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from devices.kind import DeviceKind, register
from devices.payload import parse_json_object, parse_number, parse_timestamp_ns
from devices.reading import DecodeContext, DecodeError, Reading

__all__ = ["COUNTS", "decode", "encode"]

# Telraam mode → vocabulary quantity (both directions; `<mode>_lft` + `<mode>_rgt` when the total is absent).
COUNTS: dict[str, str] = {
    "heavy": "heavy_vehicle_count",
    "car": "car_count",
    "bike": "bike_count",
    "pedestrian": "pedestrian_count",
}


def _number_or_none(report: Mapping[str, Any], key: str, where: str) -> float | None:
    raw = report.get(key)
    if raw is None or raw == "":
        return None  # the live snapshot has empty strings for segments without current data
    return parse_number(raw, f"{where}.{key}")


def _count(report: Mapping[str, Any], mode: str, where: str) -> float | None:
    total = _number_or_none(report, mode, where)
    if total is not None:
        return total
    left = _number_or_none(report, f"{mode}_lft", where)
    right = _number_or_none(report, f"{mode}_rgt", where)
    if left is None or right is None:
        return None
    return left + right


def _ids(report: Mapping[str, Any], where: str) -> dict[str, str]:
    ids: dict[str, str] = {}
    for key in ("segment_id", "instance_id"):
        raw = report.get(key)
        if raw is None or raw == "":
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise DecodeError(f"{where}.{key} is {raw!r}, expected an integer id")
        text = str(raw).strip()
        if text and text != "-1":  # -1 marks whichever of the two ids was not requested
            ids[key] = text
    return ids


def _reports(doc: dict[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    if "report" in doc:
        items = doc["report"]
        if not isinstance(items, list):
            raise DecodeError(f"'report' is a {type(items).__name__}, expected a list")
        return [(f"report[{i}]", item) for i, item in enumerate(items)]
    if doc.get("type") == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise DecodeError("FeatureCollection has no 'features' list")
        return [(f"features[{i}].properties", _properties(f)) for i, f in enumerate(features)]
    if doc.get("type") == "Feature":
        return [("properties", _properties(doc))]
    return [("report", doc)]


def _properties(feature: Any) -> Mapping[str, Any]:
    props = feature.get("properties") if isinstance(feature, Mapping) else None
    if not isinstance(props, Mapping):
        raise DecodeError("GeoJSON feature has no 'properties' object")
    return props


def decode(payload: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode Telraam report(s) into traffic-count readings stamped with each interval's start."""
    doc = parse_json_object(payload)
    opts = ctx.options
    de_extrapolate = opts.get("de_extrapolate", False)
    if not isinstance(de_extrapolate, bool):
        raise DecodeError(f"option 'de_extrapolate' must be true or false, got {de_extrapolate!r}")
    min_uptime = parse_number(opts.get("min_uptime", 0.0), "option 'min_uptime'")

    reports = _reports(doc)
    if not reports:
        raise DecodeError("message carries no report", payload)
    out: list[Reading] = []
    skipped: list[str] = []
    for where, report in reports:
        if not isinstance(report, Mapping):
            raise DecodeError(f"{where} is a {type(report).__name__}, expected an object", payload)
        uptime = _number_or_none(report, "uptime", where)
        counts = {mode: _count(report, mode, where) for mode in COUNTS}
        v85 = _number_or_none(report, "v85", where)
        if uptime is None and all(c is None for c in counts.values()):
            skipped.append(f"{where}: no data")
            continue
        if report.get("date") in (None, ""):
            raise DecodeError(f"{where} has no 'date' (start of the counting interval)", payload)
        ts = parse_timestamp_ns(report["date"], f"{where}.date")
        if uptime is None:
            raise DecodeError(f"{where} has counts but no 'uptime'", payload)
        if not 0.0 <= uptime <= 1.0:
            raise DecodeError(f"{where}.uptime is {uptime}, expected a fraction 0..1", payload)
        if uptime <= min_uptime:
            skipped.append(f"{where}: uptime {uptime} <= {min_uptime}")
            continue
        ids = _ids(report, where)
        device_id = ctx.device_id
        if not device_id:
            if "segment_id" in ids:
                device_id = f"telraam-{ids['segment_id']}"
            elif "instance_id" in ids:
                device_id = f"telraam-instance-{ids['instance_id']}"
            else:
                raise DecodeError(f"{where} has neither segment_id nor instance_id, and the route sets no id")
        tags = {**ctx.tags, **ids}
        factor = uptime if de_extrapolate else 1.0
        for mode, quantity in COUNTS.items():
            count = counts[mode]
            if count is not None:
                # Telraam rounds to 10 decimals: 3 decimals keep observed counts whole (619.178·0.73 = 452).
                value = round(count * factor, 3) if de_extrapolate else count
                out.append(Reading(device_id, quantity, value, "1", ts, tags))
        car, heavy = counts["car"], counts["heavy"]
        if car is not None and heavy is not None:
            total = round((car + heavy) * factor, 3) if de_extrapolate else car + heavy
            out.append(Reading(device_id, "vehicle_count", total, "1", ts, tags))
        if v85 is not None:
            out.append(Reading(device_id, "speed_v85", v85, "km/h", ts, tags))
        out.append(Reading(device_id, "uptime_fraction", uptime, "1", ts, tags))
    if not out:
        raise DecodeError(f"no usable report ({'; '.join(skipped[:5])})", payload)
    return out


def encode(
    segment_id: int,
    date: str,
    uptime: float,
    observed: Mapping[str, float],
    v85: float | None = None,
    wrap: bool = True,
) -> bytes:
    """An API-style reply with one hourly report from observed counts (extrapolated as Telraam does)."""
    if not 0.0 < uptime <= 1.0:
        raise ValueError("uptime must be in (0, 1]")
    report: dict[str, Any] = {
        "instance_id": -1,
        "segment_id": segment_id,
        "date": date,
        "interval": "hourly",
        "uptime": round(uptime, 10),
    }
    for mode in COUNTS:
        seen = float(observed.get(mode, 0.0))
        left = round(seen * 0.5) if seen else 0.0
        report[mode] = round(seen / uptime, 10)
        report[f"{mode}_lft"] = round(left / uptime, 10)
        report[f"{mode}_rgt"] = round((seen - left) / uptime, 10)
    report["direction"] = 1
    report["timezone"] = "Europe/Brussels"
    if v85 is not None:
        report["v85"] = v85
    doc: dict[str, Any] = {"status_code": 200, "message": "ok", "report": [report]} if wrap else report
    return orjson.dumps(doc)


KIND = register(
    DeviceKind(
        name="telraam",
        link="mqtt",
        summary="Telraam traffic-count reports (API reply, single report, live snapshot GeoJSON)",
        quantities=(
            ("heavy_vehicle_count", "1"),
            ("car_count", "1"),
            ("vehicle_count", "1"),
            ("bike_count", "1"),
            ("pedestrian_count", "1"),
            ("speed_v85", "km/h"),
            ("uptime_fraction", "1"),
        ),
        decode=decode,
        encode=encode,
        doc="telraam.md",
    )
)
