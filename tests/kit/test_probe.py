"""`citygw probe PORT`: tells which device kind speaks on a port without a config (simulators on ptys)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.probe import probe_port
from simulators.mhz19b import Mhz19bSimulator
from simulators.sds011 import Sds011Simulator

REPO = Path(__file__).resolve().parents[2]


class _ListeningSds011(Sds011Simulator):
    """Records what the probe sends it."""

    def __init__(self, **kwargs: object) -> None:
        self.heard = bytearray()
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def _on_bytes(self, data: bytes) -> list[bytes]:
        self.heard += data
        return super()._on_bytes(data)


def test_streaming_sensor_is_recognised_and_others_are_not() -> None:
    with _ListeningSds011(seed=1, period_s=0.2) as sim:
        heard, notes = probe_port(sim.port, seconds=2.0)
    assert sim.heard == b""  # a sensor that streams gets no other kind's poll request
    speaking = {h.kind for h in heard if h.speaks}
    assert speaking == {"sds011"}
    sds = next(h for h in heard if h.kind == "sds011")
    assert sds.baudrate == 9600 and sds.frames >= 2
    assert {r.quantity for r in sds.readings} == {"pm2_5", "pm10"}
    assert any("pty" in n for n in notes)


def test_polled_sensor_answers_its_poll() -> None:
    with Mhz19bSimulator(seed=2, period_s=0.2) as sim:
        heard, _ = probe_port(sim.port, seconds=1.5)
    mhz = next(h for h in heard if h.kind == "mhz19b")
    assert mhz.speaks and mhz.polled
    assert all(r.quantity == "co2" for r in mhz.readings)
    assert {h.kind for h in heard if h.speaks} == {"mhz19b"}


def test_cli_probe_reports_what_speaks_and_exit_codes(tmp_path: Path) -> None:
    with Sds011Simulator(seed=3, period_s=0.2) as sim:
        proc = subprocess.run([sys.executable, "-m", "gateway.cli", "probe", sim.port, "--seconds", "1.5"],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "SPEAKS  sds011 at 9600 baud:" in proc.stdout
    assert "no      pms5003 at 9600 baud: no valid frame" in proc.stdout

    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "probe", str(tmp_path / "ttyNONE")],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2
    assert "cannot open" in proc.stdout and "dialout" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize("baud", [[19200]])
def test_silent_port_says_nothing_recognisable(baud: list[int], capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        from gateway.probe import run_probe

        assert run_probe(os.ttyname(slave), baud, seconds=0.5) == 1
        out = capsys.readouterr().out
        assert "nothing at all arrived at 19200 baud" in out and "nothing recognisable: check wiring" in out
    finally:
        os.close(master)
        os.close(slave)
