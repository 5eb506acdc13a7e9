"""`citygw service install`: the citygw system user, its directories, config and secrets, a hardened unit.

What it writes (under `--root`, default `/`), from the files shipped in gateway/data/:

    /etc/systemd/system/citygw.service   the unit (Type=notify, watchdog, Restart=always, ProtectSystem=strict)
    /etc/sysusers.d/citygw.conf          the `citygw` system user, member of `dialout` (serial ports)
    /etc/tmpfiles.d/citygw.conf          /var/lib/citygw, /etc/citygw, /etc/citygw/secrets
    /etc/citygw/citygw.toml              the config (kept when it exists), citygw:citygw 0600
    /etc/citygw/citygw.env               the service's environment for *_env secrets, 0600

The user is made by systemd-sysusers (the distribution's own tool, so the user lines are what Debian would
write); directories and modes are set here so that `--root` works without a booted systemd.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["add_arguments", "install", "render_unit", "run_service_command"]

UNIT_NAME = "citygw.service"
CONFIG_PATH = "/etc/citygw/citygw.toml"


def _data(name: str) -> str:
    return resources.files("gateway").joinpath("data", name).read_text(encoding="utf-8")


def default_exec() -> str:
    """The `citygw` next to the running interpreter (the venv's or pipx's), else `python -m gateway.cli`."""
    beside = Path(sys.executable).parent / "citygw"
    if beside.exists():
        return str(beside)
    found = shutil.which("citygw")
    return str(Path(found).resolve()) if found else f"{sys.executable} -m gateway.cli"


def render_unit(exec_path: str, config: str = CONFIG_PATH) -> str:
    """The unit file with ExecStart filled in."""
    return _data("citygw.service").replace("@EXEC@", exec_path).replace("@CONFIG@", config)


@dataclass(frozen=True, slots=True)
class Account:
    """uid and gid of the citygw user (as written under the root)."""

    uid: int
    gid: int


def _lookup(root: Path, user: str = "citygw") -> Account | None:
    passwd = root / "etc" / "passwd"
    if not passwd.exists():
        return None
    for line in passwd.read_text().splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == user:
            return Account(int(fields[2]), int(fields[3]))
    return None


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".citygw-new")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(mode)
    os.replace(tmp, path)


def _own(path: Path, uid: int, gid: int, mode: int, notes: list[str]) -> None:
    path.chmod(mode)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    else:
        notes.append(f"not root: {path} not given to uid {uid} (run the install with sudo)")


def _make_user(root: Path, conf: Path, notes: list[str]) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        raise RuntimeError("systemd-sysusers is missing: install systemd (apt-get install systemd)")
    cmd = [sysusers, str(conf)] if root == Path("/") else [sysusers, f"--root={root}", str(conf)]
    import subprocess  # here, not at the top: `citygw run` builds this command's parser but never installs

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    notes.extend(line for line in proc.stderr.splitlines() if line.strip())


def install(root: Path = Path("/"), config_source: Path | None = None, exec_path: str | None = None,
            enable: bool = True) -> list[str]:
    """Install everything under `root`; return the lines to show (what was done, what to do next)."""
    exec_path = exec_path or default_exec()
    done: list[str] = []
    notes: list[str] = []
    etc = root / "etc"
    unit = etc / "systemd" / "system" / UNIT_NAME
    _write(unit, render_unit(exec_path), 0o644)
    done.append(f"unit {unit} (ExecStart={exec_path} run --config {CONFIG_PATH})")
    sysusers_conf = etc / "sysusers.d" / "citygw.conf"
    _write(sysusers_conf, _data("citygw.sysusers"), 0o644)
    tmpfiles_conf = etc / "tmpfiles.d" / "citygw.conf"
    _write(tmpfiles_conf, _data("citygw.tmpfiles"), 0o644)
    _make_user(root, sysusers_conf, notes)
    account = _lookup(root)
    if account is None:
        raise RuntimeError(f"systemd-sysusers ran but no citygw user is in {etc / 'passwd'}")
    done.append(f"user citygw (uid {account.uid}) in group dialout")

    data_dir = root / "var" / "lib" / "citygw"
    config_dir = etc / "citygw"
    secrets = config_dir / "secrets"
    for directory in (data_dir, config_dir, secrets):
        directory.mkdir(parents=True, exist_ok=True)
    _own(data_dir, account.uid, account.gid, 0o750, notes)
    _own(config_dir, 0, account.gid, 0o750, notes)
    _own(secrets, account.uid, account.gid, 0o700, notes)
    done.append(f"directories {data_dir} (0750), {config_dir} (0750, group citygw), {secrets} (0700)")

    config = config_dir / "citygw.toml"
    if config.exists():
        done.append(f"config {config} kept as it is (mode set to 0600)")
    else:
        text = config_source.read_text(encoding="utf-8") if config_source else _data("citygw.toml")
        _write(config, text, 0o600)
        done.append(f"config {config} written from {config_source or 'the starter template'}")
    _own(config, account.uid, account.gid, 0o600, notes)
    env_file = config_dir / "citygw.env"
    if not env_file.exists():
        _write(env_file, _data("citygw.env"), 0o600)
    env_file.chmod(0o600)  # read by systemd as root: stays root's
    done.append(f"environment file {env_file} (0600) for *_env secrets")
    for secret in secrets.iterdir():
        _own(secret, account.uid, account.gid, 0o600, notes)

    if root == Path("/") and enable:
        import subprocess  # as in _make_user

        for cmd in (["systemctl", "daemon-reload"], ["systemctl", "enable", UNIT_NAME]):
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            except FileNotFoundError:
                notes.append("systemctl not found: enable the unit by hand on the target")
                break
            if proc.returncode != 0:
                notes.append(f"{' '.join(cmd)}: {proc.stderr.strip()} (is systemd running? enable it later)")
                break
        else:
            done.append("unit enabled (starts at boot)")
    lines = [f"installed: {d}" for d in done] + [f"note: {n}" for n in notes]
    lines += [
        "next:",
        f"  1. edit {CONFIG_PATH} (devices, broker, InfluxDB; secrets in /etc/citygw/secrets/ or citygw.env)",
        f"  2. sudo -u citygw {exec_path} check-config --connect {CONFIG_PATH}",
        "  3. sudo systemctl start citygw && sudo journalctl -u citygw -f",
    ]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `service` subcommands."""
    sub = parser.add_subparsers(dest="service_command", required=True)
    p = sub.add_parser("install", help="create the citygw user and directories, install config and unit")
    p.add_argument("--root", default="/", help="install under this directory (an image or a test) instead of /")
    p.add_argument("--config", default=None, help="a config file to install (kept when one exists)")
    p.add_argument("--exec", dest="exec_path", default=None, help="the citygw executable ExecStart runs")
    p.add_argument("--no-enable", action="store_true", help="do not run systemctl daemon-reload/enable")
    p = sub.add_parser("unit", help="print the systemd unit")
    p.add_argument("--exec", dest="exec_path", default=None, help="the citygw executable ExecStart runs")


def run_service_command(args: argparse.Namespace) -> int:
    """Dispatch `citygw service …`."""
    if args.service_command == "unit":
        sys.stdout.write(render_unit(args.exec_path or default_exec()))
        return 0
    root = Path(args.root).resolve()
    if root == Path("/") and os.geteuid() != 0:
        print("citygw service install needs root: sudo citygw service install", file=sys.stderr)
        return 1
    try:
        lines = install(root, Path(args.config) if args.config else None, args.exec_path,
                        enable=not args.no_enable)
    except (RuntimeError, OSError) as exc:
        print(f"service install failed: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0
