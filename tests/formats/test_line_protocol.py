"""InfluxDB line protocol: parsing with the escaping rules of reference §9e, field typing, mapping, rejections."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import line_protocol
from devices.line_protocol import Point, format_line, parse
from devices.reading import DecodeContext, DecodeError

RX = 1_700_000_000_000_000_000


def _ctx(**options: object) -> DecodeContext:
    return DecodeContext(device_id="route-dev", received_ns=RX, topic="influx/x", options=options)


# (line, measurement, tags, fields, timestamp): escaping cases from the InfluxDB v2 "special characters" rules
# (reference §9e), written out by hand.
PARSE_CASES = [
    ("weather,location=us-midwest temperature=82 1465839830100400200",
     "weather", {"location": "us-midwest"}, {"temperature": 82.0}, 1465839830100400200),
    ('myMeasurement,tag1=value1,tag2=value2 fieldKey="fieldValue" 1556813561098000000',
     "myMeasurement", {"tag1": "value1", "tag2": "value2"}, {"fieldKey": "fieldValue"}, 1556813561098000000),
    (r"my\ meas\,urement f=1", "my meas,urement", {}, {"f": 1.0}, None),
    (r"m=eq f=1", "m=eq", {}, {"f": 1.0}, None),  # '=' needs no escape in a measurement
    (r"m,t\ k\,1\=2=v\ a\,l\=ue f=1", "m", {"t k,1=2": "v a,l=ue"}, {"f": 1.0}, None),
    (r"m f\ k\,e\=y=2i", "m", {}, {"f k,e=y": 2}, None),
    ('m s="a \\"quoted\\" \\\\ backslash, comma = equals"',
     "m", {}, {"s": 'a "quoted" \\ backslash, comma = equals'}, None),
    (r"my\Measurement f=1", "my\\Measurement", {}, {"f": 1.0}, None),  # lone backslash is literal
    (r"my\\Measurement f=1", "my\\Measurement", {}, {"f": 1.0}, None),  # \\ is one backslash
    (r"my\\\Measurement f=1", "my\\\\Measurement", {}, {"f": 1.0}, None),
    ('m s="unicode ✓ ñ 温度",t=T,u=F,v=true,w=FALSE', "m", {}, {"s": "unicode ✓ ñ 温度", "t": True,
                                                             "u": False, "v": True, "w": False}, None),
    ("m,city=Málaga,名前=値 f=-1.5e3,g=.5,h=+3,i=-9223372036854775808i,u=18446744073709551615u -42",
     "m", {"city": "Málaga", "名前": "値"},
     {"f": -1500.0, "g": 0.5, "h": 3.0, "i": -(2**63), "u": 2**64 - 1}, -42),
    ('m s="line one\nline two" 5', "m", {}, {"s": "line one\nline two"}, 5),
    ("m f=1 7\r", "m", {}, {"f": 1.0}, 7),
]


@pytest.mark.parametrize(("line", "measurement", "tags", "fields", "ts"), PARSE_CASES)
def test_parse_escaping(line: str, measurement: str, tags: dict, fields: dict, ts: int | None) -> None:
    """Each escaping / typing case parses to the hand-written point."""
    (point,) = parse(line)
    assert point.measurement == measurement
    assert point.tags == tags
    assert point.fields == fields
    assert [type(v) for v in point.fields.values()] == [type(v) for v in fields.values()]
    assert point.timestamp == ts


def test_parse_multiline_comments_and_line_numbers() -> None:
    """Blank lines and comments are skipped; each point knows its line (strings may span lines)."""
    text = '# header\n\na f=1\nb s="x\ny" 2\n   \nc g=3i\n'
    points = parse(text)
    assert [(p.measurement, p.line) for p in points] == [("a", 3), ("b", 4), ("c", 7)]


REJECTIONS = [
    ("weather temperature", "line 1: expected '=' after field key 'temperature'"),
    ("weather", "line 1: expected a space before the field set"),
    ("weather ", "line 1: empty field key"),
    ("weather,location temperature=82", "expected '=' after tag key 'location'"),
    ("weather,location= temperature=82", "empty tag value of 'location'"),
    ("weather,=x temperature=82", "empty tag key"),
    (",t=1 f=1", "empty measurement"),
    ("w,t=a=b f=1", "unescaped '=' in the value of tag 't'"),
    ('w s="open', "unterminated string field value"),
    ("w f=abc", "invalid field value 'abc'"),
    ("w f=NaN", "invalid field value 'NaN'"),
    ("w f=inf", "invalid field value 'inf'"),
    ("w f=1_000", "invalid field value '1_000'"),
    ("w f=", "empty field value"),
    ("w f=1,", "empty field key"),
    ("w f=9223372036854775808i", "out of the int64 range"),
    ("w f=-1u", "invalid field value '-1u'"),
    ("w f=18446744073709551616u", "out of the uint64 range"),
    ("w f=1e999", "overflows"),
    ("w f=1 12.5", "timestamp '12.5' is not an integer"),
    ("w f=1 99999999999999999999", "timestamp 99999999999999999999 is out of the int64 range"),
    ("w f=1 1 2", "unexpected '2'"),
    ("ok f=1\nok f=2\nbad", "line 3:"),
]


@pytest.mark.parametrize(("text", "reason"), REJECTIONS)
def test_rejections_name_line_and_reason(text: str, reason: str) -> None:
    """Malformed lines raise DecodeError with the line number and which rule failed."""
    with pytest.raises(DecodeError) as info:
        line_protocol.decode(text.encode(), _ctx())
    assert reason in info.value.reason
    assert info.value.reason.startswith("line ")


def test_decode_maps_vocabulary_names_and_option_fields() -> None:
    """Vocabulary field keys map directly; `fields` maps others by measurement.field or field; rest skipped."""
    text = (
        "air,device_id=kit-1,site=plaza pm2_5=12.5,rh=40,pm10=20i,label=\"x\",ok=t 1700000000000\n"
        "noise,host=mic-2 leq=61.2,count=3i 1700000001000\n"
    )
    ctx = _ctx(precision="ms", fields={"air.rh": "relative_humidity", "leq": {"quantity": "noise_laeq"}})
    readings = line_protocol.decode(text.encode(), ctx)
    got = {(r.device_id, r.quantity, r.value, r.unit, r.ts) for r in readings}
    assert got == {
        ("kit-1", "pm2_5", 12.5, "ug/m3", 1_700_000_000_000_000_000),
        ("kit-1", "relative_humidity", 40.0, "%", 1_700_000_000_000_000_000),
        ("kit-1", "pm10", 20.0, "ug/m3", 1_700_000_000_000_000_000),
        ("mic-2", "noise_laeq", 61.2, "dBA", 1_700_000_001_000_000_000),
    }
    air = next(r for r in readings if r.quantity == "pm2_5")
    assert dict(air.tags) == {"measurement": "air", "site": "plaza"}  # device tag removed


def test_device_tag_option_route_fallback_and_receipt_time() -> None:
    """`device_tag` picks the tag; without one the route id is used; no timestamp → receipt time."""
    (r,) = line_protocol.decode(b"m,station=st-9 temperature=1.5", _ctx(device_tag="station"))
    assert (r.device_id, r.ts) == ("st-9", RX)
    (r,) = line_protocol.decode(b"m,other=x temperature=1.5", _ctx())
    assert r.device_id == "route-dev"
    with pytest.raises(DecodeError, match="no device_id or host tag"):
        line_protocol.decode(b"m temperature=1.5", DecodeContext(received_ns=RX))


@pytest.mark.parametrize(
    ("payload", "options", "reason"),
    [
        (b"m temperature=1", {"precision": "minutes"}, "option 'precision'"),
        (b"m temperature=1", {"fields": {"x": "not_a_quantity"}}, "unknown quantity"),
        (b"m temperature=1", {"device_tag": 5}, "option 'device_tag'"),
        (b"m label=\"only strings\",flag=true", {}, "no numeric field maps"),
        (b"m unknown_field=1", {}, "no numeric field maps"),
        (b"\n# only a comment\n", {}, "no line-protocol points"),
        (b"m temperature=1 \xff", {}, "not UTF-8"),
        (b"m temperature=1 1717000000000000000", {"precision": "s"}, "in s overflows int64 ns"),
        (b"m temperature=1e308", {"fields": {"temperature": {"quantity": "temperature", "scale": 10}}},
         "not a finite number"),
    ],
)
def test_decode_rejections(payload: bytes, options: dict, reason: str) -> None:
    """Bad options, payloads with nothing mapped, and non-UTF-8 bytes are DecodeErrors."""
    with pytest.raises(DecodeError, match=reason):
        line_protocol.decode(payload, _ctx(**options))


_key_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n\r"), min_size=1,
    max_size=12,
)
_field_value = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(
    measurement=_key_text.filter(lambda m: not m.lstrip(" ").startswith("#") and m.strip(" ")),
    tags=st.dictionaries(_key_text, _key_text, max_size=4),
    fields=st.dictionaries(_key_text, _field_value, min_size=1, max_size=5),
    ts=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_format_then_parse_round_trip(
    measurement: str, tags: dict[str, str], fields: dict, ts: int | None
) -> None:
    """Any point written with the escaping rules parses back to itself (keys, values, types, timestamp)."""
    line = format_line(measurement, tags, fields, ts)
    (point,) = parse(line)
    assert point == Point(measurement, dict(sorted(tags.items())), fields, ts, line=1)
    for key, value in fields.items():
        assert type(point.fields[key]) is type(value)
        if isinstance(value, float):
            assert math.copysign(1, point.fields[key]) == math.copysign(1, value)  # type: ignore[arg-type]


def test_encode_is_decodable() -> None:
    """The simulator encoder produces a line the decoder reads back exactly."""
    payload = line_protocol.encode("kit 1,a", 1_700_000_000_123_456_789, {"pm2_5": 7.25, "noise_laeq": 55.5})
    readings = line_protocol.decode(payload, DecodeContext(received_ns=RX))
    assert {(r.device_id, r.quantity, r.value, r.ts) for r in readings} == {
        ("kit 1,a", "pm2_5", 7.25, 1_700_000_000_123_456_789),
        ("kit 1,a", "noise_laeq", 55.5, 1_700_000_000_123_456_789),
    }
