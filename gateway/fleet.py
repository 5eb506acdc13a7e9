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
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from gateway.feed_cli import add_broker_arguments, client_factory, follow, run_until_signal

if TYPE_CHECKING:  # imported when running: `citygw --help` needs no asyncio stack
    from gateway.feed_client import FeedClient, FeedMessage

__all__ = ["FleetBook", "KitRow", "add_arguments", "run_fleet"]

MAX_KITS = 10_000  # a city's fleet is hundreds; beyond this, kits are not added (counted in `unlisted`)


@dataclass(slots=True)
class KitRow:
    """What the fleet view knows about one kit."""

    gateway: str
    prefix: str
    state: str = "unknown"  # online | offline | unknown (no status seen yet)
    state_since: float | None = None  # Unix time the state was seen to change (None: retained, from before)
    healthy: bool | None = None
    reasons: list[str] = field(default_factory=list)
    health_at: float | None = None  # when the kit took its health verdict (Unix time)
    devices_up: int | None = None
    devices_down: int | None = None
    devices_waiting: int | None = None
    backlog_entries: int | None = None
    backlog_oldest_s: float | None = None
    last_kpi_end_ns: int | None = None  # end of the newest KPI window the kit published
    last_kpi_at: float | None = None  # when that KPI arrived here (Unix time; None: retained, from before)
    version: str = ""
    configured_devices: int | None = None


class FleetBook:
    """The rows, fed by the MQTT task and read by the terminal, JSON and HTTP outputs (hence the lock)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._rows: dict[str, KitRow] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self.changes = 0  # bumped on every change (outputs redraw only when it moved)
        self.unlisted = 0  # messages of kits beyond MAX_KITS
        self.rejected = 0  # feed payloads that did not parse (the feed client counts and logs them)
        self.connected = False

    def apply(self, msg: FeedMessage, gateway: str) -> None:
        """Fold one feed message into its kit's row."""
        from gateway.feed_client import Health, Kpi, Meta, Status

        data = msg.data
        now = self._clock()
        with self._lock:
            row = self._rows.get(msg.prefix)
            if row is None:
                if len(self._rows) >= MAX_KITS:
                    self.unlisted += 1
                    return
                row = self._rows[msg.prefix] = KitRow(gateway or msg.prefix.rsplit("/", 1)[-1], msg.prefix)
            if isinstance(data, Status):
                if data.state != row.state:
                    row.state, row.state_since = data.state, None if msg.retained else now
            elif isinstance(data, Health):
                row.healthy, row.reasons, row.health_at = data.healthy, list(data.reasons), data.at
                if data.devices is not None:
                    row.devices_up = data.devices.get("up")
                    row.devices_down = data.devices.get("down")
                    row.devices_waiting = data.devices.get("waiting")
                if data.backlog is not None:
                    row.backlog_entries = int(data.backlog.get("entries", 0))
                    row.backlog_oldest_s = data.backlog.get("oldest_s")
            elif isinstance(data, Meta):
                row.gateway, row.version, row.configured_devices = data.gateway, data.version, len(data.devices)
            elif isinstance(data, Kpi):
                if row.last_kpi_end_ns is None or data.end > row.last_kpi_end_ns:
                    row.last_kpi_end_ns = data.end
                if not msg.retained:
                    row.last_kpi_at = now
            self.changes += 1

    def rows(self) -> list[KitRow]:
        """Copies of the rows: offline kits first, then unhealthy ones, then by gateway id."""
        with self._lock:
            rows = [KitRow(**asdict(r)) for r in self._rows.values()]
        return sorted(rows, key=lambda r: (r.state != "offline", r.healthy is not False, r.gateway))

    def document(self) -> dict[str, Any]:
        """The fleet as one JSON-able document (`--json`, `/fleet.json`)."""
        rows = self.rows()
        return {
            "at": round(self._clock(), 3),
            "connected": self.connected,
            "kits": len(rows),
            "online": sum(r.state == "online" for r in rows),
            "offline": sum(r.state == "offline" for r in rows),
            "unhealthy": sum(r.healthy is False for r in rows),
            "unlisted_messages": self.unlisted,
            "gateways": [asdict(r) for r in rows],
        }


# -- text ------------------------------------------------------------------------------------------------------


def ago(seconds: float | None) -> str:
    """A short age: 4s, 3m, 2h, 5d; '-' when unknown."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def kpi_time(row: KitRow) -> str:
    """When the kit's newest KPI window ended, in UTC."""
    if row.last_kpi_end_ns is None:
        return "-"
    return datetime.fromtimestamp(row.last_kpi_end_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def devices_text(row: KitRow) -> str:
    """'3 up 1 down' (and waiting ones), '-' when the kit does not publish the counts."""
    if row.devices_up is None:
        return "-"
    text = f"{row.devices_up} up {row.devices_down or 0} down"
    return text + (f" {row.devices_waiting} waiting" if row.devices_waiting else "")


def backlog_text(row: KitRow) -> str:
    """'0' or '1200 (oldest 35s)'."""
    if row.backlog_entries is None:
        return "-"
    if not row.backlog_entries:
        return "0"
    return f"{row.backlog_entries} (oldest {ago(row.backlog_oldest_s)})"


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
