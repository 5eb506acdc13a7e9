"""Every device kind and MQTT payload format, end to end: config/kits/simulated-city.toml is started as a
SimulatedKit (ptys for the serial kinds, pymodbus RTU servers for the Modbus buses, paho publishers on the
real Mosquitto), `citygw run` reads them through pyserial / pymodbus / MQTT, and InfluxDB 1.x must hold
readings from every device and every quantity its simulator sends, with the kind's units, each value one
the simulator reported it sent."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from devices.registry import KINDS
from devices.vocabulary import QUANTITIES
from gateway.settings import Settings, load_settings
from gateway.simulated_kit import simulated_kit
from simulators.kit import SimulatedDevice, to_toml
from simulators.registry import SIMULATORS, ModbusSim, MqttSim, SerialSim
from tests.integration.helpers import REPO, GatewayProcess, wait_for
from tests.servers import InfluxV1, Mosquitto

KIT = REPO / "config" / "kits" / "simulated-city.toml"


def _expected_units(dev: SimulatedDevice) -> dict[str, set[str]]:
    """quantity → allowed units, from the kind's registry entry (vocabulary canonical unit for mapped formats)."""
    declared = KINDS[dev.kind].quantities
    emitted = dev.quantities()
    if declared:
        by_quantity: dict[str, set[str]] = {}
        for q, u in declared:
            by_quantity.setdefault(q, set()).add(u)
        undeclared = emitted - set(by_quantity)
        assert not undeclared, f"{dev.device_id} ({dev.kind}) simulator sends undeclared quantities {undeclared}"
        return {q: by_quantity[q] for q in emitted}
    return {q: {QUANTITIES[q].units[0]} for q in emitted}


def _close(value: float, sent: list[float], resolution: float) -> bool:
    """Whether `value` is one of the sent values, within the wire resolution (or float32 / decimal rounding)."""
    return any(abs(value - s) <= resolution + 1e-6 * max(1.0, abs(s)) for s in sent)


def test_simulated_city_covers_every_kind() -> None:
    # The kit file must really hold one device of every kind and one route of every MQTT format.
    settings = load_settings(KIT)
    kinds = {d.kind for d in settings.devices} | {r.format for r in settings.mqtt.routes}
    assert kinds == set(KINDS), f"missing from {KIT.name}: {set(KINDS) - kinds}"
    assert set(SIMULATORS) == set(KINDS)
    serial = {k for k, v in SIMULATORS.items() if isinstance(v, SerialSim)}
    assert serial == {k for k, v in KINDS.items() if v.link == "serial"}
    modbus = {k for k, v in SIMULATORS.items() if isinstance(v, ModbusSim)}
    assert modbus == {k for k, v in KINDS.items() if v.link == "modbus"}
    mqtt = {k for k, v in SIMULATORS.items() if isinstance(v, MqttSim)}
    assert mqtt == {k for k, v in KINDS.items() if v.link == "mqtt"}
    # Multi-drop: at least one port carries several Modbus slaves.
    ports = [d.port for d in settings.devices if KINDS[d.kind].link == "modbus"]
    assert max(ports.count(p) for p in ports) >= 3
    # The TOML writer round-trips the kit (what `--write-config` relies on).
    data = tomllib.loads(KIT.read_text(encoding="utf-8"))
    assert tomllib.loads(to_toml(data, "header\nline 2")) == data


