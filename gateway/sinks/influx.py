"""InfluxDB sinks: v1 HTTP `/write` (InfluxDB 1.x) and the v2 write API through influxdb-client.

Error classes follow Telegraf's outputs: 429 and 5xx retry (honouring Retry-After), 413 splits the batch,
400/422 split until the offending point is alone, then dead-letter only that point.
"""

from __future__ import annotations

import base64
import gzip
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import urllib3

from gateway.journal import Entry
from gateway.lineproto import entry_line, entry_lines
from gateway.sinks.base import Action, SinkError
from gateway.sinks.http_pool import http_pool

if TYPE_CHECKING:
    from gateway.settings import InfluxSection

__all__ = ["InfluxV1Sink", "InfluxV2Sink", "classify_status", "influx_sink_name"]


def influx_sink_name(cfg: InfluxSection) -> str:
    """A stable cursor name for an InfluxDB sink."""
    return cfg.name or f"influx-{cfg.api}:{cfg.url.rstrip('/')}/{cfg.database or cfg.bucket}"


def classify_status(status: int, body: str, retry_after: str | None) -> SinkError:
    """Map an HTTP failure to what the core should do."""
    snippet = body.strip().replace("\n", " ")[:300]
    if status in (400, 422):
        return SinkError(Action.SPLIT, f"HTTP {status}: {snippet}")
    if status == 413:
        return SinkError(Action.SPLIT, f"HTTP 413 request too large: {snippet}")
    if status in (401, 403):
        return SinkError(Action.RETRY, f"HTTP {status} unauthorized: check the token/credentials ({snippet})")
    delay = None
    if retry_after:
        try:
            delay = float(retry_after)
        except ValueError:
            delay = None
    return SinkError(Action.RETRY, f"HTTP {status}: {snippet}", delay)


class _HttpLineSink:
    """Shared by both APIs: POST line protocol (gzip'd unless told not to) to one URL, over a kept-alive connection.

    One connection for the sink's life: a new one per write cost a name lookup and a TCP connect each time
    (a sixth of the sink thread's time at 90,000 points/s), and over TLS a handshake per write.
    """

    name: str
    only_kind: int | None = None  # readings and KPI points both go to InfluxDB

    def __init__(self, name: str, write_url: str, headers: dict[str, str], gzip_body: bool, timeout_s: float,
                 ca_file: Path | None, verify_tls: bool, gateway_id: str = "") -> None:
        self.name = name
        self._gateway_id = gateway_id  # the `gateway` tag on every point: a fleet's kits share device ids
        self._url = write_url
        self._headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
        self._gzip = gzip_body
        self._timeout = urllib3.Timeout(total=timeout_s)
        self._http = http_pool(write_url, ca_file, verify_tls)

    def body(self, entry: Entry) -> str:
        """The entry as a line of line protocol."""
        return entry_line(entry, self._gateway_id)

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, str | None]:
        """POST on the kept-alive connection: (status, response text, Retry-After); SinkError when unreachable."""
        try:
            resp = self._http.request("POST", url, body=body, headers=headers, timeout=self._timeout)
        except urllib3.exceptions.HTTPError as exc:
            raise SinkError(Action.RETRY, f"cannot reach {url.split('?')[0]}: {exc}") from None
        return resp.status, resp.data.decode("utf-8", "replace"), resp.headers.get("Retry-After")

    def write(self, entries: Sequence[Entry]) -> None:
        """POST the batch; raise a classified SinkError on failure."""
        payload = "\n".join(entry_lines(entries, self._gateway_id)).encode()
        headers = self._headers
        if self._gzip:
            payload = gzip.compress(payload, compresslevel=1)
            headers = {**headers, "Content-Encoding": "gzip"}
        status, text, retry_after = self.post(self._url, payload, headers)
        if status >= 300:
            raise classify_status(status, text, retry_after)

    def close(self) -> None:
        """Close the kept-alive connection."""
        self._http.clear()


class InfluxV1Sink(_HttpLineSink):
    """InfluxDB 1.x `/write?db=…&precision=ns`, with basic auth when a user is configured."""

    def __init__(self, name: str, url: str, database: str, username: str = "", password: str = "",
                 gzip_body: bool = True, timeout_s: float = 10.0, ca_file: Path | None = None,
                 verify_tls: bool = True, create_database: bool = False, gateway_id: str = "") -> None:
        query = urllib.parse.urlencode({"db": database, "precision": "ns"})
        headers = {}
        if username:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        super().__init__(name, f"{url.rstrip('/')}/write?{query}", headers, gzip_body, timeout_s, ca_file,
                         verify_tls, gateway_id)
        self._database = database
        self._create_database = create_database
        self._query_url = f"{url.rstrip('/')}/query"

    def write(self, entries: Sequence[Entry]) -> None:
        """POST the batch; with create_database, create a missing database and let the core retry."""
        try:
            super().write(entries)
        except SinkError as exc:
            if not (self._create_database and exc.reason.startswith("HTTP 404") and "database not found" in exc.reason):
                raise
            self.create_database()
            raise SinkError(Action.RETRY, f"database {self._database!r} was missing: created it") from None

    def create_database(self) -> None:
        """CREATE DATABASE (idempotent in InfluxDB 1.x); raise SinkError(RETRY) when the server refuses."""
        q = 'CREATE DATABASE "' + self._database.replace("\\", "\\\\").replace('"', '\\"') + '"'
        body = urllib.parse.urlencode({"q": q}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if "Authorization" in self._headers:
            headers["Authorization"] = self._headers["Authorization"]
        status, text, _ = self.post(self._query_url, body, headers)
        if status >= 300:
            raise SinkError(Action.RETRY, f"cannot create database {self._database!r}: HTTP {status}: "
                                          f"{text.strip()[:200]} (the user needs admin rights, or create it by hand)")


class InfluxV2Sink:
    """The InfluxDB v2 write API through influxdb-client (InfluxDB 2.x, 3.x, Cloud, 1.8+, VictoriaMetrics)."""

    only_kind: int | None = None  # readings and KPI points both go to InfluxDB

    def __init__(self, name: str, url: str, org: str, bucket: str, token: str, gzip_body: bool = True,
                 timeout_s: float = 10.0, ca_file: Path | None = None, verify_tls: bool = True,
                 gateway_id: str = "") -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.name = name
        self._gateway_id = gateway_id
        self._bucket = bucket
        self._org = org
        # retries=False: retry, backoff and splitting live once, in the core's Delivery.
        self._client = InfluxDBClient(url=url, token=token or "none", org=org or "-", enable_gzip=gzip_body,
                                      timeout=int(timeout_s * 1000), verify_ssl=verify_tls,
                                      ssl_ca_cert=str(ca_file) if ca_file else None, retries=False)
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def body(self, entry: Entry) -> str:
        """The entry as a line of line protocol."""
        return entry_line(entry, self._gateway_id)

    def write(self, entries: Sequence[Entry]) -> None:
        """Write the batch; raise a classified SinkError on failure."""
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        lines = entry_lines(entries, self._gateway_id)
        try:
            self._api.write(bucket=self._bucket, org=self._org or "-", record=lines, write_precision=WritePrecision.NS)  # type: ignore[arg-type]
        except ApiException as exc:
            headers: dict[str, str] = dict(exc.headers or {})
            raise classify_status(int(exc.status or 0), str(exc.body or exc.reason or ""),
                                  headers.get("Retry-After")) from None
        except (HTTPError, OSError) as exc:
            raise SinkError(Action.RETRY, f"cannot reach InfluxDB: {exc}") from None

    def close(self) -> None:
        """Close the client."""
        self._api.close()
        self._client.close()
