"""`citygw check-config --connect`: reach every broker, sink and serial port of a config, as `run` would.

Each target gets one line: OK, or what is wrong and how to fix it. Nothing is written: InfluxDB gets an
empty write (which checks the credentials and the database or bucket), the broker a connect and a
disconnect, each serial port a few seconds of listening (and polling, for polled kinds).
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import serial

from devices.reading import Reading
from devices.registry import KINDS
from gateway.probe import listen
from gateway.settings import (
    ConfigError,
    DeviceConfig,
    InfluxSection,
    NgsiLdSection,
    SensorThingsSection,
    Settings,
    read_secret,
)
from ingest.mqtt_client import MqttOptions, build_client, connect_properties

__all__ = ["Outcome", "check_device", "check_influx", "check_mqtt", "check_ngsi_ld", "check_sensorthings",
           "connect_checks", "run_connect_checks"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One target's result: `ok`, and a line saying what was checked or what is wrong and how to fix it."""

    target: str
    ok: bool
    message: str

    def __str__(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.target}: {self.message}"


def _secret(env: str, file: Path | None, what: str) -> tuple[str, str]:
    """(secret, problem): the problem says which variable or file is missing."""
    try:
        return read_secret(env, file, what), ""
    except ConfigError as exc:
        return "", "; ".join(p.message for p in exc.problems)


# -- MQTT ---------------------------------------------------------------------------------------------------

_MQTT_FIXES = {
    "Not authorized": "the broker refused these credentials: check mqtt.username and the password secret",
    "Bad user name or password": "wrong user name or password: check mqtt.username and the password secret",
    "Client identifier not valid": "the broker refused the client id: set mqtt.client_id",
    "Server unavailable": "the broker is up but refuses connections for now: see its log",
}


def check_mqtt(settings: Settings, timeout_s: float = 5.0) -> Outcome:
    """Connect to the broker with the config's credentials and TLS settings, then disconnect."""
    m = settings.mqtt
    target = f"MQTT broker {m.host}:{m.port}{' (TLS)' if m.tls else ''}"
    password, problem = _secret(m.password_env, m.password_file, "mqtt.password")
    if problem:
        return Outcome(target, False, f"{problem} — set it before connecting")
    tls = m.tls
    # A clean session under a broker-assigned id: never touch the running gateway's persistent session.
    opts = MqttOptions(host=m.host, port=m.port, client_id="", username=m.username, password=password,
                       protocol=m.protocol, keepalive=max(5, m.keepalive), tls=tls is not None,
                       ca_file=tls.ca_file if tls else None, cert_file=tls.cert_file if tls else None,
                       key_file=tls.key_file if tls else None,
                       insecure_skip_verify=tls.insecure_skip_verify if tls else False)
    try:
        client = build_client(opts)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return Outcome(target, False, f"cannot set up TLS: {exc} — check mqtt.tls.ca_file/cert_file/key_file")
    done = threading.Event()
    result: list[str] = []

    def on_connect(client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        result.append(str(reason))
        done.set()

    client.on_connect = on_connect
    try:
        if opts.protocol == "5":
            client.connect(m.host, m.port, keepalive=opts.keepalive, clean_start=True,
                           properties=connect_properties(opts))
        else:
            client.connect(m.host, m.port, keepalive=opts.keepalive)
    except ssl.SSLCertVerificationError as exc:
        return Outcome(target, False, f"TLS certificate not trusted: {exc.verify_message} — set mqtt.tls.ca_file "
                                      "to the CA that signed the broker's certificate")
    except ssl.SSLError as exc:
        return Outcome(target, False, f"TLS handshake failed: {exc.reason} — is {m.port} a TLS port? (8883 is "
                                      "TLS, 1883 plain; omit [mqtt.tls] for plain TCP)")
    except ConnectionRefusedError:
        return Outcome(target, False, "connection refused: no broker listens there — check mqtt.host/port and "
                                      "that the broker runs (systemctl status mosquitto)")
    except OSError as exc:
        return Outcome(target, False, f"cannot reach it: {exc.strerror or exc} — check mqtt.host, DNS and the "
                                      "network")
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return Outcome(target, False, f"no CONNACK within {timeout_s:g} s — a TLS port spoken to in plain "
                                          "TCP, or a firewall in between?")
    finally:
        client.disconnect()
        client.loop_stop()
    reason = result[0]
    if reason == "Success":
        who = f" as {m.username}" if m.username else " (anonymous)"
        return Outcome(target, True, f"connected{who}, MQTT {m.protocol}")
    fix = _MQTT_FIXES.get(reason, "see the broker's log")
    return Outcome(target, False, f"broker refused the connection: {reason} — {fix}")


# -- InfluxDB -----------------------------------------------------------------------------------------------


def _post(url: str, headers: dict[str, str], timeout_s: float, ctx: ssl.SSLContext | None,
          body: bytes = b"") -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=ctx) as resp:
            return int(resp.status), resp.read().decode("utf-8", "replace"), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode("utf-8", "replace"), dict(exc.headers or {})


