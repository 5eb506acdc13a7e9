"""docs/feeds.md's MQTT section stays true: every example payload validates against the shipped schema of its
topic and parses with the feed client's models, and the topic table names every schema file that ships."""

from __future__ import annotations

import re

import orjson

from gateway.feed_client import parse_message
from tests.feeds.mqtt_feed_support import REPO, SCHEMA_DIR, validators


def _section() -> str:
    text = (REPO / "docs" / "feeds.md").read_text()
    start = text.index("## MQTT live feed")
    return text[start:text.index("\n## ", start + 1)]


def _kind(example: dict[str, object]) -> str:
    if "schema" in example:
        return "meta"
    if "healthy" in example:
        return "health"
    return "kpi" if "window" in example else "reading"


def test_every_example_payload_validates() -> None:
    check = validators()
    examples = [orjson.loads(m.group(1)) for m in re.finditer(r"```json\n(.*?)```", _section(), re.S)]
    kinds = [_kind(e) for e in examples]
    assert sorted(set(kinds)) == ["health", "kpi", "meta", "reading"]
    for example, kind in zip(examples, kinds, strict=True):
        errors = [e.message for e in check[kind].iter_errors(example)]
        assert not errors, (kind, errors)
        parse_message(f"citygw/plaza-mayor-01/{kind}", orjson.dumps(example), "citygw/plaza-mayor-01",
                      kind)  # type: ignore[arg-type]
    assert not list(check["status"].iter_errors("online")) and not list(check["status"].iter_errors("offline"))


def test_the_topic_table_names_every_schema_file() -> None:
    named = set(re.findall(r"`(\w+\.schema\.json)`", _section()))
    assert named == {p.name for p in SCHEMA_DIR.glob("*.schema.json")}
