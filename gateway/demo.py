"""`citygw demo`: a whole simulated kit on embedded defaults — no configuration, no server to install.

A PMS5003 particulate sensor streams byte-exact frames on a pseudo-terminal, a noise sensor publishes JSON
to an embedded MQTT broker, the gateway journals, aggregates 10-second and 1-minute windows, publishes the
live feed on the embedded broker and stores everything as JSON lines. KPIs print as their windows close, or
(`--print ngsi-ld`) the NGSI-LD entities an `[[ngsi_ld]]` sink would upsert for them, so a platform engineer
sees that output without a broker.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson

from aggregators.kpi import KpiPoint
from gateway.journal import Entry, kpi_row
from gateway.settings import Settings
from gateway.signals import wait_for_signal

__all__ = ["PRINT_FORMATS", "demo_settings", "ngsi_ld_printer", "run_demo"]

PRINT_FORMATS = ("kpis", "ngsi-ld")


def demo_settings(data_dir: Path, pms_port: str, broker_port: int) -> Settings:
    """The demo kit's configuration (the same shape as a TOML file; see config/example.toml)."""
    return Settings.model_validate({
        "gateway": {"id": "demo-kit", "data_dir": str(data_dir), "timezone": "UTC",
                    "status_listen": "127.0.0.1:0", "lat": 40.4168, "lon": -3.7038},  # a site for `location`
        "devices": [{"id": "air-pm-1", "kind": "pms5003", "port": pms_port, "tags": {"site": "demo-square"}}],
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "protocol": "3.1.1",
                 "routes": [{"topic": "demo/sensors/+/json", "format": "json", "device_id": "{2}",
                             "tags": {"site": "demo-square"}}]},
        "aggregation": {"windows": ["10s", "1m"], "grace": "2s"},
        "journal": {"synchronous": "normal"},
    })


def _print_kpis(points: list[KpiPoint]) -> None:
    for p in points:
        if p.name not in ("pm2_5", "pm10", "noise_laeq", "temperature"):
            continue
        start = datetime.fromtimestamp(p.start_ns / 1e9).strftime("%H:%M:%S")
        flag = "" if p.valid else "  (incomplete window)"
        count = p.fields.get("count", 0)
        stat = "LAeq" if p.unit == "dBA" else "mean"
        print(f"{start} {p.window:>4}  {p.device_id:<12} {p.name:<11} {stat} {p.value:7.1f} {p.unit:<6}"
              f" min {p.fields.get('min', 0):6.1f}  max {p.fields.get('max', 0):6.1f}  n={count}{flag}",
              flush=True)


def ngsi_ld_printer(settings: Settings, out: Callable[[str], None] = print) -> Callable[[list[KpiPoint]], None]:
    """A KPI listener printing the entities an [[ngsi_ld]] sink with default settings would upsert."""
    from gateway.sinks.ngsi_ld_mapping import EntityMapper

    def locate(device_id: str) -> tuple[float, float] | None:
        where = settings.device_location(device_id)
        return where.point if where is not None else None

    mapper = EntityMapper(settings.gateway.id, locate)

    def show(points: list[KpiPoint]) -> None:
        entries = []
        for seq, p in enumerate(points, start=1):
            row = kpi_row(p)  # the journal row, read back as the sink reads it
            entries.append(Entry._make((seq, *row[:-1], orjson.loads(row[-1]))))
        for entity, _seqs in mapper.entities(entries):
            out(json.dumps(entity, indent=2, ensure_ascii=False))
    return show


def run_demo(duration: float | None = None, data_dir: str | None = None, print_as: str = "kpis") -> int:
    """Run the demo until Ctrl-C or `duration` seconds; return the exit status."""
    from gateway.app import Gateway
    from simulators.demo_kit import DemoNoisePublisher
    from simulators.embedded_broker import EmbeddedBroker
    from simulators.pms5003 import Pms5003Simulator

    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="citygw-demo-")
        data_dir = tmp.name
    broker = EmbeddedBroker().start()
    pms = Pms5003Simulator(seed=1)
    noise = DemoNoisePublisher("127.0.0.1", broker.port, topic="demo/sensors/noise-1/json", seed=2)
    gateway = Gateway(demo_settings(Path(data_dir), pms.port, broker.port))
    settings = gateway.settings
    gateway.kpi_listeners.append(ngsi_ld_printer(settings, lambda text: print(text, flush=True))
                                 if print_as == "ngsi-ld" else _print_kpis)
    print("citygw demo: simulated PMS5003 on", pms.port, "| noise sensor via embedded MQTT broker on port",
          broker.port, flush=True)
    gateway.start()
    noise.start()
    if gateway.status_server is not None:
        print(f"status page: http://{gateway.status_server.address}/   data: {data_dir}", flush=True)
    what = "NGSI-LD entities (the [[ngsi_ld]] sink's upserts)" if print_as == "ngsi-ld" else "KPIs"
    print(f"{what} appear as 10 s and 1 min windows close (Ctrl-C to stop)...", flush=True)
    try:
        wait_for_signal(duration, gateway.tick)
    finally:
        noise.stop()
        gateway.stop()
        pms.close()
        broker.stop()
        status = gateway.pipeline
        print(f"demo stopped: {status.accepted} readings accepted, {status.rejected_count} rejected",
              file=sys.stderr)
        if tmp is not None:
            tmp.cleanup()
    return 0
