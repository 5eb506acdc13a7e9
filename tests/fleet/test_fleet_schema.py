"""Fleet-safe schema (issue 14 part 1): three `citygw run` processes, built from one config and so with the
same device ids, write into one real influxd 1.6.7 and one VictoriaMetrics; every series stays apart
(the `gateway` tag / label) and holds exactly what its own kit measured."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from devices import json_mapping
from tests.integration.helpers import GatewayProcess, publish_all, wait_for
from tests.servers import InfluxV1, Mosquitto, VictoriaMetrics

S = 10**9
DEVICES = ("air-pm-1", "noise-1")  # what every kit built from the example config calls its devices
# Per device and kit: two full 10 s windows, and six seconds of a third whose event time closes the two (a
# device's windows close on its own event time; the wall clock takes over only once it has been idle a while).
N_READINGS = 26


def _config(tmp: Path, gw_id: str, mosquitto: Mosquitto, influx: InfluxV1, db: str,
            victoria: VictoriaMetrics) -> Path:
    data = tmp / gw_id
    data.mkdir()
    path = data / "kit.toml"
    path.write_text(f"""
[gateway]
id = "{gw_id}"
data_dir = "{data / 'data'}"
status_listen = "127.0.0.1:0"

[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}

[[mqtt.routes]]
topic = "{gw_id}/sensors/+/json"
format = "json"
device_id = "{{2}}"

[mqtt.feed]
enabled = false

[aggregation]
windows = ["10s"]
grace = "1s"

[[influx]]
api = "v1"
url = "{influx.url}"
database = "{db}"

[[influx]]
api = "v2"
url = "{victoria.url}"
org = "city"
bucket = "citygw"
""")
    return path


def _value(kit: int, device: int, i: int) -> float:
    """What kit `kit`'s device `device` measured at step i: distinct per kit, so a mix-up shows."""
    return 40.0 + 10.0 * kit + 3.0 * device + (i % 7)


def test_three_kits_same_device_ids_one_database(tmp_path: Path, mosquitto: Mosquitto, influx_v1: InfluxV1,
                                                 victoria: VictoriaMetrics) -> None:
    run = f"fleet{time.time_ns() % 10**9}"
    gateways = [f"{run}-kit-{k}" for k in range(3)]
    db = run
    influx_v1.create_database(db)
    procs = [GatewayProcess(_config(tmp_path, gw, mosquitto, influx_v1, db, victoria), tmp_path / f"{gw}.log")
             for gw in gateways]
    base = (time.time_ns() // (10 * S)) * 10 * S - 60 * S
    stamps = [base + i * S for i in range(N_READINGS)]
    try:
        for p in procs:
            p.start()
        # The kits subscribe once running; their input is published only then (QoS 1, persistent sessions).
        for p in procs:
            wait_for(lambda p=p: p.input_connections(), 60,  # type: ignore[misc]
                     f"{p.config.parent.name} to connect to the broker")
        time.sleep(1.0)  # the SUBSCRIBE follows the CONNACK it logs; a fresh session gets nothing before it
        messages = [(f"{gw}/sensors/{dev}/json", json_mapping.encode(dev, ts, {"noise_laeq": _value(k, d, i)}))
                    for k, gw in enumerate(gateways) for d, dev in enumerate(DEVICES)
                    for i, ts in enumerate(stamps)]
        publish_all(mosquitto.port, messages)

        def kpi_rows() -> list[dict[str, object]]:
            return influx_v1.query(f'SELECT value FROM kpi WHERE time < {base + 20 * S}', db=db)

        wait_for(lambda: len(influx_v1.query("SELECT value FROM reading", db=db)) == 3 * 2 * N_READINGS, 90,
                 "every kit's readings in influxd")
        wait_for(lambda: len(kpi_rows()) == 3 * 2 * 2, 90, "two KPI windows per kit and device in influxd")

        for k, gw in enumerate(gateways):
            for d, dev in enumerate(DEVICES):
                sent = [_value(k, d, i) for i in range(N_READINGS)]
                rows = influx_v1.query(f"SELECT value FROM reading WHERE gateway='{gw}' AND device_id='{dev}'",
                                       db=db)
                assert [r["time"] for r in rows] == stamps, (gw, dev)
                assert [r["value"] for r in rows] == sent, (gw, dev)
                kpis = influx_v1.query(f"SELECT value, \"count\" FROM kpi WHERE gateway='{gw}' AND "
                                       f"device_id='{dev}' AND \"window\"='10s' AND time < {base + 20 * S}", db=db)
                expected = [10 * np.log10(np.mean(10 ** (np.array(sent[w * 10:(w + 1) * 10]) / 10)))
                            for w in range(2)]
                assert [r["time"] for r in kpis] == [base, base + 10 * S], (gw, dev)
                assert [r["value"] for r in kpis] == pytest.approx(expected, abs=1e-9), (gw, dev)
                assert [r["count"] for r in kpis] == [10, 10]
        # The tag is a tag (indexed, GROUP BY-able), and it names exactly the three kits.
        tag_values = influx_v1.query('SHOW TAG VALUES FROM reading WITH KEY = "gateway"', db=db)
        assert sorted(str(r["value"]) for r in tag_values) == sorted(gateways)

        # VictoriaMetrics: one series per kit, device and quantity, each with the exact samples.
        def vm_series() -> list[object]:
            return [s for s in victoria.export(f'{{__name__="reading_value",gateway=~"{run}-kit-.*"}}')
                    if not s.labels.get("db")]

        wait_for(lambda: len(vm_series()) == 3 * 2, 90, "six reading series in VictoriaMetrics")
        for k, gw in enumerate(gateways):
            for d, dev in enumerate(DEVICES):
                (series,) = [s for s in victoria.export(
                    f'{{__name__="reading_value",gateway="{gw}",device_id="{dev}"}}') if not s.labels.get("db")]
                assert series.points() == [(ts // 1_000_000, _value(k, d, i)) for i, ts in enumerate(stamps)]
        vm_kpis = wait_for(lambda: [s for s in victoria.export(
            f'{{__name__="kpi_count",gateway=~"{run}-kit-.*"}}') if len(s.points()) >= 2], 60,
            "KPI series of every kit in VictoriaMetrics")
        assert sorted((s.labels["gateway"], s.labels["device_id"]) for s in vm_kpis) == sorted(
            (gw, dev) for gw in gateways for dev in DEVICES)
        assert all(s.points()[:2] == [(base // 10**6, 10.0), ((base + 10 * S) // 10**6, 10.0)] for s in vm_kpis)
    finally:
        codes = [p.stop() for p in procs if p.proc is not None]
    assert codes == [0, 0, 0], "\n".join(p.log()[-3000:] for p in procs)