def _server_version(base: str, timeout_s: float, ctx: ssl.SSLContext | None) -> str:
    """The X-Influxdb-Version header of /ping ("" when absent or unreachable)."""
    try:
        with urllib.request.urlopen(f"{base}/ping", timeout=timeout_s, context=ctx) as resp:
            return str(resp.headers.get("X-Influxdb-Version", ""))
    except urllib.error.HTTPError as exc:
        return str(exc.headers.get("X-Influxdb-Version", "")) if exc.headers is not None else ""
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return ""


def _error_text(body: str) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip()[:200]
    if isinstance(parsed, dict):
        return str(parsed.get("error") or parsed.get("message") or body.strip())[:200]
    return body.strip()[:200]


def check_influx(cfg: InfluxSection, index: int, timeout_s: float = 5.0) -> Outcome:
    """An empty write to the configured API: checks reachability, credentials and the database/bucket."""
    base = cfg.url.rstrip("/")
    where = cfg.database if cfg.api == "v1" else cfg.bucket
    target = f"[[influx]] #{index + 1} {cfg.api} {base} ({'database' if cfg.api == 'v1' else 'bucket'} {where})"
    ctx = None
    if base.startswith("https"):
        ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        if not cfg.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if cfg.api == "v1":
        password, problem = _secret(cfg.password_env, cfg.password_file, "influx.password")
        if cfg.username:
            token = base64.b64encode(f"{cfg.username}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        url = f"{base}/write?{urllib.parse.urlencode({'db': cfg.database, 'precision': 'ns'})}"
    else:
        token, problem = _secret(cfg.token_env, cfg.token_file, "influx.token")
        if token:
            headers["Authorization"] = f"Token {token}"
        url = f"{base}/api/v2/write?{urllib.parse.urlencode({'org': cfg.org or '-', 'bucket': cfg.bucket})}"
    if problem:
        return Outcome(target, False, f"{problem} — set it before connecting")
    try:
        status, body, _ = _post(url, headers, timeout_s, ctx)
    except ssl.SSLCertVerificationError as exc:
        return Outcome(target, False, f"TLS certificate not trusted: {exc.verify_message} — set ca_file to the "
                                      "CA that signed the server's certificate")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Outcome(target, False, f"cannot reach {base}: {reason} — check url (host, port, http/https) and "
                                      "that the server runs")
    text = _error_text(body)
    if status in (200, 204):
        return Outcome(target, True, "reachable, credentials accepted, "
                       f"{'database' if cfg.api == 'v1' else 'bucket'} {where!r} writable")
    if status == 401:
        what = "username and password_env/password_file" if cfg.api == "v1" else "token_env/token_file (the token)"
        return Outcome(target, False, f"HTTP 401 {text} — the server refused the credentials: check {what}")
    if status == 403:
        return Outcome(target, False, f"HTTP 403 {text} — this user may not write to {where!r}: grant it WRITE "
                                      "(v1: GRANT WRITE ON ... TO ...; v2: a token with write access to the bucket)")
    if status == 404 and cfg.api == "v2":
        version = _server_version(base, timeout_s, ctx)
        if version.startswith("1.") or "page not found" in body:
            return Outcome(target, False, f"HTTP 404 on /api/v2/write (server version {version or 'unknown'}): "
                                          'this server speaks the v1 API: set api = "v1" and database = "…" '
                                          "(with username/password_env if it has auth)")
        return Outcome(target, False, f"HTTP 404 {text} — bucket {cfg.bucket!r} or org {cfg.org!r} not found: "
                                      "create the bucket or fix bucket/org")
    if status == 404 and "database not found" in body:
        if cfg.create_database:
            return Outcome(target, True, f"reachable, credentials accepted; database {where!r} does not exist "
                                         "yet and `run` will create it (create_database = true)")
        return Outcome(target, False, f"database {where!r} does not exist — set create_database = true in this "
                                      f"[[influx]] block (run then creates it), or create it: influx -execute "
                                      f"'CREATE DATABASE \"{where}\"'")
    return Outcome(target, False, f"HTTP {status} {text}")


def _get(url: str, headers: dict[str, str], timeout_s: float, ca_file: Path | None,
         verify_tls: bool) -> tuple[int, str]:
    ctx = None
    if url.startswith("https"):
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if not verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=ctx) as resp:
            return int(resp.status), resp.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(4096).decode("utf-8", "replace")


