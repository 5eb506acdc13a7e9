"""The sink's HTTP requests checked by a real validating server: Prism (`prism mock --errors`) on the ETSI NGSI-LD
OpenAPI. Every entity kind the sink builds is accepted; requests that break the spec are refused (so the check
can fail), and the sink classifies that refusal."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.sinks.base import Action, SinkError
from gateway.sinks.ngsi_ld import UPSERT_PATH, NgsiLdSink
from gateway.sinks.ngsi_ld_mapping import EntityMapper
from tests.feeds.ngsi_ld_samples import PLACES, journal_entries, sample_points
from tests.feeds.prism import Prism


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    """Prism validating the NGSI-LD upsert operation."""
    server = Prism(tmp_path_factory.mktemp("prism"))
    try:
        server.start()
        yield server
    finally:
        server.close()


def _post(prism: Prism, body: Any, content_type: str = "application/ld+json", query: str = "options=update") -> int:
    url = prism.url + UPSERT_PATH.split("?")[0] + "?" + query
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_every_entity_the_sink_sends_passes_prism(prism: Prism, tmp_path: Path) -> None:
    sink = NgsiLdSink("ngsi-ld-prism", prism.url, EntityMapper("kit-7", PLACES.get), tenant="city",
                      token="t0ken", batch_size=10)
    try:
        before = len(prism.violations())
        sink.write(journal_entries(tmp_path, sample_points()))  # raises SinkError on any 4xx
        assert prism.violations()[before:] == []
        assert sink.requests == 2 and sink.entities_sent == 16  # 16 entities, at most 10 per request
    finally:
        sink.close()


def test_prism_refuses_requests_that_break_the_spec(prism: Prism, tmp_path: Path) -> None:
    sink = NgsiLdSink("ngsi-ld-prism", prism.url, EntityMapper("kit-7", PLACES.get), batch_size=100)
    entity = json.loads(sink.body(journal_entries(tmp_path, sample_points()[:1])[0]))
    assert _post(prism, [entity]) == 201
    no_context = {k: v for k, v in entity.items() if k != "@context"}
    bad_time = {**entity, "pm1": {**entity["pm1"], "observedAt": "yesterday"}}
    bad_type = {**entity, "pm1": {**entity["pm1"], "type": "Measurement"}}
    bad_geo = {**entity, "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": "0,0"}}}
    for body in ([no_context], [bad_time], [bad_type], [bad_geo], entity):
        assert _post(prism, body) == 400, body
    assert _post(prism, [entity], query="options=merge") == 400
    assert _post(prism, [entity], content_type="text/plain") >= 400


def test_a_request_prism_refuses_is_classified_for_the_core(prism: Prism, tmp_path: Path) -> None:
    # Entity ids with spaces are not URIs: Prism answers 400, which the core splits down to the bad entry.
    sink = NgsiLdSink("ngsi-ld-prism", prism.url, EntityMapper("kit 7", PLACES.get, entity_prefix="bad id "))
    try:
        with pytest.raises(SinkError) as caught:
            sink.write(journal_entries(tmp_path, sample_points()[:2]))
        assert caught.value.action is Action.SPLIT and "HTTP 400" in caught.value.reason
    finally:
        sink.close()
