"""Config errors name file, line and key; `citygw check-config`, `decode` and `devices` behave as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from devices import pms5003
from gateway.app import Gateway
from gateway.cli import main
from gateway.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]

BROKEN = """\
[gateway]
id = "kit 1"
timezone = "Mars/Olympus"

[[devices]]
id = "pm1"
kind = "pms5003"
port = "/dev/ttyUSB0"

[[devices]]
id = "pm2"
kind = "no_such_sensor"
port = "/dev/ttyUSB1"
baudrate = "fast"

[mqtt]
host = "broker"

[[mqtt.routes]]
topic = "a/+"
format = "json"
qso = 1

[[influx]]
api = "v2"
url = "http://influx:8086"
token = "plain-text-secret"
"""


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "kit.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    return [str(p) for p in info.value.problems]


def test_every_problem_with_file_line_and_key(tmp_path: Path) -> None:
    problems = _problems(tmp_path, BROKEN)
    f = tmp_path / "kit.toml"
    assert f"{f}:2: gateway.id: 'kit 1' is not a valid id" in problems[0]
    assert any(p.startswith(f"{f}:3: gateway.timezone: unknown time zone 'Mars/Olympus'") for p in problems)
    assert any(p.startswith(f"{f}:12: devices[1].kind: unknown device kind 'no_such_sensor'") for p in problems)
    assert any(p.startswith(f"{f}:14: devices[1].baudrate:") for p in problems)
    assert any(p.startswith(f"{f}:22: mqtt.routes[0].qso: unknown key") for p in problems)
    assert any(p.startswith(f"{f}:24: influx[0]:") and "token_env" in p and "plain-text-secret" not in p
               for p in problems)
    assert len(problems) == 6


def test_toml_syntax_error_has_a_line(tmp_path: Path) -> None:
    problems = _problems(tmp_path, '[gateway]\nid = "x"\ntimezone = \n')
    assert problems[0].startswith(f"{tmp_path / 'kit.toml'}:3: TOML syntax error")


def test_feed_prefix_must_not_have_wildcards(tmp_path: Path) -> None:
    problems = _problems(tmp_path, '[mqtt]\nhost = "b"\n[mqtt.feed]\ntopic_prefix = "city/#"\n')
    assert any("must be a plain topic" in p for p in problems)


def test_env_override_and_its_origin(tmp_path: Path) -> None:
    path = tmp_path / "kit.toml"
    path.write_text('[mqtt]\nhost = "a"\npassword_env = "CITYGW_MQTT_PASSWORD"\n')
    settings = load_settings(path, env={"CITYGW_MQTT_HOST": "b", "CITYGW_MQTT_PASSWORD": "pw"})
    assert settings.mqtt.host == "b"  # a secret variable is never mistaken for a `password` key
    with pytest.raises(ConfigError, match="from environment variable CITYGW_MQTT_PORT"):
        load_settings(path, env={"CITYGW_MQTT_PORT": "nope"})


def test_example_config_is_valid() -> None:
    settings = load_settings(REPO / "config" / "example.toml", env={})
    assert settings.gateway.id == "plaza-mayor-01"
    assert settings.feed_prefix == "citygw/plaza-mayor-01"


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "kit.toml"
    path.write_text(BROKEN)
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:12: devices[1].kind" in err and "6 problem(s)" in err
    assert main(["check-config", str(REPO / "config" / "example.toml")]) == 0


@pytest.mark.parametrize(("written", "size"), [
    ('"512MB"', 512 * 10**6), ('"512 MB"', 512 * 10**6), ('" 2GB "', 2 * 10**9), ('"64MiB"', 64 * 2**20),
    ('"64mib"', 64 * 2**20), ('"1.5GiB"', 3 * 2**29), ('"1.5GB"', 15 * 10**8), ('"0.5KB"', 500), ('"3kb"', 3000),
    ('"4 KiB"', 4096), ('"98304B"', 98304), ('"100"', 100), ("4194304", 4194304), ("0", 0),
])
def test_sizes_are_read_in_every_spelling_the_config_accepts(tmp_path: Path, written: str, size: int) -> None:
    path = tmp_path / "kit.toml"
    path.write_text(f"[journal]\nmax_size = {written}\n")
    assert load_settings(path, env={}).journal.max_size == size


@pytest.mark.parametrize(("written", "shown"), [
    ('"1,5GB"', "'1,5GB'"), ('"5 MB/s"', "'5 MB/s'"), ('"-5MB"', "'-5MB'"), ('"MB"', "'MB'"), ('""', "''"),
    ('"10 parsecs"', "'10 parsecs'"), ("-1", "-1"),
])
def test_a_bad_size_names_its_file_line_and_key(tmp_path: Path, written: str, shown: str) -> None:
    problems = _problems(tmp_path, f'[gateway]\nid = "kit"\n\n[journal]\nmax_size = {written}\n')
    where = f"{tmp_path / 'kit.toml'}:5: journal.max_size"
    assert problems == [f"{where}: invalid size {shown}: use e.g. 500MB, 2GB, 64MiB"]


@pytest.mark.parametrize(("url", "written", "compressed"), [
    ("http://127.0.0.1:8086", None, False), ("http://localhost:8086", None, False), ("http://[::1]:8086", None, False),
    ("http://127.0.0.2:8428", None, False), ("https://influx.city.example:8086", None, True),
    ("http://10.0.0.5:8086", None, True), ("http://127.0.0.1:8086", "true", True),
    ("https://influx.city.example", "false", False), ("http://127.0.0.1:8086", '"auto"', False),
])
def test_influx_gzip_is_auto_plain_over_loopback_unless_set(tmp_path: Path, url: str, written: str | None,
                                                              compressed: bool) -> None:
    path = tmp_path / "kit.toml"
    path.write_text(f'[[influx]]\napi = "v1"\nurl = "{url}"\ndatabase = "d"\n'
                    + (f"gzip = {written}\n" if written else ""))
    (influx,) = load_settings(path, env={}).influx
    assert influx.compress() is compressed


def test_influx_gzip_takes_only_true_false_or_auto(tmp_path: Path) -> None:
    problems = _problems(tmp_path, '[[influx]]\napi = "v1"\nurl = "http://a:8086"\ndatabase = "d"\ngzip = "maybe"\n')
    assert problems == [f"{tmp_path / 'kit.toml'}:5: influx[0].gzip: gzip is true, false or \"auto\", not 'maybe'"]


def test_journal_commit_interval_reaches_the_ingest_queue(tmp_path: Path) -> None:
    path = tmp_path / "kit.toml"
    path.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\nstatus_listen = ""\n')
    assert load_settings(path, env={}).journal.commit_interval == 0.01  # the default: at most 100 commits/s
    gateway = Gateway(load_settings(path, env={"CITYGW_JOURNAL_COMMIT_INTERVAL": "25ms"}))
    try:
        assert gateway.pipeline.queue.commit_interval_s == 0.025
    finally:
        gateway.stop()
    assert _problems(tmp_path, '[journal]\ncommit_interval = "soon"\n')[0].startswith(
        f"{path}:2: journal.commit_interval: invalid duration 'soon'")


REFERENCE_FRAME = "42 4d 00 1c 00 00 00 08 00 08 00 00 00 08 00 08 00 d2 00 46 00 2d 00 1e 00 00 00 00 97 00 02 c5"


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_decode_a_real_pms5003_frame() -> None:
    # protocols.md §1: CF1 PM1/2.5/10 = 0/8/8, atm 0/8/8, counts 210/70/45/30/0/0, checksum 0x02C5.
    proc = _run_cli("decode", "--format", "pms5003", "--hex", REFERENCE_FRAME)
    assert proc.returncode == 0, proc.stderr
    readings = {r["quantity"]: r for r in orjson.loads(proc.stdout)}
    assert readings["pm2_5"]["value"] == 8.0 and readings["pm2_5"]["unit"] == "ug/m3"
    assert readings["particles_0_3um"]["value"] == 210.0
    assert len(readings) == 12


def test_decode_bad_checksum_exits_2_with_a_reason() -> None:
    bad = REFERENCE_FRAME[:-2] + "c6"
    proc = _run_cli("decode", "--format", "pms5003", "--hex", bad)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "checksum mismatch" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_decode_json_payload_and_malformed_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "--format", "json", "--payload",
                 '{"device_id": "n1", "ts": "2026-05-01T10:00:00.5Z", "values": {"noise_laeq": 55.5}}']) == 0
    (reading,) = orjson.loads(capsys.readouterr().out)
    assert reading == {"device_id": "n1", "quantity": "noise_laeq", "value": 55.5, "unit": "dBA",
                       "ts": 1_777_629_600_500_000_000}
    assert main(["decode", "--format", "json", "--payload", '{"values": ']) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "malformed JSON" in captured.err


def test_devices_lists_kinds_with_units(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "pms5003" in out and "pm2_5 [ug/m3]" in out and "json" in out


def test_decoded_frame_matches_encoder() -> None:
    assert pms5003.encode({"pm2_5_cf1": 8, "pm10_cf1": 8, "pm2_5": 8, "pm10": 8, "particles_0_3um": 210,
                           "particles_0_5um": 70, "particles_1_0um": 45, "particles_2_5um": 30}) == \
        bytes.fromhex(REFERENCE_FRAME)


def test_readme_embeds_the_example_config_verbatim() -> None:
    readme = (REPO / "README.md").read_text()
    assert (REPO / "config" / "example.toml").read_text() in readme


def test_readme_first_screen_has_exactly_the_two_setup_commands() -> None:
    first_screen = (REPO / "README.md").read_text().split("---", 1)[0]
    commands = [line for line in first_screen.splitlines() if line.startswith("bash ")]
    assert [c.split("#")[0].strip() for c in commands] == ["bash scripts/dev.sh demo", "bash scripts/dev.sh test"]
    assert "bash scripts/dev.sh test" in (REPO / ".ci" / "run").read_text()


def test_feed_prefix_must_not_be_the_broker_root(tmp_path: Path) -> None:
    problems = _problems(tmp_path, '[mqtt]\nhost = "b"\n[mqtt.feed]\ntopic_prefix = "///"\n')
    assert any("publish at the broker's root" in p for p in problems)


def test_every_kind_has_a_doc_page_and_a_valid_sample_config(tmp_path: Path) -> None:
    from devices.registry import KINDS

    for name, kind in KINDS.items():
        assert (REPO / "docs" / "devices" / (kind.doc or f"{name}.md")).exists(), name
        snippet = (REPO / "config" / "devices" / f"{name}.toml").read_text()
        if kind.link == "mqtt" and "\n[mqtt]" not in "\n" + snippet:
            snippet = '[mqtt]\nhost = "broker"\n' + snippet  # route snippets go under a kit's [mqtt]
        path = tmp_path / f"{name}.toml"
        path.write_text(snippet)
        settings = load_settings(path, env={})
        used = [d.kind for d in settings.devices] + [r.format for r in settings.mqtt.routes]
        assert name in used, name
