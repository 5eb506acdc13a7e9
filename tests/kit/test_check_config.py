"""`citygw check-config` (and `run`) tell a technician what is wrong, where, and how to fix it (issue 11, item 7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.settings import ConfigError, Settings, load_settings
from tests.servers import in_ci

REPO = Path(__file__).resolve().parents[2]
DEVICE = '[[devices]]\nid = "pm1"\nkind = "pms5003"\nport = "/dev/ttyUSB0"\n'


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "kit.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    return [str(p) for p in info.value.problems]


def _check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str]:
    path = tmp_path / "kit.toml"
    path.write_text(text)
    code = main(["check-config", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_unknown_top_level_table_has_its_line_and_the_known_tables(tmp_path: Path) -> None:
    problems = _problems(tmp_path, '[gateway]\nid = "x"\n\n[[sinks]]\nurl = "http://x"\n')
    f = tmp_path / "kit.toml"
    tables = ", ".join(sorted(Settings.model_fields))  # other sections may be added: every one is listed
    assert "devices, gateway, " in tables
    assert problems == [f"{f}:4: sinks: unknown table or key 'sinks': the tables are: {tables}"]


def test_misspelt_table_and_key_get_did_you_mean(tmp_path: Path) -> None:
    text = DEVICE + 'adress = 3\n\n[locaions]\n'
    problems = _problems(tmp_path, text)
    f = tmp_path / "kit.toml"
    assert f"{f}:5: devices[0].adress: unknown key 'adress': did you mean 'address'?" in problems
    assert f"{f}:7: locaions: unknown table or key 'locaions': did you mean [locations]?" in problems


def test_single_bracket_influx_says_to_use_double_brackets(tmp_path: Path) -> None:
    problems = _problems(tmp_path, '[influx]\napi = "v1"\nurl = "http://x:8086"\ndatabase = "d"\n')
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'kit.toml'}:1: influx: [influx] is a single table")
    assert "write [[influx]] (double brackets)" in problems[0]
    assert "valid list" not in problems[0]


def test_duplicate_device_id_is_reported_with_the_other_errors(tmp_path: Path) -> None:
    text = DEVICE + 'baudrate = "fast"\n\n' + DEVICE
    problems = _problems(tmp_path, text)
    f = tmp_path / "kit.toml"
    assert any(p.startswith(f"{f}:5: devices[0].baudrate:") for p in problems)
    assert (f"{f}:8: devices[1].id: device id 'pm1' is already used by devices[0] (line 2): device ids must "
            "be unique") in problems
    assert len(problems) == 2


def test_duplicate_device_id_alone_has_a_line(tmp_path: Path) -> None:
    problems = _problems(tmp_path, DEVICE + "\n" + DEVICE)
    assert problems == [f"{tmp_path / 'kit.toml'}:7: devices[1].id: device id 'pm1' is already used by "
                        "devices[0] (line 2): device ids must be unique"]


def test_unset_secret_variable_is_reported_by_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("KIT_INFLUX_PW", raising=False)
    text = (DEVICE + '\n[[influx]]\napi = "v1"\nurl = "http://127.0.0.1:1"\ndatabase = "d"\n'
            'username = "u"\npassword_env = "KIT_INFLUX_PW"\n')
    code, out = _check(tmp_path, text, capsys)
    assert code == 0  # the service may have it in its EnvironmentFile: a warning here…
    assert (f"warning: {tmp_path / 'kit.toml'}:11: influx[0].password_env: environment variable KIT_INFLUX_PW "
            "is not set here") in out
    # …and `run` refuses with the same words instead of failing later.
    assert main(["run", "--config", str(tmp_path / "kit.toml"), "--duration", "0.1"]) == 1
    assert "influx[0].password_env: environment variable KIT_INFLUX_PW is not set" in caplog.text  # logged
    monkeypatch.setenv("KIT_INFLUX_PW", "pw")
    code, out = _check(tmp_path, text, capsys)
    assert code == 0 and "KIT_INFLUX_PW" not in out


def test_missing_secret_and_ca_files_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    text = (DEVICE + '\n[[influx]]\napi = "v1"\nurl = "https://127.0.0.1:1"\ndatabase = "d"\n'
            f'username = "u"\npassword_file = "{tmp_path}/nope"\nca_file = "{tmp_path}/ca.pem"\n')
    code, out = _check(tmp_path, text, capsys)
    assert code == 0  # check-config may run on another machine than the kit: warnings…
    f = tmp_path / "kit.toml"
    assert (f"warning: {f}:11: influx[0].password_file: {tmp_path}/nope does not exist: create it (mode 0600"
            in out)
    assert f"warning: {f}:12: influx[0].ca_file: {tmp_path}/ca.pem does not exist: check the path" in out
    # …and `run` refuses to start with the same lines.
    assert main(["run", "--config", str(f), "--duration", "0.1"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.name == "citygw.config" and r.levelname == "ERROR"]
    assert f"{f}:11: influx[0].password_file: {tmp_path}/nope does not exist: create it (mode 0600, owned by the " \
           "user the gateway runs as)" in errors
    assert len(errors) == 2  # the password file and the CA file: both stop `run`


def test_unknown_citygw_override_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYGW_MQTT_HOTS", "broker.local")
    monkeypatch.setenv("CITYGW_GATEWAY_ID", "kit-7")  # a real override: not reported
    code, out = _check(tmp_path, DEVICE, capsys)
    assert code == 0
    assert "warning:" in out and ("environment variable CITYGW_MQTT_HOTS overrides nothing: did you mean "
                                  "CITYGW_MQTT_HOST?") in out
    assert "CITYGW_GATEWAY_ID" not in out


def test_no_input_is_warned_and_no_sink_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check(tmp_path, '[gateway]\nid = "x"\n', capsys)
    assert code == 0 and "no input: no [[devices]], [[mqtt.routes]] or [[nats.routes]]" in out
    code, out = _check(tmp_path, DEVICE + "\n[local_store]\nenabled = false\n", capsys)
    assert code == 1
    assert f"{tmp_path / 'kit.toml'}:7: local_store.enabled: no sink:" in out
    # A city-platform feed alone is a sink.
    code, out = _check(tmp_path, DEVICE + '\n[local_store]\nenabled = false\n\n[[ngsi_ld]]\nurl = "http://b:1026"\n',
                       capsys)
    assert code == 0 and "no sink" not in out


def test_data_dir_that_is_a_file_is_a_config_error_not_a_traceback(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    text = f'[gateway]\nid = "x"\ndata_dir = "{tmp_path}/afile/sub"\n\n' + DEVICE
    code, out = _check(tmp_path, text, capsys)
    assert code == 1
    assert (f"{tmp_path / 'kit.toml'}:3: gateway.data_dir: {tmp_path}/afile is a file, not a directory "
            f"({tmp_path}/afile/sub cannot be created under it)") in out
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config", str(tmp_path / "kit.toml"),
                           "--duration", "1"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"kit.toml:3: gateway.data_dir: {tmp_path}/afile is a file" in proc.stderr


def test_unwritable_data_dir_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    immutable = False
    if os.geteuid() == 0:  # root writes through any mode: make the directory immutable instead
        immutable = subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode == 0
        if not immutable:
            message = "running as root where chattr +i is not permitted: no directory root cannot write"
            if in_ci():
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
    try:
        code, out = _check(tmp_path, f'[gateway]\ndata_dir = "{locked}"\n\n' + DEVICE, capsys)
        assert code == 1 and f"kit.toml:2: gateway.data_dir: directory {locked} is not writable by this user" in out
        proc = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config", str(tmp_path / "kit.toml"),
                               "--duration", "1"], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "gateway.data_dir: directory" in proc.stderr and "is not writable" in proc.stderr
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(locked)], check=True)


def test_devices_into_head_has_no_broken_pipe() -> None:
    proc = subprocess.run(f"{sys.executable} -m gateway.cli devices | head -1; exit ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0
    assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stdout.splitlines()) == 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"citygw {version('citygw')}"


def test_a_secret_variable_named_citygw_is_not_an_unknown_override(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYGW_INFLUX_PW", "pw")
    text = (DEVICE + '\n[[influx]]\napi = "v1"\nurl = "http://127.0.0.1:1"\ndatabase = "d"\n'
            'username = "u"\npassword_env = "CITYGW_INFLUX_PW"\n')
    code, out = _check(tmp_path, text, capsys)
    assert code == 0 and "CITYGW_INFLUX_PW" not in out
