"""gateway/feed_client.py on its own against a real Mosquitto: a bad payload is counted and skipped, never raised
into the caller's loop; a reader that falls behind loses messages only beyond its bounded queue, and counts them;
prefixes with '+' and several levels are matched."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
import paho.mqtt.client as mqtt
import pytest

from gateway.feed_client import FeedClient, FeedMessage, Kpi, match_prefix
from tests.servers import Mosquitto

S = 10**9


def _kpi(name: str, value: float) -> bytes:
    return orjson.dumps({"device_id": "d1", "name": name, "window": "1h", "start": 0, "end": 3600 * S,
                         "unit": "ug/m3", "value": value, "valid": True, "historical": False})


def _publish(port: int, messages: list[tuple[str, bytes]], retain: bool = True) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for info in [client.publish(topic, payload, qos=1, retain=retain) for topic, payload in messages]:
            info.wait_for_publish(timeout=10)
    finally:
        client.loop_stop()
        client.disconnect()


async def _until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_bad_payloads_are_counted_and_skipped(mosquitto: Mosquitto) -> None:
    prefix = f"city/zone{time.time_ns() % 10**9}/kit-1"  # a kit with its own multi-level topic_prefix
    messages = [
        (f"{prefix}/kpi/d1/broken/1h", b"{not json"),
        (f"{prefix}/kpi/d1/no_value/1h", orjson.dumps({"device_id": "d1", "name": "no_value"})),
        (f"{prefix}/status", b"sleeping"),
        (f"{prefix}/kpi/d1/pm2_5/1h", _kpi("pm2_5", 12.5)),  # last: one publisher's QoS 1 messages keep order
    ]

    async def run() -> tuple[list[FeedMessage], int]:
        got: list[FeedMessage] = []
        async with FeedClient("127.0.0.1", mosquitto.port, prefixes=["city/+/kit-1"]) as feed:
            await asyncio.to_thread(_publish, mosquitto.port, messages, False)  # subscribed: live messages
            async for msg in feed.messages():
                got.append(msg)
                if isinstance(msg.data, Kpi) and msg.data.name == "pm2_5":
                    return got, feed.rejected
        raise AssertionError("feed ended")

    got, rejected = asyncio.run(asyncio.wait_for(run(), 60))
    assert rejected == 3
    assert [(m.kind, m.prefix, m.retained) for m in got] == [("kpi", prefix, False)]
    data = got[0].data
    assert isinstance(data, Kpi) and data.value == 12.5 and data.gateway == "kit-1"


def test_a_reader_that_falls_behind_loses_only_what_overflows_its_queue_and_counts_it(mosquitto: Mosquitto) -> None:
    gw = f"slow{time.time_ns() % 10**9}"
    _publish(mosquitto.port, [(f"citygw/{gw}/kpi/d1/q{i}/1h", _kpi(f"q{i}", float(i))) for i in range(10)])

    async def run() -> tuple[list[str], int]:
        async with FeedClient("127.0.0.1", mosquitto.port, gateways=[gw], max_queued=3) as feed:
            # Not reading: the retained messages arrive meanwhile and fill the queue.
            await _until(lambda: feed.dropped == 7, 30, "7 messages beyond the queue of 3 counted")
            names = []
            async for kpi in feed.kpis():
                names.append(kpi.name)
                if len(names) == 3:
                    return names, feed.dropped
        raise AssertionError("feed ended")

    names, dropped = asyncio.run(asyncio.wait_for(run(), 60))
    assert dropped == 7
    assert len(set(names)) == 3


@pytest.mark.parametrize(("topic", "patterns", "expected"), [
    ("citygw/gw1/status", ["citygw/+"], ("citygw/gw1", "status")),
    ("citygw/gw1/meta", ["citygw/gw1"], ("citygw/gw1", "meta")),
    ("citygw/gw1/health", ["citygw/+"], ("citygw/gw1", "health")),
    ("citygw/gw1/kpi/dev/pm2_5/1h", ["citygw/+"], ("citygw/gw1", "kpi")),
    ("citygw/gw1/reading/dev/pm2_5", ["citygw/+"], ("citygw/gw1", "reading")),
    ("a/b/c/kpi/dev/kpi/1h", ["a/+/c"], ("a/b/c", "kpi")),  # a series named "kpi" is still a KPI of a/b/c
    ("citygw/gw2/status", ["citygw/gw1"], None),
    ("citygw/gw1/kpi/dev/pm2_5", ["citygw/+"], None),  # a level short: not a feed topic
    ("citygw/gw1/other", ["citygw/+"], None),
])
def test_match_prefix(topic: str, patterns: list[str], expected: tuple[str, str] | None) -> None:
    assert match_prefix(topic, patterns) == expected
