"""The fleet view's model: one row per kit folded from the feed's messages, and the short texts every output
(terminal table, JSON lines, web page) shows of a row. Used by `citygw fleet` (gateway/fleet.py) and its page
(gateway/fleet_page.py), which import it and not each other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.feed_client import FeedMessage

__all__ = ["MAX_KITS", "FleetBook", "KitRow", "ago", "backlog_text", "devices_text", "kpi_time"]

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
