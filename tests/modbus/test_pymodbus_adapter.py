"""pymodbus stays behind its adapters: the gateway's (ingest/modbus_client.py) and the simulators'
(simulators/modbus_server.py). A breaking pymodbus release then touches those two files (and the tests that
use pymodbus's own client as an independent peer), nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = {"ingest/modbus_client.py", "simulators/modbus_server.py"}
PACKAGES = ("aggregators", "bench", "config", "devices", "gateway", "ingest", "simulators")
IMPORT = re.compile(r"^\s*(import pymodbus|from pymodbus[\s.])", re.MULTILINE)


def test_pymodbus_is_imported_only_by_its_adapters() -> None:
    importers = {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if IMPORT.search(path.read_text(encoding="utf-8"))
    }
    assert importers - ADAPTERS == set(), "import pymodbus through ingest.modbus_client / simulators.modbus_server"
    assert importers == ADAPTERS  # the scan itself works: it finds the adapters
