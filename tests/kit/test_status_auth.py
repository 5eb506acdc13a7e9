"""Issue 10 item 14: the status server beyond loopback needs a secret.

A non-loopback `status_listen` without `status_token_env`/`status_token_file` is a config error at its line,
saying how to fix it; with a token, every path answers 401 (with a basic-auth challenge a phone's browser
understands) unless the request carries it as a Bearer token or as basic auth's password.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.settings import ConfigError, is_loopback, load_settings
from gateway.status import authorized
from tests.integration.helpers import REPO, GatewayProcess, wait_for
from tests.servers import free_port

TOKEN = "t0ken-for-the-status-page"


def get(url: str, authorization: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of one GET; (0, b"", {}) while nothing answers."""
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status), resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(), dict(exc.headers.items())
    except OSError:
        return 0, b"", {}


def test_non_loopback_without_a_token_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    config = tmp_path / "open.toml"
    config.write_text('[gateway]\nid = "kit-1"\ndata_dir = "x"\nstatus_listen = "0.0.0.0:8765"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    problem = err.value.problems[0]
    assert problem.line == 4 and problem.key == "gateway.status_listen"
    assert "status_token_env" in problem.message and "127.0.0.1" in problem.message
    # The command a technician runs says the same, with file:line.
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(config)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and f"{config}:4: gateway.status_listen:" in out.stderr
    # Loopback needs no token; an environment variable or a file makes any address acceptable.
    for listen in ("127.0.0.1:8765", "[::1]:8765", "localhost:8765"):
        config.write_text(f'[gateway]\nstatus_listen = "{listen}"\n')
        assert load_settings(config).gateway.status_listen == listen
    config.write_text('[gateway]\nstatus_token_env = "CITYGW_STATUS_TOKEN"\nstatus_listen = "0.0.0.0:8765"\n')
    assert load_settings(config).gateway.status_token_env == "CITYGW_STATUS_TOKEN"
    config.write_text(f'[gateway]\nstatus_token_file = "{tmp_path / "t"}"\nstatus_listen = "192.168.1.20:8765"\n')
    assert load_settings(config).gateway.status_listen == "192.168.1.20:8765"


def test_loopback_and_header_parsing() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("kit.local")
    basic = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert authorized(f"Bearer {TOKEN}", TOKEN) and authorized(basic, TOKEN)
    assert not authorized(None, TOKEN) and not authorized("Bearer nope", TOKEN)
    assert not authorized("Basic !!!", TOKEN) and not authorized(f"Token {TOKEN}", TOKEN)
    assert authorized(None, "")  # no token configured: loopback only, open


def test_token_guards_every_path_on_a_network_address(tmp_path: Path) -> None:
    port = free_port("0.0.0.0")
    token_file = tmp_path / "status_token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    config = tmp_path / "kit.toml"
    config.write_text(f"""
[gateway]
id = "auth{time.time_ns() % 10**8}"
data_dir = "{tmp_path / 'data'}"
status_token_file = "{token_file}"
status_listen = "0.0.0.0:{port}"
""")
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get(base + "/healthz")[0], 30, "the status server")
        for path in ("/", "/status.json", "/metrics", "/healthz"):
            code, body, headers = get(base + path)
            assert code == 401, path
            assert headers.get("WWW-Authenticate", "").startswith("Basic realm=")
            assert b"status_token" in body and TOKEN.encode() not in body
            assert get(base + path, "Bearer wrong")[0] == 401
            assert get(base + path, f"Bearer {TOKEN}")[0] == 200, path
        basic = "Basic " + base64.b64encode(f"technician:{TOKEN}".encode()).decode()
        code, body, _ = get(base + "/", basic)
        assert code == 200 and b"<html" in body
    finally:
        code = gateway.stop()
    assert code == 0, gateway.log()
    assert TOKEN not in gateway.log()
