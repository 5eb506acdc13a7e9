"""KPI windows and indicators as NGSI-LD entities of the Smart Data Models (normalized, `application/ld+json`).

Pure functions of journal entries: no I/O, no clock. One entity per device, entity type and window (its id says
which), so every attribute of an entity shares one observation period (`dateObservedFrom`/`To`). The tables below
are the mapping; docs/feeds.md "NGSI-LD" documents every row.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aggregators.kpi import KpiPoint
from gateway.journal import KIND_KPI, Entry

__all__ = ["CITYGW_CONTEXT", "CORE_CONTEXT", "ENTITY_CONTEXTS", "RULES", "SDM_CONTEXT",
           "UNIT_CODES", "EntityMapper", "request_rounds"]

CORE_CONTEXT: Final = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
SDM_CONTEXT: Final = "https://raw.githubusercontent.com/smart-data-models/dataModel.{}/master/context.jsonld"
_NS: Final = "urn:citygw:ngsi-ld:"
# citygw's own terms: what no Smart Data Model has. Sent inline in every entity's @context, so a broker has no
# document to fetch; schemas/citygw-context.jsonld holds the same terms (a test keeps them identical) for a
# deployment that hosts it and lists its URL in `context`.
CITYGW_CONTEXT: Final[dict[str, str]] = {
    "Levening": _NS + "Levening",
    "Lnight": _NS + "Lnight",
    "Lden": _NS + "Lden",
    "peakHourIntensity": _NS + "peakHourIntensity",
    "peakHourStart": _NS + "peakHourStart",
    "peakHourFactor": _NS + "peakHourFactor",
    "volumeConsumed": _NS + "volumeConsumed",
    "minimumNightFlow": _NS + "minimumNightFlow",
    "windowValid": _NS + "windowValid",
}

# Smart Data Models repositories whose @context each entity type uses, in order (later ones win). The water
# entity borrows `dateObserved`, `dateObservedFrom`/`To` and `refDevice` from Environment, and DeviceMeasurement
# `dateObservedFrom`/`To` from Energy: their own contexts lack them, so the core @vocab would expand them.
ENTITY_CONTEXTS: Final[dict[str, tuple[str, ...]]] = {
    "AirQualityObserved": ("Environment",),
    "NoiseLevelObserved": ("Environment",),
    "TrafficFlowObserved": ("Transportation",),
    "WaterConsumptionObserved": ("Environment", "WaterConsumption"),
    "DeviceMeasurement": ("Energy", "Device"),
}
_HAS_PERIOD: Final = frozenset(("AirQualityObserved", "NoiseLevelObserved", "TrafficFlowObserved",
                                "WaterConsumptionObserved", "DeviceMeasurement"))

# citygw unit -> UN/CEFACT Common Code (Recommendation 20), as NGSI-LD `unitCode` wants it.
UNIT_CODES: Final[dict[str, str]] = {
    "ug/m3": "GQ", "mg/m3": "GP", "ppm": "59", "ppb": "61", "degC": "CEL", "%": "P1", "hPa": "A97",
    "dBA": "2N", "km/h": "KMH", "m3": "MTQ", "m3/h": "MQH", "l": "LTR", "kWh": "KWH", "kW": "KWT", "W": "WTT",
    "V": "VLT", "A": "AMP", "Hz": "HTZ", "1": "C62", "veh": "C62", "veh/h": "C62", "AQI": "C62", "level": "C62",
    "index": "C62",
}

Value = float | int | str | bool | dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rule:
    """One attribute an entity gets from a KPI point."""

    entity_type: str
    attribute: str
    value: Callable[[KpiPoint], Value | None] = lambda p: p.value  # None: the point has no such value
    unit: str | None = None  # citygw unit of the value; None: the point's own unit
    dataset: Callable[[KpiPoint], str] | None = None  # multi-attribute instance id (NGSI-LD datasetId)
    priority: int = 0  # when two points set the same attribute of one entity, the higher priority wins


def _field(name: str, scale: float = 1.0) -> Callable[[KpiPoint], Value | None]:
    def get(p: KpiPoint) -> Value | None:
        v = p.fields.get(name)
        return None if not isinstance(v, int | float) else float(v) * scale
    return get


def _litres_total(p: KpiPoint) -> Value | None:
    last = p.fields.get("last")
    # The model types waterConsumption (the meter's total) as an integer: whole litres keep the precision.
    return None if not isinstance(last, int | float) else round(float(last) * 1000.0)


def _index(p: KpiPoint) -> Value:
    return round(p.value)  # the model types airQualityIndex as an integer (US AQI and EAQI already are)


def _tag(name: str) -> Callable[[KpiPoint], Value | None]:
    return lambda p: p.tags.get(name) or None


def _us_aqi_level(p: KpiPoint) -> Value | None:
    return str(p.fields.get("category") or "") or None


def _aqi_dataset(p: KpiPoint) -> str:
    return f"urn:ngsi-ld:Dataset:US-AQI:{p.tags.get('pollutant', 'all')}"


def _eaqi_dataset(_p: KpiPoint) -> str:
    return "urn:ngsi-ld:Dataset:EAQI"


def _caqi_dataset(_p: KpiPoint) -> str:
    return "urn:ngsi-ld:Dataset:CAQI"


def _instant(ns: int) -> dict[str, str]:
    return {"@type": "DateTime", "@value": _iso(ns)}


def _peak_start(p: KpiPoint) -> Value | None:
    start = p.fields.get("peak_start")
    return None if not isinstance(start, int | float) else _instant(int(start))


_AQ, _NOISE, _TRAFFIC, _WATER, _DM = ("AirQualityObserved", "NoiseLevelObserved", "TrafficFlowObserved",
                                      "WaterConsumptionObserved", "DeviceMeasurement")


def _air(attribute: str) -> tuple[Rule, ...]:
    return (Rule(_AQ, attribute),)


def _measurement(kind: str) -> tuple[Rule, ...]:
    def measurement_type(_p: KpiPoint) -> Value:
        return kind

    return (Rule(_DM, "numValue"), Rule(_DM, "measurementType", measurement_type, unit=""))


# KPI series name -> the attributes it sets. Names not listed here are not sent (docs/feeds.md says why).
RULES: Final[dict[str, tuple[Rule, ...]]] = {
    "pm1_0": _air("pm1"), "pm2_5": _air("pm25"), "pm4_0": _air("pm4"), "pm10": _air("pm10"),
    "no2": _air("no2"), "o3": _air("o3"), "so2": _air("so2"), "co": _air("co"), "co2": _air("co2"),
    "temperature": _air("temperature"), "pressure": _air("pressure"),
    # The model wants relative humidity as a fraction (0..1).
    "relative_humidity": (Rule(_AQ, "relativeHumidity", lambda p: p.value / 100.0, unit="1"),),
    "us_aqi": (Rule(_AQ, "airQualityIndex", _index, dataset=_aqi_dataset),
               Rule(_AQ, "airQualityLevel", _us_aqi_level, unit="", dataset=_aqi_dataset)),
    "eaqi": (Rule(_AQ, "airQualityIndex", _index, dataset=_eaqi_dataset),
             Rule(_AQ, "airQualityLevel", _tag("band"), unit="", dataset=_eaqi_dataset)),
    "caqi": (Rule(_AQ, "airQualityIndex", _index, dataset=_caqi_dataset),
             Rule(_AQ, "airQualityLevel", _tag("band"), unit="", dataset=_caqi_dataset)),
    "noise_laeq": (Rule(_NOISE, "LAeq"),),
    "noise_lamax": (Rule(_NOISE, "LAmax", _field("max")),),
    "lday": (Rule(_NOISE, "LAeq_d"),),
    "levening": (Rule(_NOISE, "Levening"),),
    "lnight": (Rule(_NOISE, "Lnight"),),
    "lden": (Rule(_NOISE, "Lden"),),
    "vehicle_count": (Rule(_TRAFFIC, "intensity"),),
    "speed": (Rule(_TRAFFIC, "averageVehicleSpeed"),),
    "traffic_peak_hour": (Rule(_TRAFFIC, "peakHourIntensity"),
                          Rule(_TRAFFIC, "peakHourStart", _peak_start, unit="")),
    "traffic_phf": (Rule(_TRAFFIC, "peakHourFactor"),),
    "water_volume": (Rule(_WATER, "waterConsumption", _litres_total, unit="l"),
                     Rule(_WATER, "volumeConsumed")),
    # The daily indicator (with its day-completeness rule) wins over a "1d" window of the meter.
    "water_consumption": (Rule(_WATER, "volumeConsumed", priority=1),),
    "minimum_night_flow": (Rule(_WATER, "minimumNightFlow"),),
    "energy_import": _measurement("consumption"),
    "energy_export": _measurement("consumption"),
    "energy_consumption": _measurement("consumption"),
    "peak_demand": _measurement("maximum"),
    "active_power": _measurement("average"),
    "voltage": _measurement("average"),
    "current": _measurement("average"),
    "frequency": _measurement("average"),
    "power_factor": _measurement("average"),
}


def _iso(ns: int) -> str:
    dt = datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(microsecond=(ns % 1_000_000_000) // 1000)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _urn_part(text: str) -> str:
    """A device id or gateway id as a URN segment (anything outside [A-Za-z0-9._-] percent-encoded)."""
    return urllib.parse.quote(text, safe="-._")


@dataclass(slots=True)
class _Draft:
    entity: dict[str, Any]
    priorities: dict[tuple[str, str | None], int]
    seqs: list[int]


class EntityMapper:
    """Builds the entities of a batch of journal entries; stateless apart from its configuration."""

    def __init__(self, gateway_id: str, locate: Callable[[str], tuple[float, float] | None],
                 entity_prefix: str = "urn:ngsi-ld:", context: Sequence[str | Mapping[str, Any]] = (),
                 kpis: Iterable[str] = (), windows: Iterable[str] = ()) -> None:
        self.gateway_id = gateway_id
        self.locate = locate
        self.entity_prefix = entity_prefix
        self.context = list(context)
        self.kpis = frozenset(kpis) or frozenset(RULES)
        self.windows = frozenset(windows)
        self.skipped_values = 0  # attributes left out because their value was not a finite number

    def selected(self, entry: Entry) -> bool:
        """Whether this entry goes out at all (a mapped, selected KPI name and window)."""
        if entry.kind != KIND_KPI or entry.quantity not in RULES or entry.quantity not in self.kpis:
            return False
        return not self.windows or str((entry.extra or {}).get("window", "")) in self.windows

    def entity_id(self, entity_type: str, p: KpiPoint) -> str:
        """The stable id: one entity per gateway, device, type and window (and series, for DeviceMeasurement)."""
        parts = [entity_type, _urn_part(self.gateway_id), _urn_part(p.device_id)]
        if entity_type == _DM:
            parts.append(_urn_part(p.name))
        parts.append(_urn_part(p.window))
        return self.entity_prefix + ":".join(parts)

    def device_urn(self, device_id: str) -> str:
        """The NGSI-LD id of the device that measured a window (`refDevice`)."""
        return f"{self.entity_prefix}Device:{_urn_part(self.gateway_id)}:{_urn_part(device_id)}"

    def contexts(self, entity_type: str) -> list[str | Mapping[str, Any]]:
        """The @context of an entity: the configured list, else its models' contexts, citygw's terms, the core."""
        if self.context:
            return list(self.context)
        return [*(SDM_CONTEXT.format(repo) for repo in ENTITY_CONTEXTS[entity_type]), dict(CITYGW_CONTEXT),
                CORE_CONTEXT]

    def entities(self, entries: Sequence[Entry]) -> list[tuple[dict[str, Any], list[int]]]:
        """The entities of these entries, each with the journal seqs it carries, oldest window first."""
        drafts: dict[tuple[str, int], _Draft] = {}
        for e in entries:
            if not self.selected(e):
                continue
            p = e.as_kpi()
            for rule in RULES[p.name]:
                self._apply(drafts, rule, p, e.seq)
        ordered = sorted(drafts.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        for _key, draft in ordered:
            draft.entity["@context"] = self.contexts(draft.entity["type"])  # last: easier to read
        return [(d.entity, d.seqs) for _key, d in ordered]

    def _apply(self, drafts: dict[tuple[str, int], _Draft], rule: Rule, p: KpiPoint, seq: int) -> None:
        try:
            value = rule.value(p)
        except (ValueError, OverflowError):  # NaN or infinity where the model wants an integer
            value = math.nan
        if value is None:
            return
        if isinstance(value, float) and not math.isfinite(value):
            self.skipped_values += 1  # JSON has no NaN; the sink logs the count
            return
        eid = self.entity_id(rule.entity_type, p)
        draft = drafts.get((eid, p.end_ns))
        if draft is None:
            draft = drafts[(eid, p.end_ns)] = _Draft(self._base(rule.entity_type, eid, p), {}, [])
        if seq not in draft.seqs:
            draft.seqs.append(seq)
        dataset = rule.dataset(p) if rule.dataset else None
        key = (rule.attribute, dataset)
        if draft.priorities.get(key, -1) > rule.priority:
            return
        draft.priorities[key] = rule.priority
        unit = p.unit if rule.unit is None else rule.unit
        attr: dict[str, Any] = {"type": "Property", "value": value, "observedAt": _iso(p.end_ns)}
        if unit:
            attr["unitCode"] = UNIT_CODES.get(unit, unit)
        if dataset:
            attr["datasetId"] = dataset
        attr["windowValid"] = {"type": "Property", "value": p.valid}
        entity = draft.entity
        if dataset is None:
            entity[rule.attribute] = attr
        else:
            instances = [i for i in entity.get(rule.attribute, []) if i.get("datasetId") != dataset]
            entity[rule.attribute] = sorted([*instances, attr], key=lambda i: i["datasetId"])

    def _base(self, entity_type: str, eid: str, p: KpiPoint) -> dict[str, Any]:
        entity: dict[str, Any] = {"id": eid, "type": entity_type,
                                  "dateObserved": {"type": "Property", "value": _instant(p.end_ns)}}
        if entity_type in _HAS_PERIOD:
            entity["dateObservedFrom"] = {"type": "Property", "value": _instant(p.start_ns)}
            entity["dateObservedTo"] = {"type": "Property", "value": _instant(p.end_ns)}
        point = self.locate(p.device_id)
        if point is not None:
            entity["location"] = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": list(point)}}
        entity["refDevice"] = {"type": "Relationship", "object": self.device_urn(p.device_id)}
        if entity_type == _DM:
            entity["controlledProperty"] = {"type": "Property", "value": p.name}
            entity["unit"] = {"type": "Property", "value": UNIT_CODES.get(p.unit, p.unit)}
        return entity


def request_rounds(entities: Sequence[tuple[dict[str, Any], list[int]]], batch: int) -> list[list[dict[str, Any]]]:
    """Split entities into upsert requests: at most `batch` each, one window per entity id per request, in order.

    A temporal broker records every update with its observedAt, so replayed windows must arrive one at a time
    and oldest first; merging two windows of one entity into one request would keep only the last.
    """
    rounds: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    ids: set[str] = set()
    for entity, _seqs in entities:
        if entity["id"] in ids or len(current) >= batch:
            rounds.append(current)
            current, ids = [], set()
        current.append(entity)
        ids.add(entity["id"])
    if current:
        rounds.append(current)
    return rounds
