"""Real servers for integration tests: Mosquitto, InfluxDB 1.x and VictoriaMetrics as subprocesses.

Each server runs from the Debian package's binary, on free 127.0.0.1 ports, with all of its state in one
directory (`workdir`). `start()` returns once the server answers (or raises `ServerError` with the tail of
its log), `stop()` shuts it down gracefully, `kill()` sends SIGKILL (fault injection), `freeze()`/`thaw()`
stop and continue it (a hung server), and `restart()` brings it back on the same ports with the same data.
Servers are context managers; `close()` also removes a working directory the server created itself.

A missing binary fails the test under CI (`CI=true`) and skips it elsewhere; either way the message says
which `apt-get install` fixes it (or run `bash scripts/dev.sh test`, which installs everything).
"""

from __future__ import annotations

import abc
import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self

import pytest

from tests.tls import TlsFiles

__all__ = [
    "HOST",
    "MQTT_PASSWORD",
    "MQTT_USER",
    "InfluxError",
    "InfluxV1",
    "Mosquitto",
    "Series",
    "Server",
    "ServerError",
    "VictoriaMetrics",
    "free_port",
    "in_ci",
    "require_binary",
]

HOST = "127.0.0.1"
# Credentials of the `mosquitto_tls` fixture's broker (password file made with mosquitto_passwd).
MQTT_USER = "citygw"
MQTT_PASSWORD = "s3cret-pässword"
APT_HINT = "apt-get update && apt-get install -y {package}  (or run: bash scripts/dev.sh test)"


class ServerError(RuntimeError):
    """A test server failed to start, stop or answer."""


def in_ci() -> bool:
    """Tell whether we run under CI, where a missing server must fail rather than skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def require_binary(path: str, package: str) -> str:
    """Return the executable for `path`, or fail (CI) / skip (elsewhere) with the apt-get command."""
    if os.access(path, os.X_OK):
        return path
    found = shutil.which(Path(path).name)
    if found:
        return found
    message = f"{path} is not installed; fix with: {APT_HINT.format(package=package)}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# Ports for test servers come from below Linux's ephemeral range (32768-60999 by default), one slice per
# pytest-xdist worker. A port the kernel picks (bind to 0) lies inside that range, so any client's outgoing
# connection may take it as its local port while a server is stopped for a fault, and the restart, which must
# come back on the same port, then fails with "address already in use" (it did, in CI, for influxd's RPC port).
# Below the range no outgoing connection takes a port, and separate slices keep the workers apart.
_PORT_LOW = 12000


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux's default when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORT_HIGH = max(_PORT_LOW + 1000, min(32000, _ephemeral_low()))


def _port_slice() -> range:
    """This process's slice of the test port range: one per pytest-xdist worker, the whole range otherwise."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1), 1)
    index = int(worker) % count if worker.isdigit() else 0
    size = (_PORT_HIGH - _PORT_LOW) // count
    start = _PORT_LOW + index * size
    return range(start, start + size)


_port_lock = threading.Lock()
_port_slice_of_process = _port_slice()
# Start at a place that differs between runs, so a run does not meet the last run's ports in TIME_WAIT.
_next_port = _port_slice_of_process.start + os.getpid() % len(_port_slice_of_process)


def free_port(host: str = HOST) -> int:
    """Return a TCP port that is free on `host` now and outside the kernel's range for outgoing connections."""
    global _next_port
    ports = _port_slice_of_process
    with _port_lock:
        for _ in range(len(ports)):
            port = _next_port
            _next_port = ports.start + (port + 1 - ports.start) % len(ports)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue  # taken, or still in TIME_WAIT: try the next one
                return port
    raise ServerError(f"no free port in {ports.start}-{ports.stop - 1} on {host}")