def _http_outcome(target: str, url: str, headers: dict[str, str], timeout_s: float, ca_file: Path | None,
                  verify_tls: bool, ok_text: str, credentials: str, not_found: str) -> Outcome:
    """GET `url`: OK on 2xx; otherwise what the status means for this kind of server."""
    try:
        status, body = _get(url, headers, timeout_s, ca_file, verify_tls)
    except ssl.SSLCertVerificationError as exc:
        return Outcome(target, False, f"TLS certificate not trusted: {exc.verify_message} — set ca_file to the CA "
                                      "that signed the server's certificate")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        return Outcome(target, False, f"cannot reach {url}: {getattr(exc, 'reason', exc)} — check url and that "
                                      "the server runs")
    if 200 <= status < 300:
        return Outcome(target, True, ok_text)
    text = _error_text(body)
    if status in (401, 403):
        return Outcome(target, False, f"HTTP {status} {text} — the server refused the credentials: check {credentials}")
    if status == 404:
        return Outcome(target, False, f"HTTP 404 on {url} — {not_found}")
    return Outcome(target, False, f"HTTP {status} {text}")


def check_sensorthings(cfg: SensorThingsSection, index: int, timeout_s: float = 5.0) -> Outcome:
    """Read one Thing with the sink's credentials: reachability, the service root and authentication."""
    base = cfg.url.rstrip("/")
    target = f"[[sensorthings]] #{index + 1} {base}"
    headers = {"Accept": "application/json"}
    token, problem = _secret(cfg.token_env, cfg.token_file, "sensorthings.token")
    password, problem2 = _secret(cfg.password_env, cfg.password_file, "sensorthings.password")
    if problem or problem2:
        return Outcome(target, False, f"{problem or problem2} — set it before connecting")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif cfg.username:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{cfg.username}:{password}".encode()).decode()
    return _http_outcome(target, f"{base}/Things?%24top=1", headers, timeout_s, cfg.ca_file, cfg.verify_tls,
                         "reachable, credentials accepted (read /Things)",
                         "username and password_env/password_file, or token_env/token_file",
                         "url must be the service root, ending in /v1.1 (e.g. …/FROST-Server/v1.1)")


def check_ngsi_ld(cfg: NgsiLdSection, index: int, timeout_s: float = 5.0) -> Outcome:
    """List the broker's entity types with the sink's tenant and token: reachability and authentication."""
    base = cfg.url.rstrip("/")
    target = f"[[ngsi_ld]] #{index + 1} {base}{f' (tenant {cfg.tenant})' if cfg.tenant else ''}"
    headers = {"Accept": "application/json"}
    token, problem = _secret(cfg.token_env, cfg.token_file, "ngsi_ld.token")
    if problem:
        return Outcome(target, False, f"{problem} — set it before connecting")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cfg.tenant:
        headers["NGSILD-Tenant"] = cfg.tenant
    return _http_outcome(target, f"{base}/ngsi-ld/v1/types", headers, timeout_s, cfg.ca_file, cfg.verify_tls,
                         "reachable, token accepted (listed entity types)", "token_env/token_file",
                         "url must be the broker's base URL (e.g. http://orion:1026), without /ngsi-ld/v1")


# -- serial ports -------------------------------------------------------------------------------------------


