"""`citygw watch`: print the live KPIs and status of one or many kits as they arrive (built on feed_client)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

import orjson

from gateway.feed_cli import add_broker_arguments, client_factory, follow, run_until_signal

if TYPE_CHECKING:  # imported when watching: `citygw --help` and the other commands need no asyncio stack
    from gateway.feed_client import FeedClient, FeedMessage

__all__ = ["add_arguments", "run_watch"]

def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `citygw watch`."""
    add_broker_arguments(p)
    p.add_argument("--name", action="append", default=[], metavar="NAME",
                   help="only KPIs (and raw readings) of this name, e.g. pm2_5 or us_aqi (repeatable)")
    p.add_argument("--window", action="append", default=[], help="only KPIs of this window, e.g. 1h (repeatable)")
    p.add_argument("--raw", action="store_true", help="also show raw readings (kits with mqtt.feed.raw = true)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line: topic, kind, gateway, retained and the payload as published")
    p.add_argument("--count", type=int, default=None, help="exit after printing this many messages")
    p.add_argument("--duration", type=float, default=None, help="exit after this many seconds")


def _time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def describe(msg: FeedMessage, gateway: str) -> str:
    """One human line for a message."""
    from gateway.feed_client import Health, Kpi, Meta, RawReading, Status

    d = msg.data
    flags = "".join(f"  [{flag}]" for flag, on in (
        ("invalid", isinstance(d, Kpi) and not d.valid),
        ("historical", isinstance(d, Kpi | RawReading) and d.historical),
        ("retained", msg.retained)) if on)
    if isinstance(d, Kpi):
        return f"{_time(d.start)}  {gateway}  {d.device_id}  {d.name}  {d.window}  {d.value:.6g} {d.unit}{flags}"
    if isinstance(d, RawReading):
        return f"{_time(d.ts)}  {gateway}  {d.device_id}  {d.quantity}  raw  {d.value:.6g} {d.unit}{flags}"
    if isinstance(d, Status):
        return f"{gateway}  {d.state}{flags}"
    if isinstance(d, Health):
        return f"{gateway}  " + ("healthy" if d.healthy else "UNHEALTHY: " + "; ".join(d.reasons)) + flags
    assert isinstance(d, Meta)
    return (f"{gateway}  meta: citygw {d.version}, {len(d.devices)} device(s), {len(d.routes)} MQTT route(s), "
            f"windows {' '.join(d.windows) or '-'}{flags}")


def _wanted(msg: FeedMessage, names: list[str], windows: list[str]) -> bool:
    from gateway.feed_client import Kpi, RawReading

    d = msg.data
    if isinstance(d, Kpi):
        return (not names or d.name in names) and (not windows or d.window in windows)
    if isinstance(d, RawReading):
        return not names or d.quantity in names
    return True


class _Printer:
    """Writes each wanted message; counts toward --count."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.printed = 0

    def __call__(self, msg: FeedMessage, gateway: str) -> None:
        from gateway.feed_client import payload_json

        if not _wanted(msg, self.args.name, self.args.window):
            return
        if self.args.json:
            line = orjson.dumps({"topic": msg.topic, "kind": msg.kind, "gateway": gateway, "retained": msg.retained,
                                 "payload": payload_json(msg)}).decode()
        else:
            line = describe(msg, gateway)
        print(line, file=self.out, flush=True)
        self.printed += 1

    @property
    def done(self) -> bool:
        return self.args.count is not None and self.printed >= self.args.count


def run_watch(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`citygw watch`: exit 0 on Ctrl-C, --count or --duration; 1 when the broker cannot be reached."""
    import asyncio

    from gateway.settings import ConfigError

    try:
        host, port, make_client = client_factory(args, "watch", raw=args.raw)
    except (ValueError, ConfigError) as exc:
        print(f"citygw watch: {exc}", file=sys.stderr)
        return 2
    printer = _Printer(args, out)
    connections = 0

    def on_connection(up: bool) -> None:
        nonlocal connections
        if up:
            connections += 1
            if connections > 1:
                print(f"citygw watch: reconnected to {host}:{port}", file=sys.stderr, flush=True)

    def on_message(feed: FeedClient, msg: FeedMessage) -> bool:
        meta = feed.gateways.get(msg.prefix)
        printer(msg, meta.gateway if meta else getattr(msg.data, "gateway", ""))
        return printer.done

    return asyncio.run(run_until_signal(follow(make_client, host, port, "watch", on_message, on_connection),
                                        args.duration))
