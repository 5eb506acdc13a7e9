"""Health checks on the data path: each takes the running gateway and returns its problems as sentences.

A problem says what is wrong, for how long, against which limit ([health] in the config), and where to look.
They join the checks of `gateway/health.py`; `/healthz` answers 503 with every sentence while any is listed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.status_page import explain_error

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["DATA_PATH_CHECKS", "devices_all_unavailable", "ingest_stalled", "mqtt_input_down", "nats_input_down",
           "sinks_lagging"]


def ingest_stalled(gw: Gateway) -> list[str]:
    """Input is waiting and the ingest thread has committed nothing for longer than the limit."""
    stalled = gw.pipeline.stalled_s()
    limit = gw.settings.health.ingest_stall_after
    if stalled <= limit:
        return []
    return [f"ingest: input waiting and nothing committed to the journal for {stalled:.0f} s (limit "
            f"health.ingest_stall_after = {limit:.0f} s): the journal is stuck (disk full or locked?); see the log"]


def mqtt_input_down(gw: Gateway) -> list[str]:
    """The MQTT input has been disconnected for longer than the limit (since start when never connected)."""
    down = gw.monitor.mqtt_down_for()
    limit = gw.settings.health.mqtt_down_after
    if down is None or down <= limit:
        return []
    m = gw.settings.mqtt
    return [f"mqtt: input not connected to the broker {m.host}:{m.port} for {down:.0f} s (limit "
            f"health.mqtt_down_after = {limit:.0f} s): check that the broker runs and mqtt.host/port/credentials"]


def nats_input_down(gw: Gateway) -> list[str]:
    """The NATS input has not been connected with its consumer bound for longer than the limit (since start)."""
    source = gw.nats_source
    down = source.down_for() if source is not None else None
    limit = gw.settings.health.nats_down_after
    if source is None or down is None or down <= limit:
        return []
    o = source.opts
    error = f"; last error: {source.last_error}" if source.last_error else ""
    return [f"nats: input not connected to {', '.join(o.servers)} (stream {o.stream}, consumer {o.durable}) for "
            f"{down:.0f} s (limit health.nats_down_after = {limit:.0f} s){error}: check that the NATS servers run, "
            "nats.servers and the credentials, and that the stream exists (nats stream info)"]


def sinks_lagging(gw: Gateway) -> list[str]:
    """A sink's oldest undelivered journal entry has waited longer than the limit."""
    limit = gw.settings.health.sink_lag_after
    out = []
    last = gw.monitor.journal.last_seq()  # the monitor's own connection: never waits on a stuck writer
    for d in gw.deliveries:
        age = gw.monitor.backlog.age(d.cursor)
        if age > limit:
            error = f"; last error: {explain_error(d.last_error)}" if d.failing_since is not None else ""
            out.append(f"sink {d.sink.name}: oldest undelivered entry waiting {age:.0f} s (limit "
                       f"health.sink_lag_after = {limit:.0f} s), {max(0, last - d.cursor)} entries behind{error}")
    return out


def devices_all_unavailable(gw: Gateway) -> list[str]:
    """Every device the gateway knows is unavailable: it produces nothing (one device down is on the page only)."""
    down = gw.monitor.book.all_unavailable()
    if not down:
        return []
    shown = "; ".join(f"{device}: {reason}" for device, reason in down[:5])
    more = f"; and {len(down) - 5} more" if len(down) > 5 else ""
    return [f"devices: all {len(down)} device(s) unavailable ({shown}{more}): check cables, ports and power"]


DATA_PATH_CHECKS: tuple[Callable[[Gateway], list[str]], ...] = (
    ingest_stalled, mqtt_input_down, nats_input_down, sinks_lagging, devices_all_unavailable)