def check_device(device: DeviceConfig, seconds: float = 5.0) -> Outcome:
    """Open the device's port with its line settings and say whether frames of its kind arrive."""
    kind = KINDS[device.kind]
    target = f"device {device.id} ({device.kind}) on {device.port}"
    if kind.link == "modbus":
        return check_modbus_device(device, seconds)
    if kind.framer is None:
        return Outcome(target, False, f"{device.kind} has no serial framing: configure it under [[mqtt.routes]]")
    options = {"address": device.address, **device.options} if "address" in device.model_fields_set \
        else device.options
    try:
        heard = listen(device.port, kind, device.baudrate, device.parity, device.stopbits, options,
                       seconds=max(seconds, device.poll_interval + 1 if kind.poll_request else seconds),
                       device_id=device.id)
    except (serial.SerialException, OSError) as exc:
        text = str(exc)
        if "Permission denied" in text or "Errno 13" in text:
            fix = "this user may not open it: add it to the dialout group (sudo usermod -aG dialout USER)"
        elif "No such file" in text or "Errno 2" in text:
            fix = "no such port: is the device plugged in? `ls -l /dev/serial/by-id/` lists USB adapters"
        else:
            fix = "check the port name and that no other program (a serial console, ModemManager) holds it"
        return Outcome(target, False, f"cannot open {device.port}: {exc} — {fix}")
    if heard.speaks:
        return Outcome(target, True, heard.describe())
    return Outcome(target, False, heard.describe() + f" — try `citygw probe {device.port}`")


class _Collected:
    """An Emitter that keeps what a transport produced (nothing is journaled by a check)."""

    def __init__(self) -> None:
        self.collected: list[Reading] = []
        self.rejections: list[str] = []
        self.unavailable: list[str] = []
        self.got = threading.Event()

    def readings(self, readings: list[Reading], ack: Callable[[], None] | None = None) -> None:
        """Keep the readings; acknowledge at once."""
        self.collected.extend(readings)
        self.got.set()
        if ack is not None:
            ack()

    def rejected(self, device_id: str, reason: str, data: bytes | None = None) -> None:
        """Keep the reason."""
        self.rejections.append(reason)

    def device_state(self, device_id: str, available: bool, reason: str = "") -> None:
        """Keep why the device is unavailable."""
        if not available:
            self.unavailable.append(reason)
            self.got.set()


def check_modbus_device(device: DeviceConfig, seconds: float = 5.0) -> Outcome:
    """Poll the Modbus device once through the gateway's own bus owner; say whether it answered."""
    from ingest.modbus_bus import ModbusBus, ModbusDevice

    target = f"device {device.id} ({device.kind}, Modbus address {device.address}) on {device.port}"
    collected = _Collected()
    try:
        bus = ModbusBus(device.port, [ModbusDevice(device.id, device.kind, device.address, max(seconds, 1.0),
                                                   device.options, device.tags, timeout=device.timeout)],
                        collected, baudrate=device.baudrate, parity=device.parity, stopbits=device.stopbits,
                        timeout=device.timeout, retries=0)
    except (ValueError, OSError) as exc:
        return Outcome(target, False, f"cannot set up the bus: {exc}")
    bus.start()
    try:
        collected.got.wait(seconds + device.timeout * 3)
    finally:
        bus.stop(timeout=device.timeout * 3 + 2)
    if collected.collected:
        latest = {r.quantity: r for r in collected.collected}
        sample = ", ".join(f"{q}={r.value:g} {r.unit}" for q, r in list(latest.items())[:8])
        return Outcome(target, True, f"answered at {device.baudrate} baud — {sample}")
    if collected.rejections:
        return Outcome(target, False, f"answered, but: {collected.rejections[0]} — check kind and options")
    reason = collected.unavailable[0] if collected.unavailable else f"no answer within {seconds:g} s"
    return Outcome(target, False, f"{reason} — check address, baudrate/parity/stopbits, A/B wiring and the "
                                  "120 Ω termination of the RS-485 line")


def connect_checks(settings: Settings, timeout_s: float = 5.0) -> list[Outcome]:
    """Check every broker, sink and serial device of the config."""
    outcomes: list[Outcome] = []
    if settings.mqtt.host:
        outcomes.append(check_mqtt(settings, timeout_s))
    for i, cfg in enumerate(settings.influx):
        outcomes.append(check_influx(cfg, i, timeout_s))
    for i, sta in enumerate(settings.sensorthings):
        outcomes.append(check_sensorthings(sta, i, timeout_s))
    for i, ngsi in enumerate(settings.ngsi_ld):
        outcomes.append(check_ngsi_ld(ngsi, i, timeout_s))
    for device in settings.devices:
        outcomes.append(check_device(device, timeout_s))
    return outcomes


def run_connect_checks(settings: Settings, timeout_s: float = 5.0) -> int:
    """Print one line per target; 0 when every one is OK."""
    outcomes = connect_checks(settings, timeout_s)
    for outcome in outcomes:
        print(outcome, flush=True)
    failed = sum(not o.ok for o in outcomes)
    print(f"{len(outcomes) - failed} of {len(outcomes)} target(s) OK" if outcomes else "nothing to connect to")
    return 1 if failed else 0
