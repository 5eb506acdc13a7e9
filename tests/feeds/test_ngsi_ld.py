"""NGSI-LD mapping: every entity the sink builds validates against the official Smart Data Models schema.json and
expands (pyld) to the official IRIs, with no term left to the core @vocab; values, units, times and ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregators.kpi import KpiPoint
from gateway.journal import Entry, Journal
from gateway.sinks.ngsi_ld_mapping import CITYGW_CONTEXT, RULES, EntityMapper, request_rounds
from tests.feeds.ngsi_ld_checks import (
    CITY_MODELS,
    CORE_VOCAB,
    expand,
    official_iri,
    schema_errors,
    vocab_fallbacks,
)

H = 3_600_000_000_000
T0 = 1_767_261_600 * 10**9  # 2026-01-01T10:00:00Z
D0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
ROOT = Path(__file__).resolve().parents[2]
PLACES = {"air-1": (-3.7038, 40.4168), "noise-1": (2.1734, 41.3851), "traffic-1": (13.405, 52.52),
          "water-1": (4.9041, 52.3676), "meter-1": (6.0839, 50.7753)}


def _hour(name: str, device: str, unit: str, value: float, fields: dict[str, Any] | None = None,
          tags: dict[str, str] | None = None, valid: bool = True) -> KpiPoint:
    return KpiPoint(name, device, "1h", T0, T0 + H, unit, value, fields or {"count": 60, "coverage": 1.0},
                    tags or {}, valid)


def _day(name: str, device: str, unit: str, value: float, fields: dict[str, Any] | None = None,
         tags: dict[str, str] | None = None, valid: bool = True) -> KpiPoint:
    return KpiPoint(name, device, "1d", D0, D0 + 24 * H, unit, value, fields or {"hours": 24}, tags or {}, valid)


def sample_points() -> list[KpiPoint]:
    """One realistic point of every mapped series (units as the windows and derived series emit them)."""
    return [
        _hour("pm1_0", "air-1", "ug/m3", 7.5), _hour("pm2_5", "air-1", "ug/m3", 12.25),
        _hour("pm4_0", "air-1", "ug/m3", 14.0), _hour("pm10", "air-1", "ug/m3", 18.5),
        _hour("no2", "air-1", "ug/m3", 41.0), _hour("o3", "air-1", "ppb", 30.5), _hour("so2", "air-1", "ug/m3", 3.2),
        _hour("co", "air-1", "mg/m3", 0.4), _hour("co2", "air-1", "ppm", 415.0),
        _hour("temperature", "air-1", "degC", -2.5), _hour("pressure", "air-1", "hPa", 1013.2),
        _hour("relative_humidity", "air-1", "%", 55.0, valid=False),
        _hour("us_aqi", "air-1", "AQI", 57.0, {"concentration": 12.25, "status": "ok", "category": "Moderate"},
              {"pollutant": "pm2_5", "averaging": "nowcast"}),
        _hour("us_aqi", "air-1", "AQI", 17.0, {"concentration": 18.5, "status": "ok", "category": "Good"},
              {"pollutant": "pm10", "averaging": "nowcast"}),
        _hour("eaqi", "air-1", "level", 2.0, {"critical_pollutant": "no2"}, {"band": "fair", "table": "2021"}),
        _hour("caqi", "air-1", "index", 37.4, {"critical_pollutant": "no2"}, {"band": "low"}),
        _hour("noise_laeq", "noise-1", "dBA", 61.2), _hour("noise_lamax", "noise-1", "dBA", 70.0, {"max": 78.5}),
        _day("lday", "noise-1", "dBA", 63.1), _day("levening", "noise-1", "dBA", 60.4),
        _day("lnight", "noise-1", "dBA", 52.9, {"hours": 8, "end_band": "50-54"}),
        _day("lden", "noise-1", "dBA", 64.0, {"hours": 24, "end_band": "60-64"}),
        _hour("vehicle_count", "traffic-1", "1", 420.0, {"count": 4, "sum": 420.0, "coverage": 1.0}),
        _hour("speed", "traffic-1", "km/h", 38.5),
        _day("traffic_peak_hour", "traffic-1", "veh/h", 610.0, {"peak_start": D0 + 8 * H, "peak_15min": 170.0}),
        _day("traffic_phf", "traffic-1", "1", 0.897, {"peak_start": D0 + 8 * H, "volume": 610.0}),
        _hour("water_volume", "water-1", "m3", 0.42, {"consumption": 0.42, "first": 1234.147, "last": 1234.567}),
        _day("water_consumption", "water-1", "m3", 9.8), _day("minimum_night_flow", "water-1", "m3/h", 0.12),
        _hour("energy_import", "meter-1", "kWh", 1.2, {"consumption": 1.2, "first": 100.0, "last": 101.2}),
        _hour("energy_export", "meter-1", "kWh", 0.1, {"consumption": 0.1, "first": 5.0, "last": 5.1}),
        _hour("active_power", "meter-1", "W", 1450.0), _hour("voltage", "meter-1", "V", 231.0),
        _hour("current", "meter-1", "A", 6.3), _hour("frequency", "meter-1", "Hz", 50.01),
        _hour("power_factor", "meter-1", "1", 0.97),
        _day("energy_consumption", "meter-1", "kWh", 28.8), _day("peak_demand", "meter-1", "kW", 3.2),
    ]


def journal_entries(tmp: Path, points: list[KpiPoint]) -> list[Entry]:
    """The points as the sink reads them: appended to a real journal and read back."""
    journal = Journal(tmp / "journal.sqlite")
    try:
        journal.append(kpis=points)
        return journal.read_after(0, 10_000)
    finally:
        journal.close()


def mapper(**kwargs: Any) -> EntityMapper:
    """The mapper of gateway `kit-7` with the test devices' positions."""
    return EntityMapper("kit-7", PLACES.get, **kwargs)


