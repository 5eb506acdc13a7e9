"""Configuration: TOML validated with pydantic; every problem reported at once with file, line and key.

Secrets are never written in the file: `*_env` names an environment variable, `*_file` a file holding the
secret. Any scalar of a section can be overridden from the environment as CITYGW_<SECTION>_<KEY>
(e.g. CITYGW_MQTT_HOST=broker.local) for deployment.
"""

from __future__ import annotations

import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from aggregators.derived import KpiOptions
from aggregators.windows import parse_duration_ns

__all__ = ["ConfigError", "ConfigProblem", "Settings", "load_settings", "read_secret"]


def _duration_s(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration_ns(value) / 1e9
    return value


# pydantic's ByteSize parses sizes ("512MB", "2 GB", "64MiB", "1.5GiB"; a bare number is bytes; KB = 1000 B,
# KiB = 1024 B). Its pattern is anchored only at the start, so "1,5GB" would read as 1 byte: the whole text must match.
_WHOLE_SIZE = re.compile(ByteSize.byte_string_pattern + r"\s*$", re.IGNORECASE)


def _size_bytes(value: Any, handler: ValidatorFunctionWrapHandler) -> ByteSize:
    problem = f"invalid size {value!r}: use e.g. 500MB, 2GB, 64MiB"
    if isinstance(value, str) and not _WHOLE_SIZE.match(value):
        raise ValueError(problem)
    try:
        size: ByteSize = handler(value)
    except ValidationError:
        raise ValueError(problem) from None
    return size


Duration = Annotated[float, BeforeValidator(_duration_s), Field(ge=0)]
Size = Annotated[ByteSize, WrapValidator(_size_bytes)]
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_plain_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("password", "token"):
                if key in data:
                    raise ValueError(
                        f"'{key}' must not be written in the config file: set {key}_env = \"VAR\" (an "
                        f"environment variable) or {key}_file = \"/path\" (a file holding the secret)"
                    )
        return data


class GatewaySection(_Section):
    """Identity and local resources of this gateway."""

    id: str = Field("citygw", pattern=_ID)
    data_dir: Path = Path("var/citygw")
    timezone: str = "UTC"
    lat: float | None = Field(None, ge=-90, le=90)  # the kit's site: the position of devices without their own
    lon: float | None = Field(None, ge=-180, le=180)
    # Secret of the status server (Bearer token, or the password of HTTP basic auth with any user name);
    # required when status_listen is not a loopback address. Declared before status_listen: its check reads them.
    status_token_env: str = ""
    status_token_file: Path | None = None
    # 8088 is influxd 1.x's own backup/RPC port; 8765 is free in /etc/services and the usual exporter ranges.
    status_listen: str = "127.0.0.1:8765"  # HTTP status page and /metrics; "" disables
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("status_listen")
    @classmethod
    def _status_listen(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"status_listen {value!r} must be HOST:PORT, e.g. \"127.0.0.1:8765\"")
        if not is_loopback(host) and not (info.data.get("status_token_env") or info.data.get("status_token_file")):
            raise ValueError(
                f"status_listen {value!r} serves device ids, sink URLs and errors beyond this machine without "
                "authentication: set status_token_env = \"VAR\" or status_token_file = \"/path\" (a secret "
                "for Bearer or basic auth), or listen on 127.0.0.1")
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Madrid") from None
        return value


def is_loopback(host: str) -> bool:
    """Whether a listen host is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HealthSection(_Section):
    """When /healthz answers 503 (docs/operations.md), and when an MQTT device counts as gone."""

    ingest_stall_after: Duration = 30.0  # input waiting and no journal commit for this long
    mqtt_down_after: Duration = 60.0  # the MQTT input disconnected for this long
    nats_down_after: Duration = 60.0  # the NATS input not connected (its consumer not bound) for this long
    sink_lag_after: Duration = 300.0  # a sink's oldest undelivered entry older than this
    # An MQTT device is unavailable after this long unheard; unset: 3x its longest recent interval (at least 5 s).
    stale_after: Duration | None = None


class Coordinates(_Section):
    """Where a device stands (WGS 84), for the city-platform feeds (NGSI-LD `location`, SensorThings `Location`)."""

    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    alt: float | None = None  # metres above sea level, optional

    @model_validator(mode="after")
    def _both_or_none(self) -> Coordinates:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon (decimal degrees, WGS 84), or neither")
        return self

    @property
    def point(self) -> tuple[float, float] | None:
        """(lon, lat) in GeoJSON order, or None when no position is configured."""
        return None if self.lat is None or self.lon is None else (self.lon, self.lat)


class DeviceConfig(Coordinates):
    """A serial or Modbus device on a port."""

    id: str = Field(pattern=_ID)
    kind: str
    port: str
    baudrate: int = Field(9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    poll_interval: Duration = 10.0
    timeout: Duration = 1.0
    silence_timeout: Duration | None = None  # unavailable after this long without a good frame (default: kind's)
    address: int = Field(1, ge=0, le=255)
    tags: dict[str, str] = {}
    options: dict[str, Any] = {}

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from devices.registry import kind_names

        if value in kind_names("mqtt"):
            raise ValueError(f"{value!r} is an MQTT payload format: configure it under [[mqtt.routes]]")
        serial_kinds = kind_names("serial", "modbus")
        if value not in serial_kinds:
            raise ValueError(f"unknown device kind {value!r}; serial/Modbus kinds: {', '.join(serial_kinds)}")
        return value


class TlsConfig(_Section):
    """TLS for a connection: a CA to verify the server, and optionally a client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class MqttRoute(Coordinates):
    """Which topics carry which payload format, and how to name the device (lat/lon: where its devices stand)."""

    topic: str
    format: str
    device_id: str = ""  # template: {N} is topic level N (0-based); empty = the format's own device id
    qos: Literal[0, 1, 2] = 1
    tags: dict[str, str] = {}
    options: dict[str, Any] = {}

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        from devices.registry import kind_names

        formats = kind_names("mqtt")
        if value not in formats:
            raise ValueError(f"unknown MQTT payload format {value!r}; formats: {', '.join(formats)}")
        return value


def _every_quantity(value: Any) -> Any:
    """A single duration applies to every quantity: it is stored under the key "*"."""
    return {"*": value} if isinstance(value, str | int | float) else value


class FeedSection(_Section):
    """The live indicator feed published to the broker."""

    enabled: bool = True
    topic_prefix: str = ""  # default citygw/<gateway id>; everything the gateway publishes is under it
    raw: bool = False  # also publish every raw reading (not retained)
    qos: Literal[0, 1] = 1
    # Report by exception for the raw feed (docs/feeds.md): a quantity with a deadband is published only when it
    # moved by more than the deadband since its last published reading, or after raw_max_interval (heartbeat).
    raw_deadband: dict[str, Annotated[float, Field(ge=0)]] = {}
    # One duration for every quantity with a deadband ("5m"), or a table per quantity ({ pm2_5 = "1m" }).
    raw_max_interval: Annotated[dict[str, Duration], BeforeValidator(_every_quantity)] = {}
    # A point is flagged "historical" when it is sent this long after it could first have been sent.
    historical_after: Duration = 60.0

    @field_validator("raw_deadband", "raw_max_interval")
    @classmethod
    def _known_quantities(cls, value: dict[str, Any]) -> dict[str, Any]:
        from devices.vocabulary import QUANTITIES

        unknown = sorted(k for k in value if k != "*" and k not in QUANTITIES)
        if unknown:
            raise ValueError(f"unknown quantit{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}: use the "
                             "names `citygw devices` lists (pm2_5, noise_laeq, …)")
        return value

    @model_validator(mode="after")
    def _heartbeat_needs_deadband(self) -> FeedSection:
        idle = sorted(q for q in self.raw_max_interval if q != "*" and q not in self.raw_deadband
                      and "*" not in self.raw_deadband)
        if idle:
            raise ValueError(f"raw_max_interval for {', '.join(idle)} has no effect without a deadband: add "
                             f"raw_deadband = {{ {idle[0]} = 0 }} (0 = publish on any change)")
        return self


class MqttSection(_Section):
    """The MQTT broker: inputs (routes) and the live feed."""

    host: str = ""
    port: int = Field(1883, gt=0, lt=65536)
    # 3.1.1 by default: every broker and TTN speak it, a clean_session=False session persists just the same,
    # and paho parses it ~35 % faster than MQTT 5 (no per-packet properties; docs/performance.md).
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    client_id: str = ""
    username: str = ""
    password_env: str = ""
    password_file: Path | None = None
    tls: TlsConfig | None = None
    keepalive: int = Field(30, ge=5)
    session_expiry: Duration = 7 * 86400.0
    reconnect_max: Duration = 60.0
    routes: list[MqttRoute] = []
    feed: FeedSection = FeedSection()
    # The MQTT input's client: "paho" (MQTT 3.1.1 or 5), or "bulk" (ingest/mqtt_bulk.py: MQTT 3.1.1 parsed a
    # whole socket read at a time, one journal batch and one PUBACK write per read; see docs/performance.md).
    # "auto" (the default) takes bulk, twice as fast, wherever it speaks what the config asks for.
    input_client: Literal["auto", "paho", "bulk"] = "auto"

    @property
    def input_client_used(self) -> Literal["paho", "bulk"]:
        """The input client "auto" resolves to: bulk for MQTT 3.1.1 without a QoS 2 route, else paho."""
        if self.input_client != "auto":
            return self.input_client
        return "bulk" if self.protocol == "3.1.1" and all(r.qos < 2 for r in self.routes) else "paho"

    @model_validator(mode="after")
    def _bulk_speaks_qos_1(self) -> MqttSection:
        # Raised as a ValidationError so that the problem is located at the route's own `qos` line.
        if self.input_client == "bulk":
            problems = [
                InitErrorDetails(type=PydanticCustomError("value_error", (
                    "QoS 2 is not spoken by the bulk MQTT input (QoS 0 or 1): set qos = 1 on this route (a reading "
                    "is acknowledged only once journaled, and the duplicate check drops redelivered copies, so QoS 1 "
                    "loses nothing), or mqtt.input_client = \"paho\" for QoS 2")), loc=("routes", i, "qos"), input=2)
                for i, route in enumerate(self.routes) if route.qos == 2]
            if problems:
                raise ValidationError.from_exception_data("MqttSection", problems)
        return self


class NatsSection(_Section):
    """A NATS JetStream input: a durable pull consumer on one partition of a stream (docs/fleet.md)."""

    servers: list[str] = []  # every node of the cluster, e.g. ["nats://nats-1:4222", …]; nats-py goes round them
    stream: str = ""
    durable: str = ""  # this instance's durable consumer: one per partition, kept by the cluster while we are away
    subject: str = ""  # the consumer's filter: this instance's partition, e.g. "part.0.>"
    username: str = ""
    password_env: str = ""
    password_file: Path | None = None
    token_env: str = ""
    token_file: Path | None = None
    ca_file: Path | None = None  # TLS (tls:// servers): the CA that signed the servers' certificates
    batch: int = Field(500, ge=1, le=10_000)  # messages per fetch
    max_ack_pending: int = Field(5000, ge=1)  # messages handed to the journal and not yet acknowledged, at most
    ack_wait: Duration = 30.0  # a message not acknowledged this long is delivered again
    reconnect_max: Duration = 10.0
    routes: list[MqttRoute] = []  # topic = the subject with `.` as `/` (as NATS's MQTT listener maps them)

    @field_validator("stream", "durable")
    @classmethod
    def _nats_name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", value):
            raise ValueError(f"{value!r} is not a JetStream name: letters, digits, '-' and '_' only")
        return value

    @field_validator("subject")
    @classmethod
    def _nats_subject(cls, value: str) -> str:
        tokens = value.split(".")
        if value and (any(not t or " " in t for t in tokens) or ">" in tokens[:-1]
                      or any(("*" in t or ">" in t) and len(t) > 1 for t in tokens)):
            raise ValueError(f"{value!r} is not a NATS subject filter (tokens separated by '.', '*' for one "
                             "token, '>' last for the rest), e.g. \"part.0.>\"")
        return value

    @model_validator(mode="after")
    def _complete(self) -> NatsSection:
        if not self.servers and not self.routes:
            return self
        missing = [k for k in ("servers", "stream", "durable", "subject", "routes") if not getattr(self, k)]
        if missing:
            raise ValueError(f"[nats] needs {', '.join(missing)} as well: servers (the cluster's nodes), stream, "
                             "durable (this instance's consumer), subject (its partition, e.g. \"part.0.>\") and "
                             "at least one [[nats.routes]] (topic and format)")
        return self


class InfluxSection(_Section):
    """An InfluxDB (or compatible) destination."""

    name: str = ""  # the sink's cursor name; default derived from url and database/bucket
    url: str
    api: Literal["v2", "v1"] = "v2"
    org: str = ""
    bucket: str = ""
    token_env: str = ""
    token_file: Path | None = None
    database: str = ""
    username: str = ""
    password_env: str = ""
    password_file: Path | None = None
    ca_file: Path | None = None
    verify_tls: bool = True
    batch_size: int = Field(5000, gt=0)
    flush_interval: Duration = 1.0
    # While readings keep coming, a write that did not fill its batch is followed by the next one only this
    # long after it: fewer, larger writes (influxd fsyncs its WAL once per write request); 0 writes at once.
    linger: Duration = 0.2
    timeout: Duration = 10.0
    gzip: bool | Literal["auto"] = "auto"  # "auto": see compress(); true or false forces it
    create_database: bool = False  # v1: CREATE DATABASE when the server says it is missing

    @field_validator("gzip", mode="before")
    @classmethod
    def _gzip_choice(cls, value: Any) -> Any:
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError(f'gzip is true, false or "auto", not {value!r}')

    def compress(self) -> bool:
        """Whether writes are gzip'd: as set, or with "auto" unless the server is on this machine.

        gzip saves an uplink 94 % of the bytes of a batch of readings, but costs both ends CPU: 0.25 µs per
        point to compress at level 1, and in influxd 1.6 0.5-2.5 µs per point more to take it in. Over
        loopback (an influxd on the kit itself) there is no uplink to save, so "auto" sends it plain.
        """
        if self.gzip != "auto":
            return self.gzip
        return not is_loopback(urllib.parse.urlsplit(self.url).hostname or "")

    @model_validator(mode="after")
    def _api_fields(self) -> InfluxSection:
        if self.api == "v2" and not self.bucket:
            raise ValueError("InfluxDB v2 needs bucket (and org, token_env/token_file for InfluxDB 2.x/Cloud)")
        if self.api == "v1" and not self.database:
            raise ValueError("InfluxDB v1 needs database")
        if self.api == "v2" and self.create_database:
            raise ValueError("create_database applies to api = \"v1\" only (a v2 bucket is created in InfluxDB)")
        if not re.match(r"^https?://", self.url):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        return self


class SensorThingsSection(_Section):
    """An OGC SensorThings API v1.1 server (FROST-Server and others): KPI windows become Observations."""

    name: str = ""  # the sink's cursor name; default derived from url
    url: str  # the service root, e.g. http://host:8080/FROST-Server/v1.1
    transport: Literal["http", "mqtt"] = "http"  # how Observations go; entities are always made over HTTP
    username: str = ""  # basic auth, with password_env or password_file
    password_env: str = ""
    password_file: Path | None = None
    token_env: str = ""  # or a bearer token
    token_file: Path | None = None
    ca_file: Path | None = None
    verify_tls: bool = True
    mqtt_host: str = ""  # transport = "mqtt": the server's broker (default: the url's host)
    mqtt_port: int = Field(1883, gt=0, lt=65536)
    mqtt_tls: bool = False
    kpis: list[str] = []  # KPI names that go out (e.g. ["pm2_5", "us_aqi"]); empty: all
    windows: list[str] = []  # windows that go out (e.g. ["1h", "1d"]); empty: all
    batch_size: int = Field(500, gt=0)
    flush_interval: Duration = 1.0
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _checks(self) -> SensorThingsSection:
        if not re.match(r"^https?://", self.url):
            raise ValueError(f"url {self.url!r} must start with http:// or https:// (the service root, e.g. "
                             "http://host:8080/FROST-Server/v1.1)")
        if self.username and (self.token_env or self.token_file):
            raise ValueError("give either username (basic auth) or token_env/token_file (bearer), not both")
        return self


class NgsiLdSection(_Section):
    """An NGSI-LD context broker (Orion-LD, Stellio, Scorpio): KPI windows become Smart Data Models entities."""

    name: str = ""  # the sink's cursor name; default derived from url and tenant
    url: str  # the broker's base URL, e.g. http://orion:1026 (the sink appends /ngsi-ld/v1/...)
    tenant: str = ""  # sent as NGSILD-Tenant
    token_env: str = ""  # Bearer token from an environment variable or a file
    token_file: Path | None = None
    ca_file: Path | None = None
    verify_tls: bool = True
    # The @context list every entity carries; empty: its Smart Data Models context(s), citygw's terms, the core.
    context: list[str] = []
    entity_prefix: str = "urn:ngsi-ld:"
    kpis: list[str] = []  # KPI names that go out (e.g. ["pm2_5", "us_aqi"]); empty: every mapped name
    windows: list[str] = []  # windows that go out (e.g. ["1h", "1d"]); empty: all
    batch_size: int = Field(100, gt=0)  # KPI points per batch; also the most entities in one upsert request
    flush_interval: Duration = 1.0
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _checks(self) -> NgsiLdSection:
        from gateway.sinks.ngsi_ld_mapping import RULES

        if not re.match(r"^https?://", self.url):
            raise ValueError(f"url {self.url!r} must start with http:// or https:// (the broker's base URL, e.g. "
                             "http://orion:1026)")
        unknown = sorted(set(self.kpis) - set(RULES))
        if unknown:
            raise ValueError(f"kpis {', '.join(unknown)} have no NGSI-LD mapping; mapped: {', '.join(sorted(RULES))}"
                             " (docs/feeds.md, NGSI-LD)")
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", self.entity_prefix):
            raise ValueError(f"entity_prefix {self.entity_prefix!r} must start a URI, e.g. \"urn:ngsi-ld:\"")
        return self


class JournalSection(_Section):
    """The on-disk journal (SQLite WAL)."""

    path: Path | None = None  # default <data_dir>/journal.sqlite
    synchronous: Literal["full", "normal", "off"] = "full"
    max_size: Size = ByteSize(512 * 10**6)
    batch_max: int = Field(10_000, gt=0)  # readings per journal transaction (docs/performance.md)
    commit_interval: Duration = 0.01  # at most one commit per this long while readings keep coming


class AggregationSection(_Section):
    """Event-time windows."""

    windows: list[str] = ["1m", "1h"]
    grace: Duration = 10.0
    min_coverage: float = Field(0.75, ge=0, le=1)

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        for w in value:
            parse_duration_ns(w)
        return value


class LocalStoreSection(_Section):
    """JSON-lines files of readings and KPIs; the default sink when no InfluxDB is configured."""

    enabled: bool | None = None  # None: on when [[influx]] is empty
    path: Path | None = None  # default <data_dir>/store


class ReportSection(_Section):
    """`citygw report`: where the KPI series are read, and the inputs a city supplies (not measured by sensors)."""

    title: str = ""
    # Default: the first [[influx]] entry (InfluxQL for api = "v1"), else the local store.
    source: Literal["influxql", "victoriametrics", "local_store"] | None = None
    url: str = ""  # default: the first [[influx]] entry's url
    database: str = ""  # InfluxQL database (default: the first [[influx]] entry's)
    username: str = ""
    password_env: str = ""
    password_file: Path | None = None
    timezone: str = ""  # local days of the report (default: gateway.timezone)
    population: int | None = Field(None, gt=0)  # default: [kpis] population
    inhabitants: dict[str, int] = {}  # per site tag: who lives where noise is measured (EN:EN:EQ:2A)
    street_km_total: float | None = Field(None, gt=0)  # km of major streets (EC:ICT:T:2C)
    street_km: dict[str, float] = {}  # km of major street each traffic counter (device id) covers
    data_capture: float = Field(0.9, gt=0, le=1)  # completeness rule: share of valid days


class Settings(_Section):
    """The whole configuration file."""

    gateway: GatewaySection = GatewaySection()
    devices: list[DeviceConfig] = []
    mqtt: MqttSection = MqttSection()
    nats: NatsSection = NatsSection()  # a JetStream partition as input (central tier)
    influx: list[InfluxSection] = []
    sensorthings: list[SensorThingsSection] = []
    ngsi_ld: list[NgsiLdSection] = []
    journal: JournalSection = JournalSection()
    aggregation: AggregationSection = AggregationSection()
    local_store: LocalStoreSection = LocalStoreSection()
    kpis: KpiOptions = KpiOptions()
    health: HealthSection = HealthSection()
    report: ReportSection = ReportSection()
    # Positions of devices that have no [[devices]] entry (MQTT devices named from topics): id -> coordinates.
    locations: dict[str, Coordinates] = {}

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        ids = [d.id for d in self.devices]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"device ids must be unique; repeated: {', '.join(dupes)}")
        by_port: dict[str, tuple[int, str, int]] = {}
        for d in self.devices:
            line = (d.baudrate, d.parity, d.stopbits)
            if by_port.setdefault(d.port, line) != line:
                raise ValueError(f"devices on port {d.port} disagree on baudrate/parity/stopbits: one bus, one "
                                 "line setting (device " + d.id + ")")
        if self.mqtt.routes and not self.mqtt.host:
            raise ValueError("mqtt.routes are configured but mqtt.host is empty")
        prefix = self.feed_prefix
        if not prefix.strip("/"):
            raise ValueError(f"mqtt.feed.topic_prefix {self.mqtt.feed.topic_prefix!r} is empty: the gateway would "
                             "publish at the broker's root; leave it unset for citygw/<gateway id>")
        if "#" in prefix or "+" in prefix or prefix.startswith("$"):
            raise ValueError(f"mqtt.feed.topic_prefix {prefix!r} must be a plain topic (no wildcards, no $)")
        if self.sensorthings:  # SensorThings Observations need a Location (their FeatureOfInterest)
            unplaced = [d.id for d in self.devices if self.device_location(d.id) is None]
            if unplaced:
                raise ValueError(f"[[sensorthings]] needs a position for every device; {', '.join(unplaced)} "
                                 "has none: set lat/lon on the device, or gateway.lat/lon for the whole kit")
        _refuse_shared_windowed_routes(self)
        return self

    @property
    def feed_prefix(self) -> str:
        """Every topic the gateway publishes starts with this."""
        return (self.mqtt.feed.topic_prefix or f"citygw/{self.gateway.id}").rstrip("/")

    def device_location(self, device_id: str, route: MqttRoute | None = None) -> Coordinates | None:
        """A device's configured position: its own entry, else [locations], else its route, else the site."""
        for device in self.devices:
            if device.id == device_id and device.point:
                return device
        if device_id in self.locations and self.locations[device_id].point:
            return self.locations[device_id]
        if route is not None and route.point:
            return route
        g = self.gateway
        if g.lat is not None and g.lon is not None:
            return Coordinates(lat=g.lat, lon=g.lon)
        return None

    @property
    def journal_path(self) -> Path:
        """Where the journal file lives."""
        return self.journal.path or self.gateway.data_dir / "journal.sqlite"

    @property
    def local_store_enabled(self) -> bool:
        """Whether the JSON-lines local store sink runs."""
        return self.local_store.enabled if self.local_store.enabled is not None else not self.influx


