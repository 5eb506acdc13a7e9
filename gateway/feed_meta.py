"""The retained birth information of a kit on `<prefix>/meta` (schemas/feed/meta.schema.json).

A platform that subscribes to `citygw/+/meta` discovers every kit on a broker: what it is, where its devices
stand, what they measure and which windows and indicators it publishes.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from devices.registry import get_kind
from gateway.settings import Coordinates, Settings

__all__ = ["META_SCHEMA_VERSION", "birth_info", "citygw_version"]

META_SCHEMA_VERSION = 1  # bumped when a field changes meaning; new optional fields do not bump it


def citygw_version() -> str:
    """The installed citygw version ("unknown" when run from a tree that was never installed)."""
    try:
        return version("citygw")
    except PackageNotFoundError:
        return "unknown"


def _location(c: Coordinates | None) -> dict[str, float] | None:
    if c is None or c.lat is None or c.lon is None:
        return None
    out = {"lat": c.lat, "lon": c.lon}
    if c.alt is not None:
        out["alt"] = c.alt
    return out


def _quantities(kind_name: str) -> list[str]:
    return sorted({q for q, _unit in get_kind(kind_name).quantities})


def birth_info(settings: Settings) -> dict[str, Any]:
    """What `<prefix>/meta` carries for this configuration (no secrets, no hosts, no file paths)."""
    s = settings
    feed = s.mqtt.feed
    devices = [{"id": d.id, "kind": d.kind, "link": get_kind(d.kind).link, "quantities": _quantities(d.kind),
                "location": _location(s.device_location(d.id)), "tags": dict(d.tags)}
               for d in s.devices]
    routes = [{"topic": r.topic, "format": r.format, "quantities": _quantities(r.format),
               "location": _location(r if r.point else None), "tags": dict(r.tags)}
              for r in s.mqtt.routes]
    known = {d.id for d in s.devices}
    located = {dev_id: _location(c) for dev_id, c in sorted(s.locations.items()) if dev_id not in known}
    site = _location(Coordinates(lat=s.gateway.lat, lon=s.gateway.lon))
    return {
        "schema": META_SCHEMA_VERSION,
        "gateway": s.gateway.id,
        "version": citygw_version(),
        "prefix": s.feed_prefix,
        "timezone": s.gateway.timezone,
        "site": site,
        "windows": list(s.aggregation.windows),
        "grace_s": s.aggregation.grace,
        "indicators": list(s.kpis.indicators),
        "devices": devices,
        "routes": routes,
        "locations": {k: v for k, v in located.items() if v is not None},
        "feed": {"raw": feed.raw, "raw_deadband": dict(feed.raw_deadband),
                 "raw_max_interval_s": dict(feed.raw_max_interval), "historical_after_s": feed.historical_after},
    }