def _http(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """Do one HTTP request; return (status, body) for any status instead of raising on 4xx/5xx."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


# Every server still running when the interpreter exits is stopped, so a test that forgot to close one, or
# a run that crashed, leaves no orphan processes. Strong references: a dropped server must still be stopped.
_LIVE: set[Server] = set()


@atexit.register
def _stop_all() -> None:
    """Stop every server that is still running at interpreter exit."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(timeout=5)


class Server(abc.ABC):
    """Common life cycle of a server subprocess; subclasses supply the command line and readiness check."""

    name: ClassVar[str] = "server"
    binary: ClassVar[str] = ""
    package: ClassVar[str] = ""

    def __init__(self, workdir: str | Path | None = None, *, startup_timeout: float = 30.0) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"citygw-{self.name}-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = free_port()
        self.log_path = self.workdir / f"{self.name}.log"
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()
        self._started_once = False

    # -- to be provided by subclasses ---------------------------------------------------------------------

    @abc.abstractmethod
    def _command(self, executable: str) -> list[str]:
        """Return the command line that runs the server in the foreground."""

    def _prepare(self) -> None:  # noqa: B027 — an optional hook, empty by default
        """Write config files and create directories (called before every start)."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """Tell whether the server answers requests yet."""

    def _after_start(self) -> None:  # noqa: B027 — an optional hook, empty by default
        """Run once the server is ready (create databases and the like)."""

    def _reassign_ports(self) -> None:
        """Pick new free ports (only before the first successful start: restarts keep their ports)."""
        self.port = free_port()

    # -- life cycle ------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the server process exists and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when stopped."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> Self:
        """Start the server and wait until it answers; raise ServerError with the log tail if it does not."""
        with self._lock:
            if self.running:
                return self
            executable = require_binary(self.binary, self.package)
            # Another process may grab a port between free_port() and the server's bind(): retry with new
            # ports, but only on the first start, since a restart must come back where clients expect it.
            attempts = 1 if self._started_once else 3
            for attempt in range(attempts):
                try:
                    self._spawn(executable)
                    break
                except ServerError as error:
                    in_use = "address already in use" in str(error).lower()
                    if not in_use or attempt == attempts - 1:
                        raise
                    self._reassign_ports()
            self._started_once = True
        self._after_start()
        return self

    def _spawn(self, executable: str) -> None:
        """Run the process once and wait for readiness."""
        self._prepare()
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"\n--- citygw test harness: starting {self.name} on port {self.port}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self._command(executable),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # keep the terminal's Ctrl-C for pytest; we stop servers ourselves
        )
        _LIVE.add(self)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._terminate(signal.SIGKILL, timeout=1)  # already gone: this only tidies up
                raise ServerError(
                    f"{self.name} exited with code {code} during startup; log {self.log_path}:\n{self.log_tail()}"
                )
            if self._ready():
                return
            if time.monotonic() > deadline:
                self._terminate(signal.SIGKILL, timeout=5)
                raise ServerError(
                    f"{self.name} did not answer within {self.startup_timeout:.0f} s on port {self.port}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _terminate(self, sig: signal.Signals, timeout: float) -> int | None:
        """Send `sig`, wait up to `timeout`, then SIGKILL; return the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._proc = None
        _LIVE.discard(self)
        self._close_log()
        return proc.returncode

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop gracefully (SIGTERM; SIGKILL after `timeout` s) and return the exit code."""
        with self._lock:
            return self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """Kill with SIGKILL (a crash: no shutdown work is done) and return the exit code."""
        with self._lock:
            return self._terminate(signal.SIGKILL, timeout=10)

    def freeze(self) -> None:
        """Suspend the process (SIGSTOP): the port stays open but nothing answers."""
        if self._proc is None or not self.running:
            raise ServerError(f"{self.name} is not running")
        self._proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Resume a frozen process (SIGCONT)."""
        if self._proc is None or not self.running:
            raise ServerError(f"{self.name} is not running")
        self._proc.send_signal(signal.SIGCONT)

    def restart(self, *, kill: bool = False) -> Self:
        """Stop (or kill) and start again on the same ports with the same data."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its working directory if this object created it."""
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_log(self) -> None:
        """Close our handle on the log file (the child keeps its own)."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        """Return the last `lines` lines of the server's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} {self.workdir}>"


# -- Mosquitto ---------------------------------------------------------------------------------------------

# MQTT 3.1.1 CONNECT, clean session, keep-alive 10 s, empty client id (the broker assigns one).
_MQTT_CONNECT = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 10, 0, 0])
_MQTT_DISCONNECT = bytes([0xE0, 0])


