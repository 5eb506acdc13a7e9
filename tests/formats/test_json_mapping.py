"""The generic JSON mapping's hot path builds the same Reading objects as the Reading constructor."""

from __future__ import annotations

import pickle

import orjson

from devices import json_mapping
from devices.reading import DecodeContext, Reading

T0 = 1_767_225_600_000_000_000


def test_decoded_readings_are_readings_in_the_field_order_the_hot_loops_unpack() -> None:
    # The decoder builds its readings with tuple.__new__, and the per-reading loops (validation, windows, the
    # journal's packs) unpack them by position: a reordered field must fail here, not swap values silently.
    assert Reading._fields == ("device_id", "quantity", "value", "unit", "ts", "tags", "quality")
    payload = orjson.dumps({"device_id": "dev-1", "ts": T0, "values": {"pm2_5": 3.5}})
    (made,) = json_mapping.decode(payload, DecodeContext(received_ns=T0, tags={"site": "a"}))
    plain = Reading("dev-1", "pm2_5", 3.5, "ug/m3", T0, {"site": "a"})
    assert made == plain and repr(made) == repr(plain) and type(made) is Reading
    assert (made.device_id, made.value, made.ts, made.tags, made.quality) == ("dev-1", 3.5, T0, {"site": "a"}, "good")
    assert pickle.loads(pickle.dumps(made)) == plain


def test_canonical_and_mapped_payloads_decode_to_constructed_readings() -> None:
    ctx = DecodeContext(received_ns=T0, tags={"site": "plaza"}, options={})
    payload = orjson.dumps({"device_id": "d1", "ts": T0, "values": {"pm2_5": 4.25, "no2": 12},
                            "units": {"no2": "ug/m3"}})
    assert json_mapping.decode(payload, ctx) == [Reading("d1", "pm2_5", 4.25, "ug/m3", T0, {"site": "plaza"}),
                                                 Reading("d1", "no2", 12.0, "ug/m3", T0, {"site": "plaza"})]
    mapped = DecodeContext(device_id="d2", received_ns=T0, options={
        "fields": [{"path": "air.t", "quantity": "temperature", "scale": 0.1}]})
    assert json_mapping.decode(b'{"air": {"t": 215}}', mapped) == [Reading("d2", "temperature", 21.5, "degC", T0, {})]
