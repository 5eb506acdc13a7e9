"""`citygw watch`: print the live KPIs and status of one or many kits as they arrive (built on feed_client)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import orjson

if TYPE_CHECKING:  # imported when watching: `citygw --help` and the other commands need no asyncio stack
    from gateway.feed_client import FeedClient, FeedMessage

__all__ = ["add_arguments", "parse_broker", "run_watch"]

RECONNECT_MAX_S = 30.0


def parse_broker(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT or [IPv6]:PORT → (host, port); ValueError saying what is wrong."""
    host, port = text, 1883
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"--broker {text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"--broker {text!r}: write [ADDRESS]:PORT")
            port_text = rest[1:]
            if not port_text.isdigit():
                raise ValueError(f"--broker {text!r}: port {port_text!r} is not a number")
            port = int(port_text)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text.isdigit():
            raise ValueError(f"--broker {text!r}: port {port_text!r} is not a number")
        port = int(port_text)
    if not host or not 0 < port < 65536:
        raise ValueError(f"--broker {text!r}: give HOST or HOST:PORT with a port between 1 and 65535")
    return host, port


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `citygw watch`."""
    p.add_argument("--broker", required=True, metavar="HOST[:PORT]", help="the MQTT broker (port 1883 by default)")
    p.add_argument("--gateway", action="append", default=[], metavar="ID",
                   help="a kit's gateway id (repeat for several; default: every kit under citygw/+)")
    p.add_argument("--prefix", action="append", default=[], metavar="TOPIC",
                   help="a kit's topic prefix, for kits with mqtt.feed.topic_prefix set ('+' allowed)")
    p.add_argument("--name", action="append", default=[], metavar="NAME",
                   help="only KPIs (and raw readings) of this name, e.g. pm2_5 or us_aqi (repeatable)")
    p.add_argument("--window", action="append", default=[], help="only KPIs of this window, e.g. 1h (repeatable)")
    p.add_argument("--raw", action="store_true", help="also show raw readings (kits with mqtt.feed.raw = true)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line: topic, kind, gateway, retained and the payload as published")
    p.add_argument("--count", type=int, default=None, help="exit after printing this many messages")
    p.add_argument("--duration", type=float, default=None, help="exit after this many seconds")
    p.add_argument("--username", default="", help="MQTT user name")
    p.add_argument("--password-env", default="", metavar="VAR", help="environment variable holding the password")
    p.add_argument("--password-file", type=Path, default=None, help="file holding the password")
    p.add_argument("--tls", action="store_true", help="connect with TLS (system CAs unless --ca-file)")
    p.add_argument("--ca-file", type=Path, default=None, help="CA certificate to verify the broker (implies --tls)")
    p.add_argument("--cert-file", type=Path, default=None, help="client certificate (TLS)")
    p.add_argument("--key-file", type=Path, default=None, help="client key (TLS)")
    p.add_argument("--insecure-skip-verify", action="store_true", help="TLS without verifying the broker")
    p.add_argument("--protocol", choices=["3.1.1", "5"], default="3.1.1", help="MQTT protocol version")


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


async def _watch(make_client: Callable[[], FeedClient], host: str, port: int, printer: _Printer) -> int:
    import asyncio

    import aiomqtt

    backoff = 1.0
    connected_once = False
    while True:
        try:
            async with make_client() as feed:
                if connected_once:
                    print(f"citygw watch: reconnected to {host}:{port}", file=sys.stderr, flush=True)
                connected_once, backoff = True, 1.0
                async for msg in feed.messages():
                    meta = feed.gateways.get(msg.prefix)
                    printer(msg, meta.gateway if meta else getattr(msg.data, "gateway", ""))
                    if printer.done:
                        return 0
        except aiomqtt.MqttError as exc:
            if not connected_once:
                print(f"citygw watch: cannot connect to the MQTT broker {host}:{port}: {exc} (check --broker, "
                      "--username/--password-env and --tls)", file=sys.stderr, flush=True)
                return 1
            print(f"citygw watch: connection to {host}:{port} lost: {exc}; retrying in {backoff:.0f} s",
                  file=sys.stderr, flush=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)


async def _main(make_client: Callable[[], FeedClient], host: str, port: int, printer: _Printer,
                duration: float | None) -> int:
    import asyncio

    task = asyncio.ensure_future(_watch(make_client, host, port, printer))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        return await asyncio.wait_for(task, duration) if duration is not None else await task
    except (asyncio.CancelledError, TimeoutError):
        return 0


def run_watch(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`citygw watch`: exit 0 on Ctrl-C, --count or --duration; 1 when the broker cannot be reached."""
    import asyncio

    from gateway.feed_client import FeedClient, TlsOptions
    from gateway.settings import ConfigError, read_secret

    try:
        host, port = parse_broker(args.broker)
        password = read_secret(args.password_env, args.password_file, "--password")
    except ValueError as exc:
        print(f"citygw watch: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"citygw watch: {exc}", file=sys.stderr)
        return 2
    tls = None
    if args.tls or args.ca_file or args.cert_file or args.insecure_skip_verify:
        tls = TlsOptions(args.ca_file, args.cert_file, args.key_file, args.insecure_skip_verify)
    client_id = f"citygw-watch-{time.time_ns() % 10**9}"

    def make_client() -> FeedClient:
        return FeedClient(host, port, gateways=args.gateway, prefixes=args.prefix, raw=args.raw,
                          username=args.username, password=password, tls=tls, protocol=args.protocol,
                          client_id=client_id)

    return asyncio.run(_main(make_client, host, port, _Printer(args, out), args.duration))
