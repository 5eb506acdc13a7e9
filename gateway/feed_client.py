"""A subscriber for citygw's live MQTT feed: typed payload models and an asyncio client built on aiomqtt.

    async with FeedClient("broker.city.example", gateways=["plaza-mayor-01"]) as feed:
        async for kpi in feed.kpis(name="pm2_5"):
            print(kpi.gateway, kpi.device_id, kpi.window, kpi.value, kpi.unit)

The models follow the JSON Schemas in `schemas/feed/` (docs/feeds.md). A payload that does not parse is
counted (`rejected`) and logged with its topic and reason, never raised into the caller's loop; messages that
arrive faster than the caller reads them wait in a bounded queue, and what overflows it is counted
(`dropped`). aiomqtt is the maintained asyncio MQTT client (formerly asyncio-mqtt): the right shape for a
platform's asyncio code; the gateway itself stays on threads and paho (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import aiomqtt
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "FeedClient", "FeedError", "FeedMessage", "Health", "Kpi", "Meta", "MetaDevice", "MetaRoute", "RawReading",
    "Status", "TlsOptions", "parse_message",
]

log = logging.getLogger("citygw.feed_client")

MessageKind = Literal["kpi", "reading", "status", "meta", "health"]
DEFAULT_ROOT = "citygw"  # the default prefix is citygw/<gateway id>


class _FromTopic(BaseModel):
    """Fields the client fills from the topic (they are not in the payload)."""

    prefix: str = Field("", exclude=True)  # the kit's topic prefix, e.g. citygw/plaza-mayor-01
    gateway: str = Field("", exclude=True)  # the gateway id (from the kit's meta, else the prefix's last level)


class Kpi(_FromTopic):
    """One KPI point (schemas/feed/kpi.schema.json); statistics and indicator fields beyond these stay as extras."""

    model_config = ConfigDict(extra="allow")

    device_id: str
    name: str
    window: str
    start: int  # UTC ns
    end: int  # UTC ns, exclusive
    unit: str
    value: float
    valid: bool
    historical: bool
    count: int | None = None
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p95: float | None = None
    coverage: float | None = None
    tags: dict[str, str] = {}


class RawReading(_FromTopic):
    """One raw reading (schemas/feed/reading.schema.json)."""

    model_config = ConfigDict(extra="forbid")

    device_id: str
    quantity: str
    value: float
    unit: str
    ts: int  # UTC ns
    historical: bool
    tags: dict[str, str] = {}
    quality: str = "good"


class Status(_FromTopic):
    """The kit's availability (schemas/feed/status.schema.json): plain text online/offline."""

    state: Literal["online", "offline"]

    @property
    def online(self) -> bool:
        """Whether the kit is connected."""
        return self.state == "online"


class Health(_FromTopic):
    """The kit's health verdict (schemas/feed/health.schema.json), as the status page's /healthz gives it."""

    model_config = ConfigDict(extra="allow")

    healthy: bool
    reasons: list[str]
    at: float  # Unix time, seconds
    devices: dict[str, int] | None = None  # {"up", "down", "waiting"} counts (kits since issue 14)
    backlog: dict[str, float] | None = None  # {"entries", "oldest_s"} of the slowest sink


class Location(BaseModel):
    """WGS 84 position."""

    lat: float
    lon: float
    alt: float | None = None


class MetaDevice(BaseModel):
    """A configured serial or Modbus device."""

    id: str
    kind: str
    link: str
    quantities: list[str]
    location: Location | None
    tags: dict[str, str]


class MetaRoute(BaseModel):
    """An MQTT input route (its devices are named from topics or payloads)."""

    topic: str
    format: str
    quantities: list[str]
    location: Location | None
    tags: dict[str, str]


class FeedOptions(BaseModel):
    """How the kit publishes its raw feed."""

    raw: bool
    raw_deadband: dict[str, float]
    raw_max_interval_s: dict[str, float]
    historical_after_s: float


