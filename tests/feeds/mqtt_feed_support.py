"""Shared tools of the MQTT feed tests: the shipped JSON Schemas, a gateway config, and a FeedClient running on
its own thread (the subscriber a city platform would run), reconnecting like `citygw watch`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt
from jsonschema import Draft202012Validator

from devices.reading import Reading
from gateway.feed_client import FeedClient, FeedMessage

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "schemas" / "feed"
S = 10**9


def validators() -> dict[str, Draft202012Validator]:
    """One validator per message kind, from the schema files shipped in schemas/feed/."""
    out = {}
    for kind in ("kpi", "reading", "status", "meta", "health"):
        schema = json.loads((SCHEMA_DIR / f"{kind}.schema.json").read_text())
        Draft202012Validator.check_schema(schema)
        out[kind] = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return out


def instance(msg: FeedMessage) -> Any:
    """The payload as a schema instance: JSON decoded, the status topic's plain text as a string."""
    return msg.payload.decode() if msg.kind == "status" else json.loads(msg.payload)


def feed_config(tmp: Path, gw_id: str, port: int, *, feed: str = "", windows: str = '["2s"]', grace: str = "1s",
                extra: str = "") -> Path:
    """A kit that reads nothing by itself (tests hand readings to its pipeline) and publishes the feed."""
    text = f"""
[gateway]
id = "{gw_id}"
data_dir = "{tmp / 'data'}"
status_listen = ""
lat = 40.4168
lon = -3.7038

[aggregation]
windows = {windows}
grace = "{grace}"
min_coverage = 0.0

[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_max = "1s"

[mqtt.feed]
{feed}

[local_store]
enabled = true
{extra}
"""
    path = tmp / f"{gw_id}.toml"
    path.write_text(text)
    return path


def reading(device: str, quantity: str, value: float, ts: int, unit: str) -> Reading:
    """A reading as a transport would hand it to the pipeline."""
    return Reading(device_id=device, quantity=quantity, value=value, unit=unit, ts=ts)


class Collector:
    """A FeedClient on its own thread and event loop, collecting every message; reconnects after a broker outage.

    With `persistent`, the broker keeps the subscription and queues QoS 1 messages while the client is away.
    """

    def __init__(self, port: int, **kwargs: Any) -> None:
        self.port = port
        self.kwargs = kwargs
        self.messages: list[FeedMessage] = []
        self.arrived_ns: list[int] = []  # wall time each message arrived, parallel to `messages`
        self.connections = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feed-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._collect())
        self._ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    async def _collect(self) -> None:
        while True:
            try:
                async with FeedClient("127.0.0.1", self.port, **self.kwargs) as feed:
                    self.connections += 1
                    async for msg in feed.messages():
                        with self._lock:
                            self.messages.append(msg)
                            self.arrived_ns.append(time.time_ns())
                            self.rejected = feed.rejected
            except aiomqtt.MqttError:
                await asyncio.sleep(0.3)

    def snapshot(self, kind: str | None = None) -> list[FeedMessage]:
        """What arrived so far (of one kind)."""
        with self._lock:
            return [m for m in self.messages if kind is None or m.kind == kind]

    def close(self) -> None:
        """Stop the client and its thread."""
        self._ready.wait(5)
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout=10)
