"""Telraam reports: shapes (report, API reply, snapshot GeoJSON), uptime handling, ids, rejections.

Field meanings follow reference §7 (Telraam API: counts already divided by uptime; -1 for the id not asked)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from devices import telraam
from devices.reading import DecodeContext, DecodeError

RX = 1_700_000_000_000_000_000
HOUR = 1_604_041_200_000_000_000  # 2020-10-30T07:00:00Z (the telraam-rs test asserts 1604041200 s)


def _report(**over: Any) -> dict[str, Any]:
    report = {"instance_id": -1, "segment_id": 348917, "date": "2020-10-30T07:00:00.000Z", "uptime": 0.5,
              "heavy": 10.0, "car": 100.0, "bike": 20.0, "pedestrian": 8.0, "v85": 31.5}
    report.update(over)
    return report


def _decode(doc: Any, **kw: Any) -> list[Any]:
    payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return telraam.decode(payload, DecodeContext(received_ns=RX, topic="telraam/x", **kw))


def _values(readings: list[Any]) -> dict[str, float]:
    return {r.quantity: r.value for r in readings}


def test_extrapolated_by_default_and_de_extrapolate_option() -> None:
    """Counts are kept as Telraam extrapolated them; de_extrapolate multiplies by uptime (cars seen)."""
    assert _values(_decode(_report())) == {
        "heavy_vehicle_count": 10.0, "car_count": 100.0, "bike_count": 20.0, "pedestrian_count": 8.0,
        "vehicle_count": 110.0, "speed_v85": 31.5, "uptime_fraction": 0.5}
    assert _values(_decode(_report(), options={"de_extrapolate": True})) == {
        "heavy_vehicle_count": 5.0, "car_count": 50.0, "bike_count": 10.0, "pedestrian_count": 4.0,
        "vehicle_count": 55.0, "speed_v85": 31.5, "uptime_fraction": 0.5}


def test_directions_summed_when_total_absent() -> None:
    """Without `car`, car_lft + car_rgt is the total; vehicle_count needs both car and heavy."""
    doc = _report(car=None, car_lft=30.0, car_rgt=12.5, heavy=None)
    values = _values(_decode(doc))
    assert values["car_count"] == 42.5
    assert "vehicle_count" not in values and "heavy_vehicle_count" not in values


def test_ids_device_id_and_tags() -> None:
    """segment_id gives telraam-<id>; instance reports give telraam-instance-<id>; -1 ids are not tags."""
    (r, *_) = _decode(_report(), tags={"city": "leuven"})
    assert (r.device_id, dict(r.tags)) == ("telraam-348917", {"city": "leuven", "segment_id": "348917"})
    (r, *_) = _decode(_report(segment_id=-1, instance_id=1692))
    assert (r.device_id, dict(r.tags)) == ("telraam-instance-1692", {"instance_id": "1692"})
    (r, *_) = _decode(_report(), device_id="cam-1")
    assert r.device_id == "cam-1"
    assert r.ts == HOUR


def test_uptime_zero_and_min_uptime_skip_reports() -> None:
    """A report with uptime 0 (not counting) or at/below min_uptime is skipped; others still decode."""
    doc = {"report": [_report(uptime=0.0, car=0.0, heavy=0.0),
                      _report(date="2020-10-30T08:00:00Z", uptime=0.2),
                      _report(date="2020-10-30T09:00:00Z", uptime=0.8)]}
    readings = _decode(doc, options={"min_uptime": 0.25})
    assert {r.ts for r in readings} == {HOUR + 2 * 3_600_000_000_000}
    with pytest.raises(DecodeError, match=r"no usable report \(report\[0\]: uptime 0.0 <= 0.25"):
        _decode({"report": [_report(uptime=0.0), _report(uptime=0.1)]}, options={"min_uptime": 0.25})


def test_live_snapshot_geojson() -> None:
    """traffic_snapshot_live features: empty strings mean no current data (skipped)."""
    empty = {"segment_id": 1, "date": "", "uptime": "", "heavy": "", "car": "", "bike": "", "pedestrian": "",
             "v85": ""}
    live = {"segment_id": 24948, "date": "2020-10-30T07:00:00.000Z", "period": "hourly", "uptime": 0.9,
            "heavy": 1.0, "car": 2.0, "bike": 3.0, "pedestrian": 4.0, "v85": ""}
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": None, "properties": empty},
        {"type": "Feature", "geometry": None, "properties": live}]}
    readings = _decode(doc)
    assert {r.device_id for r in readings} == {"telraam-24948"}
    assert "speed_v85" not in _values(readings)
    assert _values(_decode({"type": "Feature", "properties": live}))["bike_count"] == 3.0


@pytest.mark.parametrize(
    ("doc", "kw", "reason"),
    [
        (b'{"report": [', {}, "malformed JSON"),
        ({"report": {"car": 1}}, {}, "'report' is a dict, expected a list"),
        ({"report": []}, {}, "carries no report"),
        ({"report": ["x"]}, {}, "report[0] is a str"),
        (_report(date=None), {}, "has no 'date'"),
        (_report(date="30/10/2020 07:00"), {}, "not an RFC 3339 time"),
        (_report(uptime=None), {}, "has counts but no 'uptime'"),
        (_report(uptime=1.5), {}, "uptime is 1.5, expected a fraction 0..1"),
        (_report(uptime="NaN"), {}, "not a finite number"),
        (_report(car="many"), {}, "report.car: 'many' is not a number"),
        (_report(heavy=[1]), {}, "got a list"),
        (_report(v85=True), {}, "expected a number"),
        (_report(segment_id=-1), {}, "neither segment_id nor instance_id"),
        (_report(segment_id=3.5), {}, "segment_id is 3.5"),
        ({"type": "FeatureCollection"}, {}, "no 'features' list"),
        ({"type": "Feature", "properties": 3}, {}, "no 'properties' object"),
        ({"type": "FeatureCollection", "features": [{"properties": {"segment_id": 1, "car": ""}}]}, {},
         "no usable report"),
        (_report(), {"options": {"de_extrapolate": "yes"}}, "option 'de_extrapolate'"),
        (_report(), {"options": {"min_uptime": "half"}}, "option 'min_uptime'"),
    ],
)
def test_rejections(doc: Any, kw: dict[str, Any], reason: str) -> None:
    """Malformed shapes, missing date/uptime, bad types, NaN, missing ids and bad options are DecodeErrors."""
    with pytest.raises(DecodeError) as info:
        _decode(doc, **kw)
    assert reason in info.value.reason


def test_encode_extrapolates_like_telraam() -> None:
    """encode() divides observed counts by uptime; de_extrapolate recovers the observed counts."""
    payload = telraam.encode(348917, "2020-10-30T07:00:00.000Z", 0.73, {"car": 452, "heavy": 57, "bike": 192,
                                                                        "pedestrian": 53}, v85=25.5)
    values = _values(_decode(payload))
    assert values["car_count"] == pytest.approx(619.1780821918, abs=1e-9)  # reference §7 documented example
    observed = _values(_decode(payload, options={"de_extrapolate": True}))
    assert (observed["car_count"], observed["heavy_vehicle_count"], observed["vehicle_count"]) == (452, 57, 509)
