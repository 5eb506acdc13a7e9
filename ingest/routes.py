"""Route → decode → reject, written once for every message input (MQTT paho, MQTT bulk, and brokers to come).

A `RouteTable` holds the configured routes (topic filter → payload format, device-id template, tags, options).
`RouteTable.decode(topic, payload, retain, received_ns)` matches the topic to the first route whose filter
matches, fills the device id from the topic's levels, refuses a retained copy, decodes the payload with the
route's format and returns either the readings or a `Rejected` (device id, reason, payload) for the input to
hand to `Emitter.rejected`. It knows nothing of the transport: a topic (a string, or the UTF-8 bytes it
arrived as) and a payload (bytes). Topic lookups are cached (bounded); the table is used from one thread.

`Route`, `decode_for_route` and `RETAINED_REASON` live here too (re-exported by `ingest.mqtt_source`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

from devices.kind import DeviceKind
from devices.reading import EMPTY_TAGS, DecodeContext, DecodeError, Reading

__all__ = ["RETAINED_REASON", "Decoded", "Rejected", "Route", "RouteTable", "decode_for_route"]

_LEVEL = re.compile(r"\{(\d+)\}")
_DEVICE_ID = attrgetter("device_id")

# A message with the RETAIN flag reaches a subscriber only as the broker's stored copy, replayed because we
# (re)subscribed (MQTT 3.1.1 §3.3.1.3; MQTT 5 without retain-as-published, which we never ask for). Live
# messages always arrive with the flag clear, and the persistent session queues those while we are away, so a
# replayed copy adds nothing but a repeat of an old value, with no time of its own when the payload has none.
RETAINED_REASON = ("retained message ignored: the broker replays its stored copy at every subscription; "
                   "live and queued messages carry the readings (docs/reliability.md)")

TOPIC_CACHE_MAX = 50_000  # distinct topics remembered with their route; cleared (and counted) when full
DEVICE_KINDS_MAX = 10_000  # devices whose payload format the status page can name


@dataclass(frozen=True, slots=True)
class Route:
    """Topic filter → payload format, device-id template, tags and options."""

    topic: str
    kind: DeviceKind
    device_id: str = ""
    qos: int = 1
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY_TAGS)
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def match_filter(self) -> str:
        """The filter without a `$share/<group>/` prefix (what topics are matched against)."""
        if self.topic.startswith("$share/"):
            return self.topic.split("/", 2)[2]
        return self.topic

    def device_for(self, topic: str) -> str:
        """Fill the device-id template from topic levels ({1} = second level)."""
        if not self.device_id:
            return ""
        levels = topic.split("/")
        return _LEVEL.sub(lambda m: levels[int(m.group(1))] if int(m.group(1)) < len(levels) else "",
                          self.device_id)


def decode_for_route(route: Route, payload: bytes, ctx: DecodeContext) -> list[Reading]:
    """The route's decoder, plus the input's rule that every reading names its device (DecodeError if not)."""
    readings = route.kind.decode(payload, ctx)
    if not all(map(_DEVICE_ID, readings)):  # in C: no generator frame per reading
        raise DecodeError(f"no device id: the payload names no device and the route {route.topic!r} sets none; "
                          'set device_id on the route (e.g. device_id = "{1}" for the second topic level) or the '
                          "format's id option (docs/devices/" + route.kind.name + ".md)", payload)
    return readings


class Rejected(NamedTuple):
    """A message refused: what `Emitter.rejected` takes (device id or topic, reason, the payload if kept)."""

    device_id: str
    reason: str
    payload: bytes | None = None


# The outcome of one message: its readings (possibly none), or why it was refused.
Decoded = list[Reading] | Rejected


class _Match(NamedTuple):
    topic: str | None  # None: the topic bytes were not UTF-8
    route: Route | None
    device_id: str


class RouteTable:
    """The routes of one input: topic → route and device id (cached), and one message → readings or rejection."""

    def __init__(self, routes: Sequence[Route], log: logging.Logger | None = None,
                 cache_max: int = TOPIC_CACHE_MAX) -> None:
        self.routes = list(routes)
        self.log = log or logging.getLogger("citygw.mqtt")  # decoder bugs are logged under the input's name
        self.cache_max = cache_max
        self.cache_clears = 0
        # device id -> payload format it was last decoded with, for the status page (bounded)
        self.device_kinds: dict[str, str] = {}
        self._cache: dict[str | bytes, _Match] = {}

    def match(self, topic: str) -> Route | None:
        """The first route whose filter matches `topic` (None when no route does)."""
        return next((r for r in self.routes if mqtt.topic_matches_sub(r.match_filter, topic)), None)

    def lookup(self, topic: str | bytes) -> tuple[Route | None, str]:
        """The route for `topic` and the device id its template gives (None, "" when no route matches)."""
        found = self._cache.get(topic) or self._resolve(topic)
        return found.route, found.device_id

    def _resolve(self, raw: str | bytes) -> _Match:
        topic: str | None
        if isinstance(raw, bytes):
            try:
                topic = raw.decode("utf-8")
            except UnicodeDecodeError:
                topic = None
        else:
            topic = raw
        route = self.match(topic) if topic is not None else None
        found = _Match(topic, route, route.device_for(topic) if route is not None and topic is not None else "")
        if len(self._cache) >= self.cache_max:
            self._cache.clear()  # bounded; rebuilt from the traffic
            self.cache_clears += 1
        self._cache[raw] = found
        return found

    def decode(self, topic: str | bytes, payload: bytes, retain: bool, received_ns: int) -> Decoded:
        """One message: its readings, or a `Rejected` (no route, retained copy, bad payload, decoder bug)."""
        found = self._cache.get(topic) or self._resolve(topic)
        text, route, device_id = found
        if route is None or text is None:
            if text is None:
                assert isinstance(topic, bytes)
                return Rejected("", f"topic is not valid UTF-8: {topic.decode('utf-8', 'replace')!r}")
            return Rejected("", f"no route matches topic {text!r}")
        if retain:
            return Rejected(device_id or text, f"{RETAINED_REASON} (topic {text})")
        ctx = DecodeContext(device_id, received_ns, text, route.tags, route.options)
        try:
            readings = decode_for_route(route, payload, ctx)
        except DecodeError as exc:
            return Rejected(device_id or text, f"{route.kind.name} payload on {text}: {exc.reason}", payload)
        except Exception as exc:
            self.log.exception("decoder %s raised %s (a bug: decoders may only raise DecodeError)",
                               route.kind.name, type(exc).__name__)
            return Rejected(device_id or text, f"decoder error {type(exc).__name__}: {exc}", payload)
        if readings:
            kinds = self.device_kinds
            first = readings[0].device_id
            if kinds.get(first) != route.kind.name and len(kinds) < DEVICE_KINDS_MAX:
                kinds[first] = route.kind.name
        return readings
