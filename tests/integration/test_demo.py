"""`citygw demo` on embedded defaults shows KPI values from the simulated kit well within 60 s."""

from __future__ import annotations

import re
import subprocess
import sys

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