@pytest.fixture
def entities(tmp_path: Path) -> list[dict[str, Any]]:
    """Every entity the sample points become."""
    return [e for e, _seqs in mapper().entities(journal_entries(tmp_path, sample_points()))]


def by_id(entities: list[dict[str, Any]], fragment: str) -> dict[str, Any]:
    """The one entity whose id contains `fragment`."""
    found = [e for e in entities if fragment in e["id"]]
    assert len(found) == 1, [e["id"] for e in entities]
    return found[0]


def attributes(entity: dict[str, Any]) -> Iterator[str]:
    """The entity's attribute names."""
    return (k for k in entity if k not in ("id", "type", "@context"))


def test_vendored_reference_files_are_there() -> None:
    assert (CITY_MODELS / "README.md").is_file(), f"the city-models reference files are missing at {CITY_MODELS}"


def test_every_mapped_series_is_exercised() -> None:
    assert {p.name for p in sample_points()} == set(RULES)


def test_every_entity_validates_against_its_smart_data_models_schema(entities: list[dict[str, Any]]) -> None:
    assert {e["type"] for e in entities} == {"AirQualityObserved", "NoiseLevelObserved", "TrafficFlowObserved",
                                             "WaterConsumptionObserved", "DeviceMeasurement"}
    for entity in entities:
        assert schema_errors(entity) == [], json.dumps(entity, indent=1)


def test_every_term_expands_to_the_official_iri(entities: list[dict[str, Any]]) -> None:
    for entity in entities:
        assert vocab_fallbacks(entity) == [], entity["id"]
        expanded = expand(entity)
        assert len(expanded) == 1
        node = expanded[0]
        assert node["@type"] == [official_iri(entity["type"], entity["type"])], entity["id"]
        for term in attributes(entity):
            iri = official_iri(entity["type"], term) or f"https://uri.etsi.org/ngsi-ld/{term}"
            assert iri in node, f"{entity['id']}: {term} does not expand to {iri}"
            assert iri.startswith(("https://smartdatamodels.org/", "https://uri.etsi.org/ngsi-ld/",
                                   "urn:citygw:ngsi-ld:")), iri


def test_only_documented_citygw_terms_are_citygws_own(entities: list[dict[str, Any]]) -> None:
    own = {t for e in entities for t in attributes(e) if official_iri(e["type"], t) in CITYGW_CONTEXT.values()}
    assert own == {"Levening", "Lnight", "Lden", "peakHourIntensity", "peakHourStart", "peakHourFactor",
                   "volumeConsumed", "minimumNightFlow"}
    feeds = (ROOT / "docs/feeds.md").read_text()
    for term in CITYGW_CONTEXT:
        assert f"`{term}`" in feeds, f"docs/feeds.md does not document citygw's term {term}"