def test_every_device_kind_end_to_end(tmp_path: Path, mosquitto: Mosquitto, influx_v1: InfluxV1) -> None:
    uid = f"alldev{time.time_ns() % 10**9}"
    influx_v1.create_database(uid)
    data = tomllib.loads(KIT.read_text(encoding="utf-8"))
    data["gateway"].update(id=uid, data_dir=str(tmp_path / "data"))
    data["influx"] = [{"api": "v1", "url": influx_v1.url, "database": uid, "flush_interval": "200ms"}]
    with simulated_kit(Settings.model_validate(data), broker=("127.0.0.1", mosquitto.port), seed=7) as kit:
        config = kit.write_config(tmp_path / "kit.toml")
        assert load_settings(config).mqtt.port == mosquitto.port
        for d in load_settings(config).devices:  # every port is the simulator's, none is left a placeholder
            assert d.port == kit.devices[d.id].port and Path(d.port).exists(), d
        assert len(kit.devices) == len(data["devices"]) + len(data["mqtt"]["routes"])
        gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
        try:
            # Serial simulators that only answer requests have sent nothing until the gateway polls them.
            wait_for(lambda: all(dev.history() for dev in kit.devices.values()), 30,
                     "every simulator to send something")
            expected = {dev.device_id: _expected_units(dev) for dev in kit.devices.values()}

            def missing() -> list[tuple[str, str]]:
                rows = influx_v1.query("SELECT count(value) FROM reading GROUP BY device_id, quantity", db=uid)
                have = {(r["device_id"], r["quantity"]) for r in rows if r["count"] > 0}
                return [(d, q) for d, qs in expected.items() for q in qs if (d, q) not in have]

            deadline = time.monotonic() + 45
            while (absent := missing()) and time.monotonic() < deadline:
                time.sleep(1.0)
            assert not absent, f"no readings in InfluxDB for {absent}; gateway log:\n{gateway.log()[-3000:]}"
            # Let a few more frames arrive so values are compared over several readings per series.
            time.sleep(2.0)

            # Series told apart by a tag (an SDM630's per-phase registers: phase=L1/L2/L3) must all arrive.
            for dev in kit.devices.values():
                keys = sorted({k for _, tags in dev.series() for k, _ in tags})
                if not keys:
                    continue
                rows = influx_v1.query(f"SELECT count(value) FROM reading WHERE device_id='{dev.device_id}' "
                                       f"GROUP BY quantity, {', '.join(keys)}", db=uid)
                have = {(r["quantity"], tuple((k, r[k]) for k in keys if r.get(k))) for r in rows if r["count"]}
                lost = sorted(dev.series() - have)
                assert not lost, f"{dev.device_id} ({dev.kind}): series never stored: {lost}"

            checked = 0
            for device_id, units in sorted(expected.items()):
                dev = kit.devices[device_id]
                rows = influx_v1.query(
                    f"SELECT value FROM reading WHERE device_id='{device_id}' GROUP BY quantity, unit", db=uid)
                got_units: dict[str, set[str]] = {}
                for r in rows:
                    got_units.setdefault(r["quantity"], set()).add(r["unit"])
                for quantity, allowed in units.items():
                    assert got_units.get(quantity), f"{device_id} {quantity}: no readings"
                    assert got_units[quantity] <= allowed, (
                        f"{device_id} ({dev.kind}) {quantity}: units {got_units[quantity]}, expected {allowed}")
                    sent = dev.sent(quantity)
                    values = [float(r["value"]) for r in rows if r["quantity"] == quantity]
                    assert values and all(math.isfinite(v) for v in values)
                    wrong = [v for v in values if not _close(v, sent, dev.resolution(quantity))]
                    assert not wrong, (f"{device_id} ({dev.kind}) {quantity}: stored {wrong[:5]} never sent "
                                       f"(recent sent: {sent[-5:]})")
                    checked += len(values)
            assert checked > 0
            # Multi-drop: the slaves sharing a line were all read through one bus owner.
            assert len({kit.devices["water-ph-1"].port, kit.devices["water-turb-1"].port,
                        kit.devices["water-ec-1"].port}) == 1
            assert kit.publishers_refused == 0
        finally:
            code = gateway.stop()
    log = gateway.log()
    assert code == 0, log[-4000:]
    assert "Traceback" not in log, log[-4000:]


def test_cli_simulators_writes_config(tmp_path: Path, mosquitto: Mosquitto) -> None:
    out = tmp_path / "sim.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "simulators", "--kit", str(KIT), "--write-config", str(out),
         "--broker", f"127.0.0.1:{mosquitto.port}", "--duration", "1.5", "--seed", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    settings = load_settings(out)
    assert (settings.mqtt.host, settings.mqtt.port) == ("127.0.0.1", mosquitto.port)
    original = load_settings(KIT)
    assert [d.id for d in settings.devices] == [d.id for d in original.devices]
    for d in settings.devices:  # each rewritten port was printed next to its device
        assert d.port != next(o.port for o in original.devices if o.id == d.id)
        assert any(line.split()[0] == d.id and d.port in line for line in proc.stdout.splitlines()), proc.stdout
    # After --duration every simulator is gone: its pty links are removed.
    assert not any(Path(d.port).exists() for d in settings.devices)
    bad = subprocess.run([sys.executable, "-m", "gateway.cli", "simulators", "--kit", str(KIT),
                          "--broker", "nohost"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