def _refuse_shared_windowed_routes(settings: Settings) -> None:
    """A `$share/<group>/…` route spreads each device over several gateways: each would publish its own partial
    KPI of the same device and window, overwriting the others' (one series, one timestamp). Refused while the
    readings are windowed (aggregation.windows not empty), located at the route's `topic` line."""
    if not settings.aggregation.windows:
        return
    errors = [
        InitErrorDetails(type=PydanticCustomError(
            "shared_subscription",
            "a $share/ subscription spreads one device's messages over several gateways, and each would publish "
            "a partial KPI for the same device and window, overwriting the others' in InfluxDB and on the feed; "
            "subscribe without $share/ (one gateway per device; to scale out, give each gateway one partition of "
            "the devices, docs/fleet.md), or set aggregation.windows = [] on the shared gateways to keep raw "
            "readings only"), loc=("mqtt", "routes", i, "topic"), input=route.topic)
        for i, route in enumerate(settings.mqtt.routes) if route.topic.startswith("$share/")
    ]
    if errors:
        raise ValidationError.from_exception_data("Settings", errors)


def read_secret(env: str, file: Path | None, what: str) -> str:
    """Resolve a secret from an environment variable or a file; ConfigError naming the reference if missing."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError([ConfigProblem("", 0, what, f"environment variable {env} is not set")])
        return value
    if file is not None:
        try:
            return file.read_text().strip()
        except OSError as exc:
            problem = ConfigProblem(str(file), 0, what, f"cannot read secret file: {exc.strerror}")
            raise ConfigError([problem]) from None
    return ""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem: where (file, line, key) and what."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else (self.file or "config")
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every problem found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


_TABLE = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*)\s*=")


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Map key paths (as pydantic reports them: ('devices', 2, 'baudrate')) to their line in the TOML text."""
    index: dict[tuple[Any, ...], int] = {}
    counters: dict[tuple[Any, ...], int] = {}
    current: tuple[Any, ...] = ()
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _TABLE.match(line)
        if m:
            parts: list[Any] = []
            names = [p.strip().strip("\"'") for p in m.group(2).split(".")]
            for i, name in enumerate(names):
                parts.append(name)
                prefix = tuple(parts)
                is_last = i == len(names) - 1
                if prefix in counters and not is_last:
                    parts.append(counters[prefix])
            if m.group(1) == "[[":
                key = tuple(parts)
                counters[key] = counters.get(key, -1) + 1
                parts.append(counters[key])
            current = tuple(parts)
            index.setdefault(current, lineno)
            continue
        k = _KEY.match(line)
        if k:
            path = current + tuple(p.strip() for p in k.group(1).split("."))
            index.setdefault(path, lineno)
    return index