class Mosquitto(Server):
    """Eclipse Mosquitto 2.0 with persistence, a plain listener and optionally TLS and passwords.

    `port` is the plain listener, `tls_port` the TLS one (None without `tls`). With `users`, anonymous
    clients are refused on every listener. The broker keeps persistent sessions, queued QoS 1/2 messages and
    retained messages across `stop()`/`start()`; across `kill()` it keeps what its last save wrote: it saves
    every `autosave_interval` seconds (or after that many changes with `autosave_on_changes`), and `save()`
    forces a save and waits for it.
    """

    name = "mosquitto"
    binary = "/usr/sbin/mosquitto"
    package = "mosquitto"

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
        users: Mapping[str, str] | None = None,
        autosave_interval: int = 1,
        autosave_on_changes: bool = False,
        max_queued_messages: int = 1_000_000,
        verbose: bool = False,
        extra_config: str = "",
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(workdir, startup_timeout=startup_timeout)
        self.tls = tls
        self.require_certificate = require_certificate
        self.users: dict[str, str] = dict(users or {})
        self.autosave_interval = autosave_interval
        self.autosave_on_changes = autosave_on_changes
        self.max_queued_messages = max_queued_messages
        self.verbose = verbose
        self.extra_config = extra_config
        self.tls_port: int | None = free_port() if tls is not None else None
        self.config_path = self.workdir / "mosquitto.conf"
        self.password_path = self.workdir / "passwords"
        self.db_path = self.workdir / "mosquitto.db"

    def _reassign_ports(self) -> None:
        self.port = free_port()
        if self.tls is not None:
            self.tls_port = free_port()

    def _prepare(self) -> None:
        lines = [
            # Mosquitto started as root switches to the `mosquitto` user, which cannot read our temp dir.
            *(["user root"] if os.geteuid() == 0 else []),
            "per_listener_settings false",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {self.autosave_interval}",
            f"autosave_on_changes {'true' if self.autosave_on_changes else 'false'}",
            "max_inflight_messages 0",  # 0 = no limit: tests measure the client, not the broker's window
            f"max_queued_messages {self.max_queued_messages}",
            "log_dest stderr",
            *[f"log_type {t}" for t in ("error", "warning", "notice", "information", "subscribe")],
            *(["log_type debug"] if self.verbose else []),
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
        ]
        if self.users:
            self._write_passwords()
            lines += ["allow_anonymous false", f"password_file {self.password_path}"]
        else:
            lines.append("allow_anonymous true")
        lines.append(f"listener {self.port} {self.host}")
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _write_passwords(self) -> None:
        """Create the password file with `mosquitto_passwd -b` (it stores salted hashes)."""
        tool = require_binary("/usr/bin/mosquitto_passwd", "mosquitto")
        self.password_path.unlink(missing_ok=True)
        for index, (user, password) in enumerate(self.users.items()):
            create = ["-c"] if index == 0 else []
            proc = subprocess.run(
                [tool, *create, "-b", str(self.password_path), user, password],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise ServerError(f"mosquitto_passwd failed for user {user!r}: {proc.stderr.strip()}")
        self.password_path.chmod(0o600)

    def _command(self, executable: str) -> list[str]:
        return [executable, "-c", str(self.config_path)]

    def _ready(self) -> bool:
        # Mosquitto opens every listener before it serves the first client, so the plain one answering
        # means the TLS one is open too (probing it with a bare TCP connect would only log a TLS error).
        return self.ping()

    def ping(self, timeout: float = 2.0) -> bool:
        """Send a raw MQTT CONNECT and wait for any CONNACK (a refusal counts: the broker answered)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(_MQTT_CONNECT)
                reply = b""
                while len(reply) < 4:
                    chunk = sock.recv(4 - len(reply))
                    if not chunk:
                        return False
                    reply += chunk
                with contextlib.suppress(OSError):
                    sock.sendall(_MQTT_DISCONNECT)
                return reply[0] == 0x20
        except OSError:
            return False

    def save(self, timeout: float = 10.0) -> None:
        """Make the broker write its persistence file now (SIGUSR1) and return once it is written."""
        if self._proc is None or not self.running:
            raise ServerError("mosquitto is not running")
        marker = "Saving in-memory database"
        before = self.log_path.read_text(encoding="utf-8", errors="replace").count(marker)
        self._proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while self.log_path.read_text(encoding="utf-8", errors="replace").count(marker) <= before:
            if time.monotonic() > deadline:
                raise ServerError(f"mosquitto did not save within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.02)
        # The broker logs before it writes and is single-threaded: once it answers a CONNECT sent after
        # the signal, the save has finished.
        if not self.ping(timeout=timeout):
            raise ServerError(f"mosquitto stopped answering after a save:\n{self.log_tail()}")


# -- InfluxDB 1.x ------------------------------------------------------------------------------------------


class InfluxError(ServerError):
    """InfluxDB answered a write or query with an error."""


class InfluxV1(Server):
    """InfluxDB 1.x (`influxd` from Debian's `influxdb` package, 1.6) with its HTTP API on `port`.

    `database` is created at start (and again after restarts: CREATE DATABASE is idempotent). With `auth`
    (user, password) authentication is on and that user is created as admin. Note that 1.6 has only the v1
    API (/write, /query); the /api/v2/write compatibility endpoint arrived in 1.8.
    """

    name = "influxd"
    binary = "/usr/bin/influxd"
    package = "influxdb"

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        database: str = "citygw",
        auth: tuple[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(workdir, startup_timeout=startup_timeout)
        self.database = database
        self.auth = auth
        self.rpc_port = free_port()
        self.config_path = self.workdir / "influxdb.conf"

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://{self.host}:{self.port}"

    def _reassign_ports(self) -> None:
        self.port = free_port()
        self.rpc_port = free_port()

    def _prepare(self) -> None:
        config = f"""\
reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{self.workdir}/meta"
  logging-enabled = false

[data]
  dir = "{self.workdir}/data"
  wal-dir = "{self.workdir}/wal"
  query-log-enabled = false
  index-version = "inmem"

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = {"true" if self.auth else "false"}
  log-enabled = false
  flux-enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false

[logging]
  level = "info"
"""
        self.config_path.write_text(config, encoding="utf-8")

    def _command(self, executable: str) -> list[str]:
        return [executable, "run", "-config", str(self.config_path)]

    def _ready(self) -> bool:
        try:
            status, _ = _http("GET", f"{self.url}/ping", timeout=1.0)
        except OSError:
            return False
        return status == 204

    def _after_start(self) -> None:
        if self.auth is not None:
            # InfluxDB 1.x lets anyone create the first admin user while no user exists.
            user, password = self.auth
            escaped = password.replace("\\", "\\\\").replace("'", "\\'")
            self._query_raw(f"CREATE USER \"{user}\" WITH PASSWORD '{escaped}' WITH ALL PRIVILEGES", None)
        self.create_database(self.database)

    def _headers(self) -> dict[str, str]:
        """Return the Authorization header (HTTP Basic) when authentication is on."""
        if self.auth is None:
            return {}
        token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def _query_raw(self, sql: str, db: str | None) -> dict[str, Any]:
        """POST one InfluxQL request and return the decoded JSON; raise InfluxError on any error."""
        params = {"q": sql, "epoch": "ns"}
        if db is not None:
            params["db"] = db
        body = urllib.parse.urlencode(params).encode()
        status, payload = _http(
            "POST",
            f"{self.url}/query",
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **self._headers()},
        )
        if status != 200:
            raise InfluxError(f"query {sql!r} failed with HTTP {status}: {payload.decode(errors='replace')}")
        result: dict[str, Any] = json.loads(payload)
        for statement in result.get("results", []):
            if "error" in statement:
                raise InfluxError(f"query {sql!r} failed: {statement['error']}")
        return result

    def query_series(self, sql: str, db: str | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL and return the raw series objects (name, tags, columns, values) of all statements."""
        result = self._query_raw(sql, db or self.database)
        return [series for statement in result.get("results", []) for series in statement.get("series", [])]

    def query(self, sql: str, db: str | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL and return one dict per row: the columns (time in ns) plus GROUP BY tags."""
        rows = []
        for series in self.query_series(sql, db):
            tags = series.get("tags") or {}
            for values in series.get("values", []):
                rows.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return rows

    def write(self, lines: str | Iterable[str], db: str | None = None, precision: str = "ns") -> None:
        """Write line protocol (one string or an iterable of lines); raise InfluxError unless HTTP 204."""
        text = lines if isinstance(lines, str) else "\n".join(lines)
        params = urllib.parse.urlencode({"db": db or self.database, "precision": precision})
        status, payload = _http("POST", f"{self.url}/write?{params}", body=text.encode(), headers=self._headers())
        if status != 204:
            raise InfluxError(f"write failed with HTTP {status}: {payload.decode(errors='replace')}")

    def create_database(self, name: str) -> None:
        """Create a database (no error if it exists)."""
        self._query_raw(f'CREATE DATABASE "{name}"', None)

    def drop_database(self, name: str) -> None:
        """Drop a database and all its data."""
        self._query_raw(f'DROP DATABASE "{name}"', None)


# -- VictoriaMetrics ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Series:
    """One exported VictoriaMetrics series: samples sorted by time, timestamps in milliseconds."""

    name: str
    labels: dict[str, str]
    values: list[float] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)

    def points(self) -> list[tuple[int, float]]:
        """Return (timestamp_ms, value) pairs."""
        return list(zip(self.timestamps, self.values, strict=True))


class VictoriaMetrics(Server):
    """Single-node VictoriaMetrics with its HTTP API on `port`.

    It accepts InfluxDB line protocol on /write and /api/v2/write (so influxdb-client works against `url`
    with any token, org and bucket) and stores `<measurement>_<field>` series with the tags as labels and
    millisecond timestamps; /write?db=NAME adds a `db` label. Samples older than the retention (here 100
    years) or more than two days ahead of the clock are dropped. Without `dedup`, a point written twice is
    exported twice, which lets tests count duplicate deliveries; with `dedup` (-dedup.minScrapeInterval=1ms)
    one sample per series and millisecond remains, like InfluxDB's overwrite.
    """

    name = "victoria-metrics"
    binary = "/usr/bin/victoria-metrics"
    package = "victoria-metrics"

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        dedup: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(workdir, startup_timeout=startup_timeout)
        self.dedup = dedup
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        """Base URL of the HTTP API (also the InfluxDB-compatible write endpoint)."""
        return f"http://{self.host}:{self.port}"

    def _command(self, executable: str) -> list[str]:
        args = [
            executable,
            f"-storageDataPath={self.workdir}/data",
            f"-httpListenAddr={self.host}:{self.port}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",  # return just-written samples instead of hiding the last 30 s
            "-search.disableCache",  # never answer from a cache filled before the latest write
            "-memory.allowedBytes=256MB",
            "-http.maxGracefulShutdownDuration=1s",  # stop() should not wait for idle keep-alive clients
            "-loggerOutput=stderr",
        ]
        if self.dedup:
            args.append("-dedup.minScrapeInterval=1ms")
        return [*args, *self.extra_args]

    def _ready(self) -> bool:
        try:
            status, body = _http("GET", f"{self.url}/health", timeout=1.0)
        except OSError:
            return False
        return status == 200 and body.strip() == b"OK"

    def flush(self) -> None:
        """Make every accepted sample visible to queries and exports (/internal/force_flush)."""
        status, payload = _http("GET", f"{self.url}/internal/force_flush")
        if status != 200:
            raise ServerError(f"force_flush failed with HTTP {status}: {payload.decode(errors='replace')}")

    def export(self, match: str = '{__name__!=""}', *, flush: bool = True) -> list[Series]:
        """Return every series matching `match` (merged: VM may export one series in several blocks)."""
        if flush:
            self.flush()
        query = urllib.parse.urlencode({"match[]": match})
        status, payload = _http("GET", f"{self.url}/api/v1/export?{query}", timeout=30.0)
        if status != 200:
            raise ServerError(f"export failed with HTTP {status}: {payload.decode(errors='replace')}")
        merged: dict[tuple[str, tuple[tuple[str, str], ...]], Series] = {}
        for line in payload.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            labels = dict(item["metric"])
            name = labels.pop("__name__", "")
            key = (name, tuple(sorted(labels.items())))
            series = merged.setdefault(key, Series(name=name, labels=labels))
            series.values.extend(float(v) for v in item["values"])
            series.timestamps.extend(int(t) for t in item["timestamps"])
        out = []
        for key in sorted(merged):
            series = merged[key]
            order = sorted(range(len(series.timestamps)), key=series.timestamps.__getitem__)
            series.timestamps = [series.timestamps[i] for i in order]
            series.values = [series.values[i] for i in order]
            out.append(series)
        return out

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """Evaluate an instant PromQL/MetricsQL query; return (labels with __name__, value) pairs."""
        params = {"query": promql, **({"time": repr(at)} if at is not None else {})}
        status, payload = _http("GET", f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        if status != 200:
            raise ServerError(f"query {promql!r} failed with HTTP {status}: {payload.decode(errors='replace')}")
        data = json.loads(payload)["data"]
        return [(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]