def test_the_checks_can_fail(entities: list[dict[str, Any]]) -> None:
    air = json.loads(json.dumps(by_id(entities, "AirQualityObserved:kit-7:air-1:1h")))
    air["relativeHumidity"]["value"] = 55.0  # a percentage where the model wants a fraction
    air["pm25"]["value"] = "high"
    del air["location"]
    errors = schema_errors(air)
    assert any("relativeHumidity" in e for e in errors) and any("pm25" in e for e in errors)
    assert any("location" in e for e in errors)
    air["noiseIndex"] = {"type": "Property", "value": 3}  # in no context: only the core @vocab expands it
    assert vocab_fallbacks(air) == [CORE_VOCAB + "noiseIndex"]


def test_values_units_times_and_places(entities: list[dict[str, Any]]) -> None:
    air = by_id(entities, "AirQualityObserved:kit-7:air-1:1h")
    assert air["id"] == "urn:ngsi-ld:AirQualityObserved:kit-7:air-1:1h"
    assert air["pm25"] == {"type": "Property", "value": 12.25, "observedAt": "2026-01-01T11:00:00.000Z",
                           "unitCode": "GQ", "windowValid": {"type": "Property", "value": True}}
    assert air["o3"]["unitCode"] == "61" and air["co"]["unitCode"] == "GP" and air["co2"]["unitCode"] == "59"
    assert air["temperature"]["unitCode"] == "CEL" and air["pressure"]["unitCode"] == "A97"
    assert air["relativeHumidity"]["value"] == pytest.approx(0.55)
    assert air["relativeHumidity"]["windowValid"]["value"] is False
    assert air["dateObservedFrom"]["value"] == {"@type": "DateTime", "@value": "2026-01-01T10:00:00.000Z"}
    assert air["dateObservedTo"]["value"] == {"@type": "DateTime", "@value": "2026-01-01T11:00:00.000Z"}
    assert air["location"]["value"] == {"type": "Point", "coordinates": [-3.7038, 40.4168]}
    assert air["refDevice"] == {"type": "Relationship", "object": "urn:ngsi-ld:Device:kit-7:air-1"}
    index = {i["datasetId"]: i["value"] for i in air["airQualityIndex"]}
    assert index == {"urn:ngsi-ld:Dataset:CAQI": 37, "urn:ngsi-ld:Dataset:EAQI": 2,
                     "urn:ngsi-ld:Dataset:US-AQI:pm10": 17, "urn:ngsi-ld:Dataset:US-AQI:pm2_5": 57}
    level = {i["datasetId"]: i["value"] for i in air["airQualityLevel"]}
    assert level["urn:ngsi-ld:Dataset:US-AQI:pm2_5"] == "Moderate" and level["urn:ngsi-ld:Dataset:EAQI"] == "fair"
    noise = by_id(entities, "NoiseLevelObserved:kit-7:noise-1:1d")
    assert (noise["LAeq_d"]["value"], noise["Lden"]["value"], noise["Lnight"]["unitCode"]) == (63.1, 64.0, "2N")
    assert by_id(entities, "NoiseLevelObserved:kit-7:noise-1:1h")["LAmax"]["value"] == 78.5
    traffic = by_id(entities, "TrafficFlowObserved:kit-7:traffic-1:1d")
    assert traffic["peakHourStart"]["value"] == {"@type": "DateTime", "@value": "2026-01-01T08:00:00.000Z"}
    assert by_id(entities, "TrafficFlowObserved:kit-7:traffic-1:1h")["intensity"]["value"] == 420.0
    water = by_id(entities, "WaterConsumptionObserved:kit-7:water-1:1h")
    assert (water["waterConsumption"]["value"], water["waterConsumption"]["unitCode"]) == (1234567, "LTR")
    assert (water["volumeConsumed"]["value"], water["volumeConsumed"]["unitCode"]) == (0.42, "MTQ")
    energy = by_id(entities, "DeviceMeasurement:kit-7:meter-1:energy_import:1h")
    assert (energy["numValue"]["value"], energy["numValue"]["unitCode"]) == (1.2, "KWH")
    assert energy["controlledProperty"]["value"] == "energy_import" and energy["unit"]["value"] == "KWH"
    assert energy["measurementType"]["value"] == "consumption"


