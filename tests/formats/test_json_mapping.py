"""The generic JSON mapping's hot path builds the same Reading objects as the Reading constructor."""

from __future__ import annotations

import pickle

import orjson

from devices import json_mapping
from devices.reading import DecodeContext, Reading

T0 = 1_767_225_600_000_000_000


def test_the_fast_reading_maker_is_in_use_and_makes_equal_readings() -> None:
    # If Reading's fields change, the maker falls back to the constructor; this says so instead of slowing silently.
    assert json_mapping._new_reading is not Reading
    made = json_mapping._new_reading("dev-1", "pm2_5", 3.5, "ug/m3", T0, {"site": "a"}, "good")
    plain = Reading("dev-1", "pm2_5", 3.5, "ug/m3", T0, {"site": "a"})
    assert made == plain and repr(made) == repr(plain) and type(made) is Reading
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
