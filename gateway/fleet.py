"""`citygw fleet`: every kit of a city on one broker at a glance, built on the feed client (gateway/feed_client.py).

It subscribes to `<prefix>/status`, `/meta`, `/health` and the KPI feeds of every kit (citygw/+ by default) and
keeps one row per kit: online/offline (the kit's last will: the broker publishes `offline` once the kit's
keepalive × 1.5 passes without a packet, or at once when its connection closes), the health reasons, devices
up/down and the backlog (from the health document), and when its latest KPI window ended. It shows the rows as a
live terminal table, as JSON lines for scripts (`--json`), and with `--listen ADDR` as a web page
(gateway/fleet_page.py).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from gateway.feed_cli import add_broker_arguments, client_factory, follow, run_until_signal
from gateway.fleet_book import FleetBook, KitRow, ago, backlog_text, devices_text, kpi_time

if TYPE_CHECKING:  # imported when running: `citygw --help` needs no asyncio stack
    from gateway.feed_client import FeedClient, FeedMessage

__all__ = ["FleetBook", "KitRow", "add_arguments", "run_fleet"]  # the book and its rows: gateway/fleet_book.py


# -- text ------------------------------------------------------------------------------------------------------


def table(book: FleetBook, now: float | None = None) -> str:
    """The fleet as a plain-text table (the terminal view)."""
    doc_now = time.time() if now is None else now
    rows = book.rows()
    head = ("GATEWAY", "STATE", "HEALTH", "DEVICES", "BACKLOG", "LAST KPI")
    lines = [head]
    for r in rows:
        state = r.state + (f" {ago(doc_now - r.state_since)}" if r.state_since else "")
        health = "-" if r.healthy is None else "ok" if r.healthy else "; ".join(r.reasons)
        lines.append((r.gateway, state, health, devices_text(r), backlog_text(r), kpi_time(r)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    out = ["  ".join(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
           for line in lines]
    online = sum(r.state == "online" for r in rows)
    out.insert(0, f"citygw fleet: {len(rows)} kit(s), {online} online, {len(rows) - online} not online, "
                  f"{sum(r.healthy is False for r in rows)} unhealthy"
                  + ("" if book.connected else "  [not connected to the broker]"))
    return "\n".join(out)


# -- running ---------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `citygw fleet`."""
    add_broker_arguments(p)
    p.add_argument("--json", action="store_true",
                   help="print the fleet as one JSON document per line whenever it changes (for scripts)")
    p.add_argument("--listen", default="", metavar="ADDR",
                   help="also serve the fleet as a web page on HOST:PORT (and /fleet.json)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between redraws (default 1)")
    p.add_argument("--duration", type=float, default=None, help="exit after this many seconds")


async def _show(book: FleetBook, args: argparse.Namespace, out: TextIO) -> None:
    import asyncio

    shown = -1
    clear = out.isatty() and not args.json
    while True:
        if args.json:
            if book.changes != shown:
                shown = book.changes
                print(orjson.dumps(book.document()).decode(), file=out, flush=True)
        else:
            # The table's ages move every second, so the terminal view is redrawn each interval.
            print(("\x1b[H\x1b[2J" if clear else "") + table(book) + ("" if clear else "\n"), file=out, flush=True)
        await asyncio.sleep(args.interval)


async def _main(follow_kits: Coroutine[Any, Any, int], book: FleetBook, args: argparse.Namespace,
                out: TextIO) -> int:
    import asyncio

    show = asyncio.ensure_future(_show(book, args, out))
    try:
        return await run_until_signal(follow_kits, args.duration)
    finally:
        show.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await show


def run_fleet(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`citygw fleet`: exit 0 on Ctrl-C or --duration; 1 when the broker cannot be reached; 2 on bad options."""
    import asyncio

    from gateway.fleet_page import FleetPageServer
    from gateway.settings import ConfigError

    try:
        if args.interval <= 0:
            raise ValueError(f"--interval {args.interval}: give a positive number of seconds")
        host, port, make_client = client_factory(args, "fleet")
    except (ValueError, ConfigError) as exc:
        print(f"citygw fleet: {exc}", file=err)
        return 2
    book = FleetBook()

    def on_connection(up: bool) -> None:
        book.connected = up

    def on_message(feed: FeedClient, msg: FeedMessage) -> bool:
        meta = feed.gateways.get(msg.prefix)
        book.apply(msg, meta.gateway if meta else getattr(msg.data, "gateway", ""))
        book.rejected = feed.rejected
        return False

    page: FleetPageServer | None = None
    if args.listen:
        try:
            page = FleetPageServer(args.listen, book, broker=f"{host}:{port}").start()
        except (ValueError, OSError) as exc:
            print(f"citygw fleet: cannot listen on {args.listen!r}: {exc} (give a free HOST:PORT)", file=err)
            return 2
        print(f"citygw fleet: page at {page.url}", file=err, flush=True)
    try:
        return asyncio.run(_main(follow(make_client, host, port, "fleet", on_message, on_connection, err), book,
                                 args, out))
    finally:
        if page is not None:
            page.stop()