def test_ids_are_stable_and_windows_go_out_one_at_a_time(tmp_path: Path) -> None:
    points = [KpiPoint("pm2_5", "air-1", "1h", T0 + k * H, T0 + (k + 1) * H, "ug/m3", 10.0 + k) for k in range(3)]
    points.append(KpiPoint("pm10", "air-1", "1h", T0, T0 + H, "ug/m3", 20.0))
    points.append(KpiPoint("pm2_5", "air-2", "1h", T0, T0 + H, "ug/m3", 5.0))
    built = mapper().entities(journal_entries(tmp_path, points))
    ids = [e["id"] for e, _ in built]
    assert set(ids) == {"urn:ngsi-ld:AirQualityObserved:kit-7:air-1:1h",
                        "urn:ngsi-ld:AirQualityObserved:kit-7:air-2:1h"}
    first = built[0][0]
    assert first["pm25"]["value"] == 10.0 and first["pm10"]["value"] == 20.0  # one window, one entity
    rounds = request_rounds(built, batch=100)
    assert [[e["pm25"]["observedAt"] for e in r] for r in rounds] == [
        ["2026-01-01T11:00:00.000Z", "2026-01-01T11:00:00.000Z"], ["2026-01-01T12:00:00.000Z"],
        ["2026-01-01T13:00:00.000Z"]]
    assert [len(r) for r in request_rounds(built, batch=1)] == [1, 1, 1, 1]
    assert sorted(seq for _e, seqs in built for seq in seqs) == [1, 2, 3, 4, 5]


def test_selection_and_unmapped_series(tmp_path: Path) -> None:
    points = [_hour("pm2_5", "air-1", "ug/m3", 12.0), _hour("nowcast_pm2_5", "air-1", "ug/m3", 11.0),
              KpiPoint("pm2_5", "air-1", "1m", T0, T0 + 60 * 10**9, "ug/m3", 9.0), _hour("no2", "air-1", "ug/m3", 3)]
    entries = journal_entries(tmp_path, points)
    all_of_them = mapper().entities(entries)
    assert sorted(e["id"].rsplit(":", 1)[1] for e, _ in all_of_them) == ["1h", "1m"]  # nowcast has no mapping
    chosen = mapper(kpis=["pm2_5"], windows=["1h"]).entities(entries)
    assert [sorted(attributes(e)) for e, _ in chosen] == [
        ["dateObserved", "dateObservedFrom", "dateObservedTo", "location", "pm25", "refDevice"]]


def test_configured_context_and_prefix(tmp_path: Path) -> None:
    entries = journal_entries(tmp_path, [_hour("pm2_5", "air/1 north", "ug/m3", 12.0)])
    built = mapper(entity_prefix="urn:ngsi-ld:city:", context=["https://ctx.example/all.jsonld"]).entities(entries)
    entity = built[0][0]
    assert entity["id"] == "urn:ngsi-ld:city:AirQualityObserved:kit-7:air%2F1%20north:1h"
    assert entity["@context"] == ["https://ctx.example/all.jsonld"]
    assert "location" not in entity  # no position configured for this device


def test_citygw_context_file_is_the_one_sent() -> None:
    published = json.loads((ROOT / "schemas/citygw-context.jsonld").read_text())
    assert published == {"@context": CITYGW_CONTEXT}


def test_the_documented_example_is_what_the_sink_sends(tmp_path: Path) -> None:
    text = (ROOT / "docs/feeds.md").read_text()
    section = text.split("## NGSI-LD", 1)[1].split("### Example", 1)[1]
    documented = json.loads(section.split("```json", 1)[1].split("```", 1)[0])
    points = [p for p in sample_points() if p.device_id == "air-1" and p.name in ("pm2_5", "no2", "us_aqi", "eaqi")]
    built = [e for e, _seqs in mapper().entities(journal_entries(tmp_path, points))]
    assert documented == built
    assert schema_errors(built[0]) == [] and vocab_fallbacks(built[0]) == []


def test_values_json_cannot_carry_are_left_out_and_counted(tmp_path: Path) -> None:
    # The journal stores infinities in `value`; a NaN or infinity among the fields comes back as null.
    points = [_hour("pm2_5", "air-1", "ug/m3", float("inf")), _hour("pm10", "air-1", "ug/m3", 9.0),
              _hour("caqi", "air-1", "index", float("-inf"), tags={"band": "very low"}),
              _hour("water_volume", "water-1", "m3", 0.5, {"last": float("inf")})]
    m = mapper()
    built = [e for e, _seqs in m.entities(journal_entries(tmp_path, points))]
    air = by_id(built, "AirQualityObserved")
    assert "pm25" not in air and air["pm10"]["value"] == 9.0 and "airQualityIndex" not in air
    water = by_id(built, "WaterConsumptionObserved")
    assert "waterConsumption" not in water and water["volumeConsumed"]["value"] == 0.5
    assert m.skipped_values == 2
    json.dumps(built, allow_nan=False)  # what goes out is plain JSON
