"""`citygw simulate`: play N days of a kit's readings in seconds and write raw and KPI series to its sinks.

The kit file is an ordinary citygw config (config/kits/*.toml); its [[devices]] and MQTT routes with a fixed
device_id say which devices to simulate (simulators/kit_scenario.py models their quantities). `--config`
may point the kit at other sinks: each top-level table of that file replaces the kit's table of the same
name (e.g. its [[influx]] and [local_store] replace the kit's), the kit's device list stays. The live MQTT
feed is not driven (the simulated past is not live); InfluxDB sinks and the local store are.

The real pipeline runs, synchronously, on a simulated clock: readings are validated, journaled (a temporary
journal), folded into windows that close on the simulated watermark, derived into indicators, and delivered
by the real sink threads. The command ends once every sink has delivered the whole journal.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from devices.registry import KINDS
from devices.vocabulary import QUANTITIES
from gateway.settings import ConfigError, ConfigProblem, Settings, load_settings
from simulators.kit_scenario import DeviceSpec, KitScenario

__all__ = ["SimulationResult", "device_specs", "load_kit", "run_simulation"]

log = logging.getLogger("citygw.simulate")

S = 1_000_000_000


def _read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), 0, "", f"cannot read file: {exc.strerror}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem(str(path), 0, "", f"TOML syntax error: {exc}")]) from None


def load_kit(kit: str | Path, config: str | Path | None = None) -> tuple[Settings, list[DeviceSpec]]:
    """The settings to run with (kit, with --config's tables replacing the kit's) and the devices to simulate."""
    kit_settings = load_settings(kit)
    specs = device_specs(kit_settings)
    if config is None:
        return kit_settings, specs
    merged = {**_read_toml(kit), **_read_toml(config)}
    try:
        return Settings.model_validate(merged), specs
    except ValidationError as exc:
        problems = [ConfigProblem(str(config), 0, ".".join(str(p) for p in e["loc"]),
                                  e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        raise ConfigError(problems) from None


def device_specs(settings: Settings) -> list[DeviceSpec]:
    """Devices of a kit with the quantities they report: [[devices]], and MQTT routes with a fixed device_id."""
    specs: list[DeviceSpec] = []
    for d in settings.devices:
        specs.append(DeviceSpec(d.id, KINDS[d.kind].quantities, dict(d.tags)))
    for r in settings.mqtt.routes:
        if not r.device_id or "{" in r.device_id:
            log.info("route %s: device ids come from the topic or payload; not simulated", r.topic)
            continue
        quantities = list(KINDS[r.format].quantities)
        for f in r.options.get("fields", []) if isinstance(r.options.get("fields"), list) else []:
            q = QUANTITIES.get(str(f.get("quantity", ""))) if isinstance(f, dict) else None
            if q is not None:
                quantities.append((q.name, str(f.get("unit") or q.units[0])))
        specs.append(DeviceSpec(r.device_id, tuple(dict.fromkeys(quantities)), dict(r.tags)))
    return specs


@dataclass
class SimulationResult:
    """What a simulation did."""

    start_ns: int
    end_ns: int
    readings: int = 0
    rejected: int = 0
    kpi_points: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    undelivered: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every sink delivered everything."""
        return not any(self.undelivered.values())


class _SimClock:
    """The injectable clock: simulated UTC ns, moved forward by the driver."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def local_midnight_ns(day: date, timezone: str) -> int:
    """UTC ns of local midnight starting `day` in `timezone`."""
    return int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).timestamp()) * S


def run_simulation(settings: Settings, specs: list[DeviceSpec], days: float, start: date | None = None,
                   seed: int = 1, step_s: float = 600.0, deliver_timeout_s: float = 120.0,
                   progress: Callable[[float, int], None] | None = None) -> SimulationResult:
    """Simulate `days` days from local midnight of `start` (default: `days` days before today) into the sinks.

    `progress(days_played, readings_so_far)` is called after every simulated step (the CLI's progress bar).
    """
    from gateway.app import Gateway

    tz = settings.gateway.timezone
    if start is None:
        start = datetime.now(ZoneInfo(tz)).date() - timedelta(days=math.ceil(days))
    start_ns = local_midnight_ns(start, tz)
    # Whole days end at local midnight (a DST day is 23 or 25 h long), so the last daily window closes too.
    whole = float(days).is_integer()
    end_ns = local_midnight_ns(start + timedelta(days=int(days)), tz) if whole else start_ns + int(days * 86400 * S)
    result = SimulationResult(start_ns, end_ns)
    wall = time.monotonic()
    scenario = KitScenario(specs, tz, start_ns, seed=seed)
    if not scenario.devices:
        raise ConfigError([ConfigProblem("", 0, "devices", "no device of this kit reports a simulated quantity")])
    with tempfile.TemporaryDirectory(prefix="citygw-simulate-") as tmp:
        # A throw-away journal: the simulated past must not mix with a real gateway's journal and horizons.
        sim = settings.model_copy(update={
            "devices": [],
            # No transports, and no live feed: the simulated past is not live (InfluxDB and the local store are).
            "mqtt": settings.mqtt.model_copy(update={
                "routes": [], "feed": settings.mqtt.feed.model_copy(update={"enabled": False})}),
            "gateway": settings.gateway.model_copy(update={"status_listen": ""}),
            "journal": settings.journal.model_copy(update={"path": Path(tmp) / "journal.sqlite",
                                                           "synchronous": "off", "max_size": 0}),
        })
        clock = _SimClock(start_ns)
        gateway = Gateway(sim, clock_ns=clock)
        pipeline = gateway.pipeline
        for d in gateway.deliveries:
            d.start()
        try:
            step = int(step_s * S)
            t = start_ns
            last_housekeeping = t
            while t < end_ns:
                t1 = min(t + step, end_ns)
                readings = scenario.step(t, t1)
                clock.now_ns = t1
                if readings:
                    pipeline.process([(readings, None)])
                pipeline.tick()
                if t1 - last_housekeeping >= 86400 * S:
                    pipeline.housekeeping()
                    last_housekeeping = t1
                t = t1
                if progress is not None:
                    progress((t - start_ns) / (86400 * S), pipeline.accepted)
            # Let the idle rule move every device's watermark past its last window's end + grace: everything
            # closes. A device is idle after three of its usual pauses between batches (a step, or more for a
            # device reporting less often than every step): a day of wall time covers any of them.
            clock.now_ns = end_ns + int(settings.aggregation.grace * S) + pipeline.idle_close_ns + 86400 * S
            pipeline.tick()
            result.readings = pipeline.accepted
            result.rejected = pipeline.rejected_count
            last = gateway.journal.last_seq()
            deadline = time.monotonic() + deliver_timeout_s
            for d in gateway.deliveries:
                d.wake.set()
                while d.journal.cursor(d.sink.name) < last and time.monotonic() < deadline:
                    time.sleep(0.05)
                result.undelivered[d.sink.name] = max(0, last - d.journal.cursor(d.sink.name))
                result.delivered[d.sink.name] = d.delivered
                if d.last_error:
                    result.errors[d.sink.name] = d.last_error
            result.kpi_points = _count_kpis(gateway)
        finally:
            gateway.stop()
    result.seconds = time.monotonic() - wall
    return result


def _count_kpis(gateway: Any) -> int:
    """KPI points the pipeline appended (window statistics and indicators)."""
    total = 0.0
    for metric in gateway.metrics.kpi_points.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return int(total)
