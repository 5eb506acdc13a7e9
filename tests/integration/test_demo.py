"""`citygw demo` on embedded defaults shows KPI values from the simulated kit well within 60 s."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gateway.cli import main
from tests.integration.helpers import REPO

KPI_LINE = re.compile(r"^\d\d:\d\d:\d\d\s+10s\s+(\S+)\s+(pm2_5|noise_laeq)\s+(mean|LAeq)\s+([\d.]+) (ug/m3|dBA)")


def test_demo_prints_live_kpis() -> None:
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--duration", "25"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = {m.group(2): float(m.group(4)) for line in proc.stdout.splitlines() if (m := KPI_LINE.match(line))}
    assert set(found) == {"pm2_5", "noise_laeq"}, proc.stdout
    assert 0 < found["pm2_5"] < 200 and 20 < found["noise_laeq"] < 120
    assert "0 rejected" in proc.stderr


@pytest.mark.parametrize("argv", [["demo", "--duration", "1"],
                                  ["simulators", "--kit", str(REPO / "config/kits/air.toml"), "--broker", "embedded"]])
def test_without_the_demo_extra_the_embedded_broker_says_how_to_install_it(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """amqtt is the `demo` extra (a kit never needs it): without it, exit 1 with the install command, no traceback."""
    monkeypatch.setitem(sys.modules, "amqtt", None)  # `import amqtt` now fails as it does when not installed
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "pip install 'citygw[demo]'" in err and "bash scripts/dev.sh demo" in err
    assert "Traceback" not in err
