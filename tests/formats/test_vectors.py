"""Telegraf-style vector folders: tests/formats/vectors/<format>/<case>/ holds `context.json` (topic, route
device id, options, tags, receipt time, and the vector's source), `input.json` or `input.txt` (the payload
bytes), and either `expected.json` (the readings, written by hand from the source) or `error.txt` (a substring
of the DecodeError reason)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from devices.reading import DecodeContext, DecodeError
from devices.registry import get_kind

VECTORS = Path(__file__).parent / "vectors"
CASES = sorted(p for p in VECTORS.glob("*/*") if p.is_dir())


def _load(case: Path) -> tuple[str, bytes, DecodeContext]:
    ctx = json.loads((case / "context.json").read_text(encoding="utf-8"))
    assert ctx.get("source"), f"{case}: every vector names its source"
    (payload_file,) = list(case.glob("input.*"))
    context = DecodeContext(
        device_id=ctx["device_id"],
        received_ns=ctx["received_ns"],
        topic=ctx["topic"],
        tags=ctx["tags"],
        options=ctx["options"],
    )
    return case.parent.name, payload_file.read_bytes(), context


def _key(reading: dict[str, Any]) -> tuple[Any, ...]:
    return (reading["device_id"], reading["ts"], reading["quantity"], sorted(reading.get("tags", {}).items()))


def test_every_format_has_vectors() -> None:
    """Each of this package's formats has at least one accepted and one rejected vector."""
    for fmt in ("ttn_v3", "tasmota", "zigbee2mqtt", "airrohr", "telraam", "line_protocol"):
        cases = [c for c in CASES if c.parent.name == fmt]
        assert any((c / "expected.json").exists() for c in cases), fmt
        assert any((c / "error.txt").exists() for c in cases), fmt


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_vector(case: Path) -> None:
    """Decoding the input gives exactly the expected readings, or a DecodeError with the expected reason."""
    fmt, payload, ctx = _load(case)
    kind = get_kind(fmt)
    assert kind.link == "mqtt"
    error_file = case / "error.txt"
    if error_file.exists():
        with pytest.raises(DecodeError) as info:
            kind.decode(payload, ctx)
        assert error_file.read_text(encoding="utf-8").strip() in info.value.reason
        return
    expected = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    got = [r.to_dict() for r in kind.decode(payload, ctx)]
    assert len(got) == len(expected), [(g["quantity"], g["value"]) for g in got]
    for want, have in zip(sorted(expected, key=_key), sorted(got, key=_key), strict=True):
        assert _key(have) == _key(want)
        assert have["unit"] == want["unit"], want["quantity"]
        assert math.isclose(have["value"], want["value"], rel_tol=1e-9, abs_tol=1e-9), (want, have)
        assert isinstance(have["value"], float)