def _apply_env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """Apply CITYGW_<SECTION>_<KEY> variables; return {(section, key): variable name} of what was applied."""
    applied: dict[tuple[str, str], str] = {}
    sections: dict[str, type[BaseModel]] = {
        "gateway": GatewaySection, "mqtt": MqttSection, "nats": NatsSection, "journal": JournalSection,
        "aggregation": AggregationSection, "local_store": LocalStoreSection, "health": HealthSection,
    }
    for name, value in env.items():
        if not name.startswith("CITYGW_"):
            continue
        rest = name[len("CITYGW_"):].lower()
        for section, model in sections.items():
            key = rest.removeprefix(section + "_")
            # Only real scalar keys of the section: CITYGW_MQTT_PASSWORD (a secret named by
            # password_env) must never turn into a `password` key.
            if key != rest and key in model.model_fields and key not in ("routes", "tls", "feed"):
                target = data.setdefault(section, {})
                if isinstance(target, dict):
                    target[key] = value
                    applied[(section, key)] = name
    return applied


def load_settings(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a config file (None: embedded defaults). Raises ConfigError with every problem."""
    env = os.environ if env is None else env
    if path is None:
        data: dict[str, Any] = {}
        text, name = "", "<defaults>"
    else:
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([ConfigProblem(name, 0, "", f"cannot read config file: {exc.strerror}")]) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"line (\d+)", str(exc))
            raise ConfigError(
                [ConfigProblem(name, int(m.group(1)) if m else 0, "", f"TOML syntax error: {exc}")]
            ) from None
    from_env = _apply_env_overrides(data, env)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        index = _line_index(text)
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(loc, index)
            key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "string_pattern_mismatch":
                msg = (f"{err['input']!r} is not a valid id: use letters, digits, '.', '_' or '-' "
                       "(no spaces), at most 64 characters")
            if err["type"] == "extra_forbidden":
                msg = _unknown_key_message(loc)
            elif err["type"] == "missing":
                msg = "required key is missing"
            elif err["type"] == "list_type" and isinstance(err["input"], dict) and len(loc) == 1:
                msg = (f"[{loc[0]}] is a single table, but {loc[0]} is a list of tables: write [[{loc[0]}]] "
                       "(double brackets), one block per entry")
            if loc[:2] in from_env:
                msg += f" (value from environment variable {from_env[loc[:2]]})"  # type: ignore[index]
            problems.append(ConfigProblem(name, line, key, msg))
        # The model's own check runs only once every field is valid; the raw check reports repeats at once.
        problems = [p for p in problems if "device ids must be unique" not in p.message]
        problems += _duplicate_ids(data, text, name)
        raise ConfigError(problems) from None


def _line_of(loc: tuple[Any, ...], index: Mapping[tuple[Any, ...], int]) -> int:
    """The line of the longest prefix of `loc` found in the index (a [[table]]'s first block stands in)."""
    for cut in range(len(loc), 0, -1):
        for key in (loc[:cut], (*loc[:cut], 0)):
            if key in index:
                return index[key]
    return 0


def _unknown_key_message(loc: tuple[Any, ...]) -> str:
    """'unknown key', with the closest known key of that table ("did you mean") or the list of tables."""
    import difflib

    model: Any = Settings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            model = None
            break
        annotation = field.annotation
        for arg in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
                break
        else:
            model = None
            break
    known = sorted(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []
    name = str(loc[-1])
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if len(loc) == 1:
        hint = f"did you mean [{close[0]}]?" if close else f"the tables are: {', '.join(known)}"
        return f"unknown table or key {name!r}: {hint}"
    if close:
        return f"unknown key {name!r}: did you mean {close[0]!r}?"
    return f"unknown key {name!r} (known keys: {', '.join(known)})" if known else f"unknown key {name!r}"


def _duplicate_ids(data: Mapping[str, Any], text: str, file: str) -> list[ConfigProblem]:
    """Repeated [[devices]] ids, each at the line of its repeat (found on the raw TOML, beside other errors)."""
    devices = data.get("devices")
    if not isinstance(devices, list):
        return []
    index = _line_index(text)
    first: dict[str, int] = {}
    problems = []
    for i, d in enumerate(devices):
        dev_id = d.get("id") if isinstance(d, dict) else None
        if not isinstance(dev_id, str):
            continue
        if dev_id in first:
            where = index.get(("devices", first[dev_id], "id"), 0)
            problems.append(ConfigProblem(
                file, index.get(("devices", i, "id"), 0), f"devices[{i}].id",
                f"device id {dev_id!r} is already used by devices[{first[dev_id]}]"
                f"{f' (line {where})' if where else ''}: device ids must be unique"))
        else:
            first[dev_id] = i
    return problems
