"""Shared pytest fixtures.

Real servers (see tests/servers.py): session-scoped `mosquitto`, `mosquitto_tls`, `influx_v1` and `victoria`
are started on first use and shared, so tests on them use their own topics, databases and measurement
names. Tests that kill, freeze or restart a server take the function-scoped `fresh_*` variants, or build a
custom one with `server_factory`. Tests that use any server fixture are marked `integration` automatically
(`pytest -m "not integration"` runs the rest).

Every test also fails if it leaves a thread of citygw's own running (named `citygw-…` or `modbus-bus …`,
daemon or not), or any other non-daemon thread (other libraries' daemon threads, such as paho's network loop
or pymodbus helpers, are tolerated); mark a test `allow_thread_leak` to opt out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.servers import MQTT_PASSWORD, MQTT_USER, InfluxV1, Mosquitto, Server, VictoriaMetrics
from tests.tls import TlsFiles, make_tls_files

# The headless Chromium fixture (`chrome`), for every page a person looks at: status page, report, fleet view.
pytest_plugins = ["tests.browser"]

SERVER_FIXTURES = frozenset(
    {
        "mosquitto",
        "mosquitto_tls",
        "influx_v1",
        "victoria",
        "fresh_mosquitto",
        "fresh_influx_v1",
        "fresh_victoria",
        "server_factory",
    }
)
THREAD_JOIN_GRACE_S = 2.0
OWN_THREAD_PREFIXES = ("citygw-", "modbus-bus ")  # the gateway's owning threads (gateway/supervisor.py)

S = TypeVar("S", bound=Server)


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers this conftest uses."""
    config.addinivalue_line("markers", "allow_thread_leak: do not fail the test for threads it leaves running")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real server as `integration`."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


# -- threads -----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_leaked_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves one of citygw's threads, or any non-daemon thread, running (after a short grace)."""
    before = set(threading.enumerate())
    yield
    if request.node.get_closest_marker("allow_thread_leak"):
        return
    deadline = time.monotonic() + THREAD_JOIN_GRACE_S
    leaked = []
    for thread in threading.enumerate():
        if thread in before or thread is threading.current_thread():
            continue
        if thread.daemon and not thread.name.startswith(OWN_THREAD_PREFIXES):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            leaked.append(thread.name)
    if leaked:
        pytest.fail(
            f"test left {len(leaked)} non-daemon thread(s) running: {', '.join(sorted(leaked))}",
            pytrace=False,
        )


# -- TLS material ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A local CA with a server certificate for 127.0.0.1/localhost and a client certificate."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


# -- shared servers (session scope: do not kill or restart these) ------------------------------------------


def _serve(server: S) -> Iterator[S]:
    """Start a server, hand it to the test(s), and stop it afterwards."""
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A shared anonymous Mosquitto broker on 127.0.0.1:`port`."""
    yield from _serve(Mosquitto(tmp_path_factory.mktemp("mosquitto")))


@pytest.fixture(scope="session")
def mosquitto_tls(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[Mosquitto]:
    """A shared Mosquitto: TLS on `tls_port` (CA in `tls`), user MQTT_USER / MQTT_PASSWORD, no anonymous."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto-tls"), tls=tls_files, users={MQTT_USER: MQTT_PASSWORD})
    yield from _serve(broker)


@pytest.fixture(scope="session")
def influx_v1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxV1]:
    """A shared InfluxDB 1.x with database `citygw` (create your own with `create_database`)."""
    yield from _serve(InfluxV1(tmp_path_factory.mktemp("influxd")))


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """A shared VictoriaMetrics single node (InfluxDB line protocol on /write and /api/v2/write)."""
    yield from _serve(VictoriaMetrics(tmp_path_factory.mktemp("victoria")))


# -- per-test servers (kill, freeze and restart them freely) -----------------------------------------------


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Return `make(ServerClass, **kwargs)`, which starts a server in tmp_path; all stop after the test."""
    servers: list[Server] = []

    def make(cls: type[S], **kwargs: Any) -> S:
        server = cls(tmp_path / f"{cls.name}-{len(servers)}", **kwargs)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in reversed(servers):
            server.close()


@pytest.fixture
def fresh_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto broker of this test's own (anonymous, plain listener)."""
    yield from _serve(Mosquitto(tmp_path / "mosquitto"))


@pytest.fixture
def fresh_influx_v1(tmp_path: Path) -> Iterator[InfluxV1]:
    """An InfluxDB 1.x of this test's own, database `citygw`."""
    yield from _serve(InfluxV1(tmp_path / "influxd"))


@pytest.fixture
def fresh_victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A VictoriaMetrics of this test's own."""
    yield from _serve(VictoriaMetrics(tmp_path / "victoria"))
