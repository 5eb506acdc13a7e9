"""Production install: `citygw service install` in a temp root, the unit checked by systemd-analyze, and the
sd_notify protocol (READY, WATCHDOG from the ingest loop, STOPPING) received from a real `citygw run`."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.sd_notify import Notifier, Watchdog
from gateway.service import install, render_unit
from simulators.pms5003 import Pms5003Simulator
from tests.servers import require_binary

REPO = Path(__file__).resolve().parents[2]
CITYGW = str(Path(sys.executable).parent / "citygw")


def _blank_debian_root(tmp_path: Path) -> Path:
    """/etc/passwd and /etc/group as a fresh Debian has them (dialout is gid 20)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\ndialout:x:20:\n")
    return root


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_in_a_temp_root(tmp_path: Path) -> None:
    require_binary("/usr/bin/systemd-sysusers", "systemd")
    root = _blank_debian_root(tmp_path)
    lines = install(root, exec_path=CITYGW, enable=False)
    assert any("user citygw" in line and "dialout" in line for line in lines)

    passwd = (root / "etc" / "passwd").read_text().splitlines()
    user = next(line for line in passwd if line.startswith("citygw:"))
    _name, _, uid, gid, _gecos, home, shell = user.split(":")
    assert int(uid) < 1000 and home == "/var/lib/citygw" and shell == "/usr/sbin/nologin"  # a system user
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "group").read_text().splitlines()}
    assert "citygw" in groups["dialout"][3].split(",")
    assert groups["citygw"][2] == gid

    config = root / "etc" / "citygw" / "citygw.toml"
    env_file = root / "etc" / "citygw" / "citygw.env"
    assert _mode(config) == 0o600 and _mode(env_file) == 0o600
    assert _mode(root / "etc" / "citygw" / "secrets") == 0o700
    assert _mode(root / "var" / "lib" / "citygw") == 0o750
    assert _mode(root / "etc" / "citygw") == 0o750
    if os.geteuid() == 0:  # only root can give files away
        assert config.stat().st_uid == int(uid) and (root / "var" / "lib" / "citygw").stat().st_uid == int(uid)
        assert env_file.stat().st_uid == 0
    unit = (root / "etc" / "systemd" / "system" / "citygw.service").read_text()
    assert f"ExecStart={CITYGW} run --config /etc/citygw/citygw.toml" in unit
    assert (root / "etc" / "sysusers.d" / "citygw.conf").exists()
    assert (root / "etc" / "tmpfiles.d" / "citygw.conf").exists()

    # The starter config is valid and points at the service's data directory.
    proc = subprocess.run([CITYGW, "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert "/var/lib/citygw" in config.read_text() and "problem" not in proc.stderr, proc.stderr

    # A second install keeps the technician's config and the user (idempotent).
    config.write_text(config.read_text() + "\n# edited on site\n")
    install(root, exec_path=CITYGW, enable=False)
    assert config.read_text().endswith("# edited on site\n") and _mode(config) == 0o600
    assert sum(line.startswith("citygw:") for line in (root / "etc" / "passwd").read_text().splitlines()) == 1


def test_install_copies_a_given_config(tmp_path: Path) -> None:
    require_binary("/usr/bin/systemd-sysusers", "systemd")
    root = _blank_debian_root(tmp_path)
    source = tmp_path / "kit.toml"
    source.write_text('[gateway]\nid = "plaza-01"\n')
    proc = subprocess.run([CITYGW, "service", "install", "--root", str(root), "--config", str(source),
                           "--exec", CITYGW, "--no-enable"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc" / "citygw" / "citygw.toml").read_text() == source.read_text()
    assert "sudo -u citygw" in proc.stdout and "check-config --connect" in proc.stdout


def test_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = require_binary("/usr/bin/systemd-analyze", "systemd")
    unit = tmp_path / "citygw.service"
    unit.write_text(render_unit(CITYGW))
    text = unit.read_text()
    for directive in ("Type=notify", "Restart=always", "ProtectSystem=strict", "ReadWritePaths=/var/lib/citygw",
                      "WatchdogSec=", "User=citygw", "SupplementaryGroups=dialout", "NoNewPrivileges=true"):
        assert directive in text, directive
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr  # warnings count as failures
    proc = subprocess.run([analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                          timeout=120)
    m = re.search(r"Overall exposure level for citygw.service: ([\d.]+)", proc.stdout + proc.stderr)
    assert m, proc.stdout[-500:] + proc.stderr[-500:]
    assert float(m.group(1)) < 5.0  # systemd rates < 5 as "OK" (an unhardened service scores 9.6)


def _notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.5)
    return sock


def _receive(sock: socket.socket, until: float) -> list[str]:
    got: list[str] = []
    while time.monotonic() < until:
        try:
            got.extend(sock.recv(4096).decode().splitlines())
        except TimeoutError:
            continue
        if "STOPPING=1" in got:
            break
    return got


def test_run_notifies_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    sock = _notify_socket(tmp_path)
    with Pms5003Simulator(seed=5, period_s=0.5) as sim:
        config = tmp_path / "kit.toml"
        config.write_text(f'[gateway]\nid = "t"\ndata_dir = "{tmp_path}/data"\nstatus_listen = ""\n\n'
                          f'[[devices]]\nid = "pm1"\nkind = "pms5003"\nport = "{sim.port}"\n')
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(config)], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            messages: list[str] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and messages.count("WATCHDOG=1") < 3:
                messages += _receive(sock, min(deadline, time.monotonic() + 1))
            proc.send_signal(signal.SIGTERM)
            messages += _receive(sock, time.monotonic() + 30)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            sock.close()
    assert proc.returncode == 0, err
    assert messages[0] == "READY=1" and messages[1].startswith("STATUS=running: 1 device(s)")
    assert messages.count("WATCHDOG=1") >= 3
    assert messages[-1] == "STOPPING=1"
    assert "citygw t running: 1 device(s), 0 MQTT route(s), sinks: local-store" in err  # one line at start
    # The one line `run` logs on stop: accepted, rejected, backlog per sink, journal size.
    summary = next(line for line in err.splitlines() if "citygw stopped:" in line)
    m = re.search(r"citygw stopped: (\d+) readings accepted, (\d+) rejected; backlog left per sink: "
                  r"local-store (\d+); journal [\d.]+ MB at ", summary)
    assert m, summary
    assert int(m.group(1)) > 0 and int(m.group(3)) == 0


def test_watchdog_is_not_fed_while_the_ingest_loop_is_stuck(tmp_path: Path) -> None:
    sock = _notify_socket(tmp_path)
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"})
    progress = [time.monotonic()]
    watchdog = Watchdog(notifier, lambda: progress[0])
    try:
        watchdog.tick()
        assert sock.recv(100) == b"WATCHDOG=1"
        time.sleep(0.25)  # the ingest loop "hangs": no progress for longer than the ping interval
        watchdog.tick()
        with pytest.raises(TimeoutError):
            sock.recv(100)
        progress[0] = time.monotonic()  # it moves again
        watchdog.tick()
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        notifier.close()
        sock.close()


def test_abstract_socket_and_no_socket() -> None:
    assert not Notifier({}).enabled and Notifier({}).send("READY=1") is False
    name = f"citygw-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    try:
        assert notifier.watchdog_s == 0.0  # WATCHDOG_PID names another process: not ours to feed
        assert notifier.send("READY=1")
        assert sock.recv(100) == b"READY=1"
    finally:
        notifier.close()
        sock.close()


def test_under_systemd_log_lines_carry_journald_priorities(tmp_path: Path) -> None:
    """JOURNAL_STREAM set (stderr goes to journald): `<4>` warnings, `<6>` info, `<3>` errors, no own timestamp."""
    config = tmp_path / "kit.toml"
    config.write_text(f'[gateway]\nid = "t"\ndata_dir = "{tmp_path}/data"\nstatus_listen = ""\n\n'
                      f'[[devices]]\nid = "pm1"\nkind = "pms5003"\nport = "{tmp_path}/ttyGONE"\n')
    env = {**os.environ, "JOURNAL_STREAM": "8:12345"}
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config", str(config), "--duration", "1"],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert all(re.match(r"<[0-7]>", line) for line in lines), lines
    assert any(line.startswith("<4>citygw.pipeline: device pm1 is unavailable: cannot open") for line in lines)
    assert any(line.startswith("<6>citygw: citygw t running:") for line in lines)
    assert any(line.startswith("<6>citygw: citygw stopped:") for line in lines)

    (tmp_path / "afile").write_text("")
    config.write_text(f'[gateway]\nid = "t"\ndata_dir = "{tmp_path}/afile"\n')
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert proc.returncode == 1
    assert f"<3>citygw.config: {config}:3: gateway.data_dir: {tmp_path}/afile is a file" in proc.stderr
