"""`citygw check-config --connect` against real influxd 1.x, VictoriaMetrics, Mosquitto and a pty sensor."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.cli import main
from gateway.connect_check import connect_checks
from gateway.settings import load_settings
from simulators.pms5003 import Pms5003Simulator
from tests.servers import MQTT_PASSWORD, MQTT_USER, InfluxV1, Mosquitto, VictoriaMetrics, free_port

DEVICE = '[[devices]]\nid = "pm1"\nkind = "pms5003"\nport = "{port}"\n'


def _settings(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "kit.toml"
    path.write_text(f'[gateway]\nid = "t"\ndata_dir = "{tmp_path}/data"\nstatus_listen = ""\n\n' + text)
    return load_settings(path, env=env or {}), path


def _one(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[bool, str]:
    settings, _ = _settings(tmp_path, text, env)
    outcomes = connect_checks(settings, timeout_s=5.0)
    assert len(outcomes) == 1
    return outcomes[0].ok, str(outcomes[0])


def test_v1_database_present_is_ok(tmp_path: Path, influx_v1: InfluxV1) -> None:
    ok, line = _one(tmp_path, f'[[influx]]\napi = "v1"\nurl = "{influx_v1.url}"\ndatabase = "citygw"\n')
    assert ok, line
    assert line.startswith("OK   [[influx]] #1 v1") and "database 'citygw' writable" in line


def test_v1_missing_database_offers_create_database_which_run_honours(tmp_path: Path,
                                                                        influx_v1: InfluxV1) -> None:
    db = f"kit_{uuid.uuid4().hex[:8]}"
    block = f'[[influx]]\napi = "v1"\nurl = "{influx_v1.url}"\ndatabase = "{db}"\n'
    ok, line = _one(tmp_path, block)
    assert not ok
    assert f"database '{db}' does not exist — set create_database = true in this [[influx]] block" in line

    ok, line = _one(tmp_path, block + "create_database = true\n")
    assert ok and "`run` will create it (create_database = true)" in line
    assert db not in [r["name"] for r in influx_v1.query("SHOW DATABASES")]  # the check wrote nothing

    # `run` honours it: the first write finds the database missing, creates it, and the retry lands.
    settings, _ = _settings(tmp_path, block + "create_database = true\n")
    gateway = Gateway(settings)
    gateway.start()
    try:
        from devices.reading import Reading

        gateway.pipeline.readings([Reading("pm1", "pm2_5", 12.0, "ug/m3", time.time_ns())])
        deadline = time.monotonic() + 60
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline and not rows:
            if db in [r["name"] for r in influx_v1.query("SHOW DATABASES")]:
                rows = influx_v1.query("SELECT * FROM /.*/", db=db)
            time.sleep(0.3)
    finally:
        gateway.stop()
    assert rows and rows[0]["value"] == 12.0


def test_v2_api_against_influxd_1x_says_set_api_v1(tmp_path: Path, influx_v1: InfluxV1) -> None:
    ok, line = _one(tmp_path, f'[[influx]]\napi = "v2"\nurl = "{influx_v1.url}"\nbucket = "citygw"\n')
    assert not ok
    assert 'HTTP 404 on /api/v2/write (server version 1.6' in line
    assert 'this server speaks the v1 API: set api = "v1"' in line


def test_v2_api_against_victoria_metrics_is_ok(tmp_path: Path, victoria: VictoriaMetrics) -> None:
    ok, line = _one(tmp_path, f'[[influx]]\napi = "v2"\nurl = "{victoria.url}"\nbucket = "citygw"\n')
    assert ok, line


def test_wrong_influx_password_says_credentials(tmp_path: Path, server_factory,  # type: ignore[no-untyped-def]
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    server = server_factory(InfluxV1, auth=("admin", "right"))
    block = (f'[[influx]]\napi = "v1"\nurl = "{server.url}"\ndatabase = "citygw"\nusername = "admin"\n'
             'password_env = "KIT_PW"\n')
    monkeypatch.setenv("KIT_PW", "wrong")  # secrets come from the real environment, as in `run`
    ok, line = _one(tmp_path, block)
    assert not ok
    assert "HTTP 401" in line and "refused the credentials: check username and password_env/password_file" in line
    monkeypatch.setenv("KIT_PW", "right")
    ok, line = _one(tmp_path, block)
    assert ok, line


def test_unreachable_influx(tmp_path: Path) -> None:
    ok, line = _one(tmp_path, f'[[influx]]\napi = "v1"\nurl = "http://127.0.0.1:{free_port()}"\ndatabase = "d"\n')
    assert not ok and "cannot reach http://127.0.0.1:" in line and "check url" in line


def test_broker_ok_refused_and_down(tmp_path: Path, mosquitto: Mosquitto, mosquitto_tls: Mosquitto,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ok, line = _one(tmp_path, f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n\n[mqtt.feed]\nenabled = false\n')
    assert ok and "connected (anonymous)" in line, line

    assert mosquitto_tls.tls is not None
    tls = (f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto_tls.tls_port}\nusername = "{MQTT_USER}"\n'
           f'password_env = "KIT_MQTT_PW"\n\n[mqtt.tls]\nca_file = "{mosquitto_tls.tls.ca_cert}"\n')
    monkeypatch.setenv("KIT_MQTT_PW", "wrong")
    ok, line = _one(tmp_path, tls)
    assert not ok and "broker refused the connection" in line and "check mqtt.username" in line, line
    monkeypatch.setenv("KIT_MQTT_PW", MQTT_PASSWORD)
    ok, line = _one(tmp_path, tls)
    assert ok and f"connected as {MQTT_USER}" in line, line
    monkeypatch.delenv("KIT_MQTT_PW")
    ok, line = _one(tmp_path, tls)
    assert not ok and "KIT_MQTT_PW is not set" in line

    ok, line = _one(tmp_path, f'[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\n')
    assert not ok and "connection refused: no broker listens there" in line


def test_serial_device_frames_arrive_or_not(tmp_path: Path) -> None:
    with Pms5003Simulator(seed=3, period_s=0.2) as sim:
        ok, line = _one(tmp_path, DEVICE.format(port=sim.port))
        assert ok and line.startswith(f"OK   device pm1 (pms5003) on {sim.port}: pms5003 at 9600 baud:"), line
        assert "pm2_5=" in line
        ok, line = _one(tmp_path, DEVICE.format(port=sim.port).replace("pms5003", "sds011"))
        assert not ok and "no valid frame" in line and f"citygw probe {sim.port}" in line
    ok, line = _one(tmp_path, DEVICE.format(port=f"{tmp_path}/ttyNOPE"))
    assert not ok and "cannot open" in line and "is the device plugged in?" in line


def test_cli_connect_exit_code_and_lines(tmp_path: Path, influx_v1: InfluxV1,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with Pms5003Simulator(seed=4, period_s=0.2) as sim:
        _, path = _settings(tmp_path, DEVICE.format(port=sim.port)
                            + f'\n[[influx]]\napi = "v2"\nurl = "{influx_v1.url}"\nbucket = "citygw"\n')
        assert main(["check-config", str(path), "--connect", "--timeout", "3"]) == 1
    out = capsys.readouterr().out
    assert f"OK   device pm1 (pms5003) on {sim.port}" in out
    assert "FAIL [[influx]] #1 v2" in out and 'set api = "v1"' in out
    assert "1 of 2 target(s) OK" in out


def test_modbus_device_answers_or_not(tmp_path: Path) -> None:
    from simulators.modbus import ModbusSimulator, SimSlave

    with ModbusSimulator([SimSlave(3, "sdm120", seed=1)], baudrate=115200) as sim:
        block = (f'[[devices]]\nid = "meter"\nkind = "sdm120"\nport = "{sim.port}"\nbaudrate = 115200\n'
                 'address = {address}\ntimeout = "0.3s"\n')
        ok, line = _one(tmp_path, block.format(address=3))
        assert ok and line.startswith(f"OK   device meter (sdm120, Modbus address 3) on {sim.port}: answered"), line
        assert "voltage=" in line
        ok, line = _one(tmp_path, block.format(address=9))  # nobody at 9
        assert not ok and "check address, baudrate/parity/stopbits, A/B wiring" in line, line


def test_sensorthings_token_accepted_or_refused(tmp_path: Path, server_factory,  # type: ignore[no-untyped-def]
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.feeds.sensorthings_server import SensorThingsServer

    server = server_factory(SensorThingsServer, bearer_token="right-token")
    block = (DEVICE.format(port="/dev/null") + 'lat = 40.4\nlon = -3.7\n\n'
             f'[[sensorthings]]\nurl = "{server.url}"\ntoken_env = "KIT_STA_TOKEN"\n')
    settings_path = tmp_path / "sta"
    settings_path.mkdir()
    from gateway.connect_check import check_sensorthings

    monkeypatch.setenv("KIT_STA_TOKEN", "right-token")
    settings, _ = _settings(settings_path, block)
    outcome = check_sensorthings(settings.sensorthings[0], 0)
    assert outcome.ok and "credentials accepted" in outcome.message, outcome
    monkeypatch.setenv("KIT_STA_TOKEN", "wrong-token")
    outcome = check_sensorthings(settings.sensorthings[0], 0)
    assert not outcome.ok and "HTTP 401" in outcome.message and "check username and password_env" in outcome.message
    wrong_root = settings.sensorthings[0].model_copy(update={"url": server.url.rsplit("/", 1)[0] + "/v9"})
    outcome = check_sensorthings(wrong_root, 0)
    assert not outcome.ok and "HTTP 404" in outcome.message and "service root" in outcome.message, outcome


def test_ngsi_ld_broker_unreachable(tmp_path: Path) -> None:
    from gateway.connect_check import check_ngsi_ld

    settings, _ = _settings(tmp_path, f'[[ngsi_ld]]\nurl = "http://127.0.0.1:{free_port()}"\ntenant = "city"\n')
    outcome = check_ngsi_ld(settings.ngsi_ld[0], 0)
    assert not outcome.ok and "(tenant city)" in str(outcome) and "cannot reach" in outcome.message
