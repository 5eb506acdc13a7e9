"""NGSI-LD mapping: every entity the sink builds validates against the official Smart Data Models schema.json and
expands (pyld) to the official IRIs, with no term left to the core @vocab; values, units, times and ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregators.kpi import KpiPoint
from gateway.sinks.ngsi_ld_mapping import CITYGW_CONTEXT, RULES, EntityMapper, request_rounds
from tests.feeds.ngsi_ld_checks import (
    CITY_MODELS,
    CORE_VOCAB,
    expand,
    official_iri,
    schema_errors,
    vocab_fallbacks,
)
from tests.feeds.ngsi_ld_samples import PLACES, T0, H, hourly, journal_entries, sample_points

ROOT = Path(__file__).resolve().parents[2]


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
    points = [hourly("pm2_5", "air-1", "ug/m3", 12.0), hourly("nowcast_pm2_5", "air-1", "ug/m3", 11.0),
              KpiPoint("pm2_5", "air-1", "1m", T0, T0 + 60 * 10**9, "ug/m3", 9.0), hourly("no2", "air-1", "ug/m3", 3)]
    entries = journal_entries(tmp_path, points)
    all_of_them = mapper().entities(entries)
    assert sorted(e["id"].rsplit(":", 1)[1] for e, _ in all_of_them) == ["1h", "1m"]  # nowcast has no mapping
    chosen = mapper(kpis=["pm2_5"], windows=["1h"]).entities(entries)
    assert [sorted(attributes(e)) for e, _ in chosen] == [
        ["dateObserved", "dateObservedFrom", "dateObservedTo", "location", "pm25", "refDevice"]]


def test_configured_context_and_prefix(tmp_path: Path) -> None:
    entries = journal_entries(tmp_path, [hourly("pm2_5", "air/1 north", "ug/m3", 12.0)])
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
    points = [hourly("pm2_5", "air-1", "ug/m3", float("inf")), hourly("pm10", "air-1", "ug/m3", 9.0),
              hourly("caqi", "air-1", "index", float("-inf"), tags={"band": "very low"}),
              hourly("water_volume", "water-1", "m3", 0.5, {"last": float("inf")})]
    m = mapper()
    built = [e for e, _seqs in m.entities(journal_entries(tmp_path, points))]
    air = by_id(built, "AirQualityObserved")
    assert "pm25" not in air and air["pm10"]["value"] == 9.0 and "airQualityIndex" not in air
    water = by_id(built, "WaterConsumptionObserved")
    assert "waterConsumption" not in water and water["volumeConsumed"]["value"] == 0.5
    assert m.skipped_values == 2
    json.dumps(built, allow_nan=False)  # what goes out is plain JSON
