"""What `citygw watch` and `citygw fleet` share: the broker options, the feed client they build, the reconnect loop
and running until a signal or a deadline."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # imported when running: `citygw --help` and the other commands need no asyncio stack
    from gateway.feed_client import FeedClient, FeedMessage

__all__ = ["add_broker_arguments", "client_factory", "follow", "parse_broker", "run_until_signal"]

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


def add_broker_arguments(p: argparse.ArgumentParser) -> None:
    """--broker, which kits, and how to log in: the options every feed subscriber command takes."""
    p.add_argument("--broker", required=True, metavar="HOST[:PORT]", help="the MQTT broker (port 1883 by default)")
    p.add_argument("--gateway", action="append", default=[], metavar="ID",
                   help="a kit's gateway id (repeat for several; default: every kit under citygw/+)")
    p.add_argument("--prefix", action="append", default=[], metavar="TOPIC",
                   help="a kit's topic prefix, for kits with mqtt.feed.topic_prefix set ('+' allowed)")
    p.add_argument("--username", default="", help="MQTT user name")
    p.add_argument("--password-env", default="", metavar="VAR", help="environment variable holding the password")
    p.add_argument("--password-file", type=Path, default=None, help="file holding the password")
    p.add_argument("--tls", action="store_true", help="connect with TLS (system CAs unless --ca-file)")
    p.add_argument("--ca-file", type=Path, default=None, help="CA certificate to verify the broker (implies --tls)")
    p.add_argument("--cert-file", type=Path, default=None, help="client certificate (TLS)")
    p.add_argument("--key-file", type=Path, default=None, help="client key (TLS)")
    p.add_argument("--insecure-skip-verify", action="store_true", help="TLS without verifying the broker")
    p.add_argument("--protocol", choices=["3.1.1", "5"], default="3.1.1", help="MQTT protocol version")


def client_factory(args: argparse.Namespace, role: str, raw: bool = False
                   ) -> tuple[str, int, Callable[[], FeedClient]]:
    """(host, port, a function making a fresh FeedClient) from the options; ValueError or ConfigError if bad."""
    from gateway.feed_client import FeedClient, TlsOptions
    from gateway.settings import read_secret

    host, port = parse_broker(args.broker)
    password = read_secret(args.password_env, args.password_file, "--password")
    tls = None
    if args.tls or args.ca_file or args.cert_file or args.insecure_skip_verify:
        tls = TlsOptions(args.ca_file, args.cert_file, args.key_file, args.insecure_skip_verify)
    client_id = f"citygw-{role}-{time.time_ns() % 10**9}"

    def make_client() -> FeedClient:
        return FeedClient(host, port, gateways=args.gateway, prefixes=args.prefix, raw=raw, username=args.username,
                          password=password, tls=tls, protocol=args.protocol, client_id=client_id)

    return host, port, make_client


async def follow(make_client: Callable[[], FeedClient], host: str, port: int, command: str,
                 on_message: Callable[[FeedClient, FeedMessage], bool], on_connection: Callable[[bool], None],
                 err: TextIO | None = None) -> int:
    """Feed every message to `on_message` (True: done, return 0), reconnecting with backoff after a loss;
    1 when the first connection fails."""
    import asyncio

    import aiomqtt

    err = err or sys.stderr  # looked up now: a test (or a caller) may have replaced sys.stderr since import
    backoff = 1.0
    connected_once = False
    while True:
        try:
            async with make_client() as feed:
                on_connection(True)
                connected_once, backoff = True, 1.0
                async for msg in feed.messages():
                    if on_message(feed, msg):
                        return 0
        except aiomqtt.MqttError as exc:
            on_connection(False)
            if not connected_once:
                print(f"citygw {command}: cannot connect to the MQTT broker {host}:{port}: {exc} (check --broker, "
                      "--username/--password-env and --tls)", file=err, flush=True)
                return 1
            print(f"citygw {command}: connection to {host}:{port} lost: {exc}; retrying in {backoff:.0f} s",
                  file=err, flush=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)


async def run_until_signal(main: Coroutine[Any, Any, int], duration: float | None) -> int:
    """Run `main` until it returns, SIGINT/SIGTERM, or `duration` seconds (both: 0)."""
    import asyncio

    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        return await asyncio.wait_for(task, duration) if duration is not None else await task
    except (asyncio.CancelledError, TimeoutError):
        return 0
