"""Shared tools of the fault-injection suite: gateway configs, the status page, a PUBACK-tracking publisher,
reading the journal file of a running gateway, and a small HTTP fault proxy in front of a real server."""

from __future__ import annotations

import http.server
import re
import sqlite3
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from tests.integration.helpers import GatewayProcess, wait_for
from tests.servers import free_port

__all__ = [
    "FaultProxy",
    "GatewayProcess",
    "Publisher",
    "StatusPage",
    "journal_entries",
    "journal_rows",
    "journal_snapshot",
    "metric",
    "wait_for",
]

S = 10**9


class StatusPage:
    """The gateway's status HTTP server on a port chosen by the test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.listen = f"127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        """GET a path; raise OSError when the gateway does not answer."""
        with urllib.request.urlopen(f"http://{self.listen}{path}", timeout=timeout) as resp:
            return bytes(resp.read())

    def status(self) -> dict[str, Any]:
        """/status.json, or {} while the gateway is not up."""
        try:
            data: dict[str, Any] = orjson.loads(self.get("/status.json"))
        except (OSError, urllib.error.URLError):
            return {}
        return data

    def healthz(self) -> tuple[int, Any]:
        """(HTTP status, body: "ok" or the JSON document) of /healthz; (0, None) while the gateway is not up."""
        try:
            with urllib.request.urlopen(f"http://{self.listen}/healthz", timeout=5) as resp:
                return int(resp.status), resp.read().decode().strip()
        except urllib.error.HTTPError as exc:
            return int(exc.code), orjson.loads(exc.read())
        except OSError:
            return 0, None

    def metrics(self) -> str:
        """/metrics as text, or "" while the gateway is not up."""
        try:
            return self.get("/metrics").decode()
        except (OSError, urllib.error.URLError):
            return ""


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` in a Prometheus text exposition."""
    total = 0.0
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{(.*?)\}})? (\S+)$")
    for line in text.splitlines():
        m = pattern.match(line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def journal_rows(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one query on a journal file (another process may be writing it: WAL allows a reader)."""
    db = sqlite3.connect(path, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def journal_entries(path: Path, kind: int | None = None) -> list[tuple[Any, ...]]:
    """Every entry of a journal file, packs unpacked: (seq, kind, ts, device_id, quantity, unit, value, tags,
    quality, extra) each (gateway/journal.py)."""
    from gateway.journal import PACK_COLUMNS, expand_rows

    rows = journal_rows(path, f"SELECT {PACK_COLUMNS} FROM entries ORDER BY seq")
    return [e for e in expand_rows(rows) if kind is None or e[1] == kind]


def journal_snapshot(path: Path, *queries: str) -> list[list[tuple[Any, ...]]]:
    """Run several queries in one read transaction, so they see one consistent state of a live journal."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN")
        out = [db.execute(q).fetchall() for q in queries]
        db.execute("COMMIT")
        return out
    finally:
        db.close()


class Publisher:
    """A device side MQTT client on its own session: QoS 1, reconnecting, remembering which publishes got a PUBACK.

    `acked` holds the keys of messages the broker acknowledged, i.e. the messages the system is responsible for.
    """

    def __init__(self, port: int, client_id: str, host: str = "127.0.0.1",
                 configure: Callable[[mqtt.Client], None] | None = None) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                  clean_session=False)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.max_inflight_messages_set(100)
        if configure is not None:
            configure(self.client)
        self._lock = threading.Lock()
        self._by_mid: dict[int, Any] = {}
        self._early: set[int] = set()  # PUBACKs that arrived before publish() registered their mid
        self.acked: list[Any] = []
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=5)
        self.client.loop_start()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            key = self._by_mid.pop(mid, None)
            if key is not None:
                self.acked.append(key)
            else:
                self._early.add(mid)

    def publish(self, key: Any, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 (paho queues it while disconnected and resends it after reconnecting)."""
        # paho is called without our lock held: its network thread holds paho's locks while it calls
        # _on_publish, which takes ours, so holding ours around client.publish could deadlock.
        info = self.client.publish(topic, payload, qos=1)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked.append(key)
            else:
                self._by_mid[info.mid] = key

    def pending(self) -> int:
        """Publishes not acknowledged yet."""
        with self._lock:
            return len(self._by_mid)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.loop_stop()
        self.client.disconnect()


class FaultProxy:
    """An HTTP reverse proxy in front of a real server that can answer with injected errors first.

    `script` is a list of (status, headers) answers given to the first requests, in order; later requests
    are forwarded to `target`. Every request is logged as (monotonic time, path, status answered). With
    `tls`=(cert, key) it serves HTTPS (a TLS terminator in front of a plain-HTTP server); with
    `authorization` it refuses (401) any request without exactly that Authorization header.
    """

    def __init__(self, target: str, script: list[tuple[int, dict[str, str]]] | None = None,
                 tls: tuple[Path, Path] | None = None, authorization: str | None = None) -> None:
        self.target = target.rstrip("/")
        self.authorization = authorization  # when set, any other Authorization header gets a 401
        self.script = list(script or [])
        self.log: list[tuple[float, str, int]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.connections = 0  # TCP connections accepted (HTTP/1.1 keeps one open for many requests)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                with proxy._lock:
                    proxy.connections += 1
                super().setup()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.headers_seen.append(dict(self.headers.items()))
                with proxy._lock:
                    injected = proxy.script.pop(0) if proxy.script else None
                if proxy.authorization is not None and self.headers.get("Authorization") != proxy.authorization:
                    injected = (401, {})
                if injected is not None:
                    status, headers = injected
                    payload = b'{"error":"injected by the test proxy"}'
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    proxy.log.append((time.monotonic(), self.path, status))
                    return
                fwd_headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                req = urllib.request.Request(proxy.target + self.path, data=body, method=self.command,
                                             headers=fwd_headers)
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status, data, rh = resp.status, resp.read(), dict(resp.headers.items())
                except urllib.error.HTTPError as exc:
                    status, data, rh = exc.code, exc.read(), dict(exc.headers.items())
                except OSError:
                    status, data, rh = 502, b"upstream unreachable", {}
                proxy.log.append((time.monotonic(), self.path, status))
                self.send_response(status)
                for k, v in rh.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                """Proxy or answer a GET."""
                self._handle()

            def do_POST(self) -> None:
                """Proxy or answer a POST."""
                self._handle()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def gateway_section(tmp: Path, gw_id: str, status: StatusPage) -> str:
    """The [gateway] table of a test gateway: its id, a data directory in `tmp`, the status page's address."""
    return f"""
[gateway]
id = "{gw_id}"
data_dir = "{tmp / 'data'}"
status_listen = "{status.listen}"
"""


def kit_config(tmp: Path, gw_id: str, status: StatusPage, *, mqtt_port: int | None = None,
               route_topic: str = "", influx_url: str = "", database: str = "", windows: str = '["10s"]',
               grace: str = "1s", extra: str = "") -> Path:
    """Write a gateway config: canonical-JSON MQTT route (device id = topic level 1), InfluxDB v1, windows."""
    text = gateway_section(tmp, gw_id, status) + f"""
[aggregation]
windows = {windows}
grace = "{grace}"
"""
    if mqtt_port is not None:
        text += f"""
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
reconnect_max = "1s"
"""
        if route_topic:
            text += f"""
[[mqtt.routes]]
topic = "{route_topic}"
format = "json"
device_id = "{{1}}"
"""
    if influx_url:
        text += f"""
[[influx]]
name = "influx"
api = "v1"
url = "{influx_url}"
database = "{database}"
flush_interval = "200ms"
timeout = "3s"
"""
    text += extra
    path = tmp / f"{gw_id}.toml"
    path.write_text(text)
    return path


def serial_config(tmp: Path, gw_id: str, status: StatusPage, port: str, device_id: str = "pm-1",
                  kind: str = "pms5003") -> Path:
    """A gateway with one serial device and the local store as its only sink."""
    path = tmp / f"{gw_id}.toml"
    path.write_text(gateway_section(tmp, gw_id, status) + f"""
[[devices]]
id = "{device_id}"
kind = "{kind}"
port = "{port}"
timeout = "500ms"

[aggregation]
windows = ["10s"]
grace = "1s"
""")
    return path


def stored_readings(tmp: Path, device_id: str, quantity: str) -> list[dict[str, Any]]:
    """Readings of one series the local store sink wrote, in file order."""
    out = []
    for f in sorted((tmp / "data" / "store").glob("readings-*.jsonl")):
        for line in f.read_bytes().splitlines():
            item = orjson.loads(line)
            if item["device_id"] == device_id and item["quantity"] == quantity:
                out.append(item)
    return out


def device_state(status: StatusPage, device_id: str) -> dict[str, Any]:
    """The status page's entry for one device ({} while the gateway is not up)."""
    for d in status.status().get("devices", []):
        if d["id"] == device_id:
            return dict(d)
    return {}
