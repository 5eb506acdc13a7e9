"""RouteTable: one message -> readings or a rejection, the same for a str topic and its UTF-8 bytes."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from devices import json_mapping
from devices.reading import DecodeContext, Reading
from devices.registry import get_kind
from ingest.routes import RETAINED_REASON, Rejected, Route, RouteTable

TS = 1_700_000_000_000_000_000


def _table(cache_max: int = 50_000) -> RouteTable:
    return RouteTable([Route("bk/+/json", get_kind("json"), device_id="{1}"),
                       Route("$share/g/tas/+/SENSOR", get_kind("tasmota"), device_id="{1}")], cache_max=cache_max)


@pytest.mark.parametrize("topic", ["bk/d1/json", b"bk/d1/json"])
def test_a_good_payload_gives_its_readings_and_names_the_device_kind(topic: str | bytes) -> None:
    table = _table()
    out = table.decode(topic, json_mapping.encode("d1", TS, {"pm2_5": 3.0}), False, TS)
    assert not isinstance(out, Rejected)
    assert [(r.device_id, r.value) for r in out] == [("d1", 3.0)]
    assert table.device_kinds == {"d1": "json"}


def test_shared_subscription_filters_match_without_their_prefix() -> None:
    route, device = _table().lookup("tas/plug7/SENSOR")
    assert route is not None and route.kind.name == "tasmota" and device == "plug7"


def test_each_refusal_names_its_device_reason_and_payload() -> None:
    table = _table()
    assert table.decode("nowhere", b"{}", False, TS) == Rejected("", "no route matches topic 'nowhere'")
    bad_utf8 = table.decode(b"bk/\xff/json", b"{}", False, TS)
    assert isinstance(bad_utf8, Rejected) and bad_utf8.reason.startswith("topic is not valid UTF-8: ")
    assert table.decode("bk/d2/json", b"{}", True, TS) == Rejected("d2", f"{RETAINED_REASON} (topic bk/d2/json)")
    bad = table.decode("bk/d3/json", b"{not json", False, TS)
    assert isinstance(bad, Rejected) and bad.device_id == "d3" and bad.payload == b"{not json"
    assert bad.reason.startswith("json payload on bk/d3/json: ")


def test_a_decoder_bug_is_logged_and_rejected(caplog: pytest.LogCaptureFixture) -> None:
    def broken(payload: bytes, ctx: DecodeContext) -> list[Reading]:
        raise KeyError("oops")

    table = RouteTable([Route("x/+", dataclasses.replace(get_kind("json"), decode=broken), device_id="{1}")])
    with caplog.at_level(logging.ERROR, logger="citygw.mqtt"):
        out = table.decode("x/d4", b"{}", False, TS)
    assert out == Rejected("d4", "decoder error KeyError: 'oops'", b"{}")
    assert "decoder json raised KeyError" in caplog.text


def test_the_topic_cache_is_bounded() -> None:
    table = _table(cache_max=2)
    for i in range(5):
        table.lookup(f"bk/d{i}/json")
    assert table.cache_clears == 2