class Meta(BaseModel):
    """The kit's birth information (schemas/feed/meta.schema.json)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = Field(alias="schema")
    gateway: str  # the gateway id
    version: str
    prefix: str  # the kit's topic prefix
    timezone: str
    site: Location | None
    windows: list[str]
    grace_s: float
    indicators: list[str]
    devices: list[MetaDevice]
    routes: list[MetaRoute]
    locations: dict[str, Location]
    feed: FeedOptions


Payload = Kpi | RawReading | Status | Meta | Health


class FeedError(ValueError):
    """A message that is not a valid citygw feed payload (the reason names the topic and the field)."""


@dataclass(frozen=True, slots=True)
class FeedMessage:
    """One message of the feed: where it came from, its bytes as published, and the parsed payload."""

    topic: str
    kind: MessageKind
    prefix: str
    payload: bytes
    retained: bool
    data: Payload


def _levels(text: str) -> list[str]:
    return text.split("/")


def match_prefix(topic: str, patterns: Sequence[str]) -> tuple[str, MessageKind] | None:
    """The prefix and message kind of a topic under one of the prefix patterns (`+` allowed), else None."""
    levels = _levels(topic)
    for pattern in patterns:
        want = _levels(pattern)
        n = len(want)
        if len(levels) <= n or any(w not in ("+", got) for w, got in zip(want, levels[:n], strict=False)):
            continue
        rest = levels[n:]
        if rest in (["status"], ["meta"], ["health"]):
            return "/".join(levels[:n]), rest[0]  # type: ignore[return-value]
        if rest[0] == "kpi" and len(rest) == 4:
            return "/".join(levels[:n]), "kpi"
        if rest[0] == "reading" and len(rest) == 3:
            return "/".join(levels[:n]), "reading"
    return None


def parse_message(topic: str, payload: bytes, prefix: str, kind: MessageKind, gateway: str = "",
                  retained: bool = False) -> FeedMessage:
    """Parse one payload of a known kind; FeedError with the topic and reason when it is not valid."""
    gateway = gateway or prefix.rsplit("/", 1)[-1]
    try:
        if kind == "status":
            data: Payload = Status.model_validate({"state": payload.decode(), "prefix": prefix, "gateway": gateway})
        else:
            obj = orjson.loads(payload)
            if not isinstance(obj, dict):
                raise FeedError(f"{topic}: payload is not a JSON object")
            if kind == "meta":
                data = Meta.model_validate(obj)
            else:
                model: type[Kpi | RawReading | Health] = Kpi if kind == "kpi" else (
                    RawReading if kind == "reading" else Health)
                data = model.model_validate(obj)
                data.prefix = prefix
                data.gateway = gateway
    except UnicodeDecodeError:
        raise FeedError(f"{topic}: status payload is not UTF-8 text") from None
    except orjson.JSONDecodeError as exc:
        raise FeedError(f"{topic}: payload is not JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise FeedError(f"{topic}: {kind} payload invalid at {where}: {first['msg']}") from None
    return FeedMessage(topic, kind, prefix, payload, retained, data)


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS to the broker: a CA to verify it, optionally a client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class FeedClient:
    """Subscribes to the feed of one or many kits; use as `async with FeedClient(...) as feed:`.

    `gateways` picks kits by id under the default prefix (citygw/<id>); `prefixes` gives topic prefixes
    directly (`+` allowed, for kits with mqtt.feed.topic_prefix set). With neither, every kit under citygw/+.
    """

    def __init__(self, host: str, port: int = 1883, *, gateways: Sequence[str] = (), prefixes: Sequence[str] = (),
                 raw: bool = False, username: str = "", password: str = "", tls: TlsOptions | None = None,
                 protocol: Literal["3.1.1", "5"] = "3.1.1", client_id: str | None = None,
                 persistent: bool = False, session_expiry_s: int = 3600, max_queued: int = 10_000) -> None:
        if persistent and not client_id:
            raise ValueError("a persistent session needs a client_id: the broker finds the session by it")
        self.host = host
        self.port = port
        self.patterns = [p.rstrip("/") for p in prefixes] + [f"{DEFAULT_ROOT}/{g}" for g in gateways]
        if not self.patterns:
            self.patterns = [f"{DEFAULT_ROOT}/+"]
        self.raw = raw
        self.rejected = 0  # payloads that were not valid feed messages
        self.dropped = 0  # messages that arrived while the queue held max_queued unread ones
        self.gateways: dict[str, Meta] = {}  # prefix -> the kit's latest meta
        self._username = username
        self._password = password
        self._tls = tls
        self._protocol = protocol
        self._client_id = client_id
        self._persistent = persistent  # the broker keeps our subscriptions and QoS 1 messages while we are away
        self._session_expiry_s = session_expiry_s
        self._max_queued = max_queued
        self._client: aiomqtt.Client | None = None

    def topics(self) -> list[str]:
        """The subscriptions: status, meta, health and KPIs (and raw readings with `raw`) under every prefix."""
        levels = ["status", "meta", "health", "kpi/+/+/+"] + (["reading/+/+"] if self.raw else [])
        return [f"{p}/{level}" for p in self.patterns for level in levels]

    def _queue_type(self) -> type[asyncio.Queue[aiomqtt.Message]]:
        feed = self

        class CountingQueue(asyncio.Queue[aiomqtt.Message]):
            def put_nowait(self, item: aiomqtt.Message) -> None:
                try:
                    super().put_nowait(item)
                except asyncio.QueueFull:
                    feed.dropped += 1
                    raise

        return CountingQueue

    async def __aenter__(self) -> FeedClient:
        tls_params = None
        if self._tls is not None:
            t = self._tls
            tls_params = aiomqtt.TLSParameters(
                ca_certs=str(t.ca_file) if t.ca_file else None,
                certfile=str(t.cert_file) if t.cert_file else None,
                keyfile=str(t.key_file) if t.key_file else None,
                cert_reqs=ssl.CERT_NONE if t.insecure_skip_verify else ssl.CERT_REQUIRED)
        v5 = self._protocol == "5"
        properties = None
        if v5 and self._persistent:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self._session_expiry_s
        self._client = aiomqtt.Client(
            self.host, self.port, clean_session=None if v5 else not self._persistent,
            clean_start=False if v5 and self._persistent else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties, username=self._username or None, password=self._password or None,
            identifier=self._client_id, tls_params=tls_params,
            tls_insecure=True if self._tls is not None and self._tls.insecure_skip_verify else None,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            max_queued_incoming_messages=self._max_queued, queue_type=self._queue_type())
        await self._client.__aenter__()
        try:
            await self._client.subscribe([(topic, 1) for topic in self.topics()])
        except BaseException:
            await self._client.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._client is not None:
            await self._client.__aexit__(exc_type, exc, tb)
            self._client = None

    async def messages(self) -> AsyncIterator[FeedMessage]:
        """Every valid feed message as it arrives (retained ones first after subscribing)."""
        if self._client is None:
            raise RuntimeError("use `async with FeedClient(...) as feed:` before reading messages")
        async for m in self._client.messages:
            topic = m.topic.value
            found = match_prefix(topic, self.patterns)
            if found is None:
                continue  # a topic under our subscriptions with another shape: not a feed message
            prefix, kind = found
            meta = self.gateways.get(prefix)
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            try:
                msg = parse_message(topic, payload, prefix, kind, meta.gateway if meta else "", m.retain)
            except FeedError as exc:
                self.rejected += 1
                log.warning("feed message rejected: %s", exc)
                continue
            if isinstance(msg.data, Meta):
                self.gateways[prefix] = msg.data
            yield msg

    async def kpis(self, name: str | None = None, window: str | None = None) -> AsyncIterator[Kpi]:
        """KPI points, optionally only of one series name and/or window."""
        async for msg in self.messages():
            data = msg.data
            if isinstance(data, Kpi) and name in (None, data.name) and window in (None, data.window):
                yield data

    async def statuses(self) -> AsyncIterator[Status]:
        """Online/offline changes of every kit."""
        async for msg in self.messages():
            if isinstance(msg.data, Status):
                yield msg.data

    async def metas(self) -> AsyncIterator[Meta]:
        """Birth information of every kit (retained: one per kit right after subscribing)."""
        async for msg in self.messages():
            if isinstance(msg.data, Meta):
                yield msg.data


def payload_json(msg: FeedMessage) -> Any:
    """The payload as published, decoded (status: its text)."""
    return msg.payload.decode() if msg.kind == "status" else orjson.loads(msg.payload)
