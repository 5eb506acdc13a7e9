"""The real-server fixtures work: Mosquitto (plain, TLS, passwords, persistence), InfluxDB 1.x, VM."""

from __future__ import annotations

import os
import queue
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.servers import (
    HOST,
    MQTT_PASSWORD,
    MQTT_USER,
    InfluxV1,
    Mosquitto,
    ServerError,
    VictoriaMetrics,
    free_port,
)
from tests.tls import TlsFiles, available_backends, make_tls_files

TIMEOUT_S = 10.0
REPO_ROOT = Path(__file__).resolve().parent.parent


def unique(prefix: str) -> str:
    """Return a name no other test uses on a shared server."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class Probe:
    """A paho-mqtt 2 client with its network loop in paho's daemon thread and queues for what arrives."""

    def __init__(self, client_id: str = "", *, clean_session: bool = True) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,  # a refused or cut-off probe must not retry behind the test's back
        )
        self.connacks: queue.Queue[tuple[ReasonCode, bool]] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)

    def _on_connect(self, _c: Any, _u: Any, flags: mqtt.ConnectFlags, reason: ReasonCode, _p: Any) -> None:
        self.connacks.put((reason, flags.session_present))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        self.subacks.put(reasons)

    def connect(self, port: int) -> tuple[ReasonCode, bool]:
        """Connect, run the loop thread, and return (CONNACK reason, session present)."""
        self.client.connect(HOST, port, keepalive=10)
        self.client.loop_start()
        return self.connacks.get(timeout=TIMEOUT_S)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe and wait for the SUBACK granting `qos`."""
        self.client.subscribe(topic, qos=qos)
        granted = self.subacks.get(timeout=TIMEOUT_S)
        assert [r.value for r in granted] == [qos]

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait until the broker acknowledged it (PUBACK for QoS 1)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=TIMEOUT_S)
        assert info.is_published()

    def next_message(self) -> mqtt.MQTTMessage:
        """Return the next message received (fail after TIMEOUT_S)."""
        return self.messages.get(timeout=TIMEOUT_S)

    def close(self) -> None:
        """Disconnect and stop the loop thread."""
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def probes() -> Any:
    """Make Probes that are all closed after the test."""
    made: list[Probe] = []

    def make(client_id: str = "", *, clean_session: bool = True) -> Probe:
        probe = Probe(client_id, clean_session=clean_session)
        made.append(probe)
        return probe

    yield make
    for probe in made:
        probe.close()


# -- Mosquitto ---------------------------------------------------------------------------------------------


def test_mosquitto_qos1_round_trip(mosquitto: Mosquitto, probes: Any) -> None:
    topic = unique("rt") + "/data"
    subscriber = probes()
    assert subscriber.connect(mosquitto.port)[0] == 0
    subscriber.subscribe(topic, qos=1)
    publisher = probes()
    assert publisher.connect(mosquitto.port)[0] == 0
    payloads = [f"reading-{i}".encode() for i in range(5)] + [bytes(range(256))]
    for payload in payloads:
        publisher.publish(topic, payload, qos=1)
    received = [subscriber.next_message() for _ in payloads]
    assert [m.payload for m in received] == payloads
    assert {(m.topic, m.qos) for m in received} == {(topic, 1)}


def test_mosquitto_tls_with_password(mosquitto_tls: Mosquitto, probes: Any) -> None:
    assert mosquitto_tls.tls is not None and mosquitto_tls.tls_port is not None
    good = probes()
    good.client.tls_set(ca_certs=str(mosquitto_tls.tls.ca_cert))
    good.client.username_pw_set(MQTT_USER, MQTT_PASSWORD)
    reason, _ = good.connect(mosquitto_tls.tls_port)
    assert reason == 0, reason
    # A working TLS session carries messages too.
    topic = unique("tls") + "/x"
    good.subscribe(topic)
    good.publish(topic, b"over tls")
    assert good.next_message().payload == b"over tls"

    wrong = probes()
    wrong.client.tls_set(ca_certs=str(mosquitto_tls.tls.ca_cert))
    wrong.client.username_pw_set(MQTT_USER, MQTT_PASSWORD + "x")
    reason, _ = wrong.connect(mosquitto_tls.tls_port)
    # MQTT 3.1.1 CONNACK 4 (bad user name or password) or 5 (not authorised), as paho's v5 codes.
    assert reason.is_failure and reason.value in {134, 135}, reason

    anonymous = probes()
    reason, _ = anonymous.connect(mosquitto_tls.port)  # the plain listener refuses anonymous clients too
    assert reason.is_failure and reason.value in {134, 135}, reason


def test_mosquitto_tls_refuses_unknown_ca(mosquitto_tls: Mosquitto, tmp_path: Path) -> None:
    assert mosquitto_tls.tls_port is not None
    other_ca = make_tls_files(tmp_path / "other")
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.tls_set(ca_certs=str(other_ca.ca_cert))
    client.username_pw_set(MQTT_USER, MQTT_PASSWORD)
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect(HOST, mosquitto_tls.tls_port, keepalive=10)


def test_mosquitto_require_certificate(server_factory: Any, tls_files: TlsFiles, probes: Any) -> None:
    broker: Mosquitto = server_factory(Mosquitto, tls=tls_files, require_certificate=True)
    assert broker.tls_port is not None
    with_cert = probes()
    with_cert.client.tls_set(
        ca_certs=str(tls_files.ca_cert),
        certfile=str(tls_files.client_cert),
        keyfile=str(tls_files.client_key),
    )
    assert with_cert.connect(broker.tls_port)[0] == 0

    without_cert = mqtt.Client(CallbackAPIVersion.VERSION2)
    without_cert.tls_set(ca_certs=str(tls_files.ca_cert))
    # TLS 1.3 reports the missing certificate after the handshake: the first read fails or sees EOF.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        without_cert.connect(HOST, broker.tls_port, keepalive=10)
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if without_cert.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError("broker closed the connection")
            if without_cert.is_connected():
                break
    assert not without_cert.is_connected()
    without_cert.disconnect()


def test_mosquitto_kill_restart_keeps_retained(fresh_mosquitto: Mosquitto, probes: Any) -> None:
    port = fresh_mosquitto.port
    publisher = probes()
    assert publisher.connect(port)[0] == 0
    publisher.publish("kpi/air/aqi", b'{"aqi": 42}', qos=1, retain=True)
    publisher.close()
    fresh_mosquitto.save()
    pid = fresh_mosquitto.pid
    assert fresh_mosquitto.kill() == -9
    fresh_mosquitto.start()
    assert fresh_mosquitto.port == port and fresh_mosquitto.pid != pid
    subscriber = probes()
    assert subscriber.connect(port)[0] == 0
    subscriber.subscribe("kpi/#")
    message = subscriber.next_message()
    assert (message.topic, message.payload, message.retain) == ("kpi/air/aqi", b'{"aqi": 42}', True)


def test_mosquitto_restart_keeps_session_and_queued_qos1(fresh_mosquitto: Mosquitto, probes: Any) -> None:
    gateway = probes("gateway-1", clean_session=False)
    assert gateway.connect(fresh_mosquitto.port) == (0, False)
    gateway.subscribe("tele/+/SENSOR", qos=1)
    gateway.close()  # the gateway goes away; the broker queues for its persistent session

    sensor = probes()
    assert sensor.connect(fresh_mosquitto.port)[0] == 0
    payloads = [f'{{"n": {i}}}'.encode() for i in range(20)]
    for payload in payloads:
        sensor.publish("tele/kit-7/SENSOR", payload, qos=1)
    sensor.close()

    fresh_mosquitto.restart()  # graceful: Mosquitto writes its database on shutdown

    gateway_again = probes("gateway-1", clean_session=False)
    assert gateway_again.connect(fresh_mosquitto.port) == (0, True)  # session present after the restart
    received = [gateway_again.next_message() for _ in payloads]
    assert [m.payload for m in received] == payloads
    assert {(m.topic, m.qos) for m in received} == {("tele/kit-7/SENSOR", 1)}


def test_mosquitto_freeze_and_thaw(fresh_mosquitto: Mosquitto) -> None:
    assert fresh_mosquitto.ping()
    fresh_mosquitto.freeze()
    try:
        assert not fresh_mosquitto.ping(timeout=0.5)  # the port accepts, but no CONNACK comes
    finally:
        fresh_mosquitto.thaw()
    assert fresh_mosquitto.ping()


def test_port_taken_before_first_start_moves_but_restart_keeps_it(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "busy")
    taken = broker.port
    with socket.socket() as squatter:
        squatter.bind((HOST, taken))
        squatter.listen()
        try:
            broker.start()  # first start: picks another free port and retries
            assert broker.running and broker.port != taken and broker.ping()
            broker.stop()
            broker.port = taken  # a restart must come back on its own port, or fail loudly
            with pytest.raises(ServerError, match=r"(?i)address already in use"):
                broker.start()
        finally:
            broker.close()


def test_free_ports_lie_below_the_outgoing_range_and_skip_taken_ones() -> None:
    # Outgoing connections take local ports from ip_local_port_range; a server's port must never be one of
    # them, or a client may hold it while the server is down for a fault and the restart cannot bind.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first = free_port()
    with socket.socket() as squatter:
        squatter.bind((HOST, first + 1))  # the next port in line is taken: free_port must pass over it
        ports = [free_port() for _ in range(50)]
    assert all(port < low for port in [first, *ports])
    assert first + 1 not in ports
    assert len(set(ports)) == len(ports) and first not in ports


def test_bad_config_reports_log_tail(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "bad", extra_config="no_such_option 1")
    with pytest.raises(ServerError, match=r"(?s)exited with code \d+ during startup.*no_such_option"):
        broker.start()
    assert not broker.running


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), (None, pytest.skip.Exception)])
def test_missing_binary_fails_under_ci_and_skips_elsewhere(
    ci: str | None, outcome: type[BaseException], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Ghost(Mosquitto):
        binary = "/nonexistent/ghost-broker"
        package = "ghost-broker-pkg"

    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"apt-get install -y ghost-broker-pkg"):
        Ghost(tmp_path).start()


# -- InfluxDB 1.x ------------------------------------------------------------------------------------------

# Timestamps with all nine nanosecond digits set, values that JSON or float formatting could mangle.
INFLUX_LINES = [
    r"air,site=plaza\ mayor,kit=k1 pm2_5=0.1,count=9007199254740993i 1700000000123456789",
    r"air,site=plaza\ mayor,kit=k1 pm2_5=-2.5e-07,count=-1i 1700000000123456790",
    r"air,site=plaza\ mayor,kit=k1 pm2_5=123456.789,count=0i 1700000060000000001",
]
INFLUX_ROWS = [
    {
        "time": 1700000000123456789,
        "count": 9007199254740993,
        "kit": "k1",
        "pm2_5": 0.1,
        "site": "plaza mayor",
    },
    {"time": 1700000000123456790, "count": -1, "kit": "k1", "pm2_5": -2.5e-07, "site": "plaza mayor"},
    {"time": 1700000060000000001, "count": 0, "kit": "k1", "pm2_5": 123456.789, "site": "plaza mayor"},
]


def test_influx_v1_write_then_query_exact(influx_v1: InfluxV1) -> None:
    db = unique("t")
    influx_v1.create_database(db)
    try:
        influx_v1.write(INFLUX_LINES, db=db)
        assert influx_v1.query("SELECT * FROM air", db=db) == INFLUX_ROWS
        grouped = influx_v1.query("SELECT count(pm2_5) FROM air GROUP BY site", db=db)
        assert grouped == [{"site": "plaza mayor", "time": 0, "count": 3}]
        # Same series and timestamp overwrite: the property that makes at-least-once writes idempotent.
        influx_v1.write(INFLUX_LINES[0], db=db)
        assert len(influx_v1.query("SELECT * FROM air", db=db)) == 3
    finally:
        influx_v1.drop_database(db)


def test_influx_v1_keeps_acknowledged_writes_across_kill(fresh_influx_v1: InfluxV1) -> None:
    fresh_influx_v1.write(INFLUX_LINES)
    port = fresh_influx_v1.port
    fresh_influx_v1.restart(kill=True)  # the WAL holds every acknowledged write
    assert fresh_influx_v1.port == port
    assert fresh_influx_v1.query("SELECT * FROM air") == INFLUX_ROWS


def test_influx_v1_reports_bad_line_protocol(influx_v1: InfluxV1) -> None:
    with pytest.raises(ServerError, match="HTTP 400"):
        influx_v1.write("air pm2_5= 1700000000000000000")


def test_influx_v1_with_auth(server_factory: Any) -> None:
    server: InfluxV1 = server_factory(InfluxV1, auth=("admin", "pa'ss"))
    server.write("door open=1i 1700000000000000000")
    assert server.query("SELECT open FROM door") == [{"time": 1700000000000000000, "open": 1}]
    server.auth = ("admin", "wrong")
    with pytest.raises(ServerError, match="HTTP 401"):
        server.query("SELECT open FROM door")


# -- VictoriaMetrics ---------------------------------------------------------------------------------------


def _write_v2(server: VictoriaMetrics, points: list[Point]) -> None:
    """Write through influxdb-client's v2 API, as the gateway's InfluxDB v2 sink does."""
    with InfluxDBClient(url=server.url, token="x", org="x") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket="x", org="x", record=points, write_precision=WritePrecision.NS
        )


def test_victoria_accepts_v2_write_and_exports_it(victoria: VictoriaMetrics) -> None:
    measurement = unique("air")
    ts_ns = [1_700_000_000_123_456_789, 1_700_000_060_000_000_000]
    points = [
        Point(measurement).tag("site", "plaza").field("pm2_5", value).time(ts, WritePrecision.NS)
        for ts, value in zip(ts_ns, [12.5, 0.1], strict=True)
    ]
    _write_v2(victoria, points)
    exported = victoria.export(f'{{__name__=~"{measurement}_.*"}}')
    assert len(exported) == 1
    series = exported[0]
    assert (series.name, series.labels) == (f"{measurement}_pm2_5", {"site": "plaza"})
    assert series.points() == [(1_700_000_000_123, 12.5), (1_700_000_060_000, 0.1)]  # ns -> ms, truncated


def test_victoria_keeps_duplicates_unless_dedup(fresh_victoria: VictoriaMetrics, server_factory: Any) -> None:
    point = Point("noise").tag("kit", "n1").field("laeq", 61.5).time(1_700_000_000_000_000_000, WritePrecision.NS)
    deduplicating: VictoriaMetrics = server_factory(VictoriaMetrics, dedup=True)
    for server in (fresh_victoria, deduplicating):
        _write_v2(server, [point])
        _write_v2(server, [point])
    assert [s.points() for s in fresh_victoria.export()] == [[(1_700_000_000_000, 61.5)] * 2]
    assert [s.points() for s in deduplicating.export()] == [[(1_700_000_000_000, 61.5)]]


def test_victoria_keeps_flushed_data_across_restart(fresh_victoria: VictoriaMetrics) -> None:
    _write_v2(fresh_victoria, [Point("water").field("ph", 7.25).time(1_600_000_000_000_000_000, WritePrecision.NS)])
    before = fresh_victoria.export()
    fresh_victoria.restart()
    assert fresh_victoria.export() == before
    assert [(s.name, s.points()) for s in before] == [("water_ph", [(1_600_000_000_000, 7.25)])]


# -- local CA ----------------------------------------------------------------------------------------------


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> ssl.SSLObject:
    """Run a TLS handshake between two in-memory endpoints; return the server side."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server checks the client certificate once it reads the client's Finished.
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return server
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize("backend", available_backends())
def test_local_ca_certificates_verify(backend: str, tmp_path: Path) -> None:
    files = make_tls_files(tmp_path, backend)  # type: ignore[arg-type]
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.server_cert, files.server_key)
    server_ctx.load_verify_locations(files.ca_cert)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    client_ctx.load_cert_chain(files.client_cert, files.client_key)
    for hostname in ("127.0.0.1", "localhost"):
        server = _handshake(server_ctx, client_ctx, hostname)
        peer = server.getpeercert()
        assert peer is not None and peer["subject"] == ((("commonName", "citygw-test-client"),),)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(server_ctx, client_ctx, "example.org")


def test_some_certificate_backend_exists() -> None:
    assert available_backends(), "install openssl (apt-get install -y openssl) to run the TLS tests"


# -- the thread-leak guard ---------------------------------------------------------------------------------


def test_leaked_threads_fail_the_test(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import _no_leaked_threads, pytest_configure  # noqa: F401\n", encoding="utf-8"
    )
    (tmp_path / "test_leaks.py").write_text(
        textwrap.dedent(
            """
            import threading

            def test_leaks():
                threading.Thread(target=threading.Event().wait, args=(2.6,), name="leaky").start()

            def test_daemon_is_tolerated():
                threading.Thread(target=threading.Event().wait, args=(30,), daemon=True).start()

            def test_short_thread_is_joined():
                threading.Thread(target=threading.Event().wait, args=(0.2,)).start()
            """
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_leaks.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "left 1 non-daemon thread(s) running: leaky" in proc.stdout
    assert "3 passed, 1 error" in proc.stdout
