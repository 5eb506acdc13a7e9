"""`citygw demo --print ngsi-ld`: the entities printed are those an [[ngsi_ld]] sink would send, and valid."""

from __future__ import annotations

import json
from pathlib import Path

from aggregators.kpi import KpiPoint
from gateway.cli import build_parser
from gateway.demo import demo_settings, ngsi_ld_printer
from tests.feeds.ngsi_ld_checks import schema_errors, vocab_fallbacks

S = 10**9
T0 = 1_767_261_600 * S


def test_demo_prints_valid_entities(tmp_path: Path) -> None:
    printed: list[str] = []
    show = ngsi_ld_printer(demo_settings(tmp_path, "/dev/null", 1883), printed.append)
    show([KpiPoint("pm2_5", "air-pm-1", "10s", T0, T0 + 10 * S, "ug/m3", 11.5, {"count": 10}),
          KpiPoint("pm10", "air-pm-1", "10s", T0, T0 + 10 * S, "ug/m3", 15.0, {"count": 10}),
          KpiPoint("noise_laeq", "noise-1", "10s", T0, T0 + 10 * S, "dBA", 58.3, {"count": 10}),
          KpiPoint("particles_0_3um", "air-pm-1", "10s", T0, T0 + 10 * S, "1/0.1L", 900.0)])  # not mapped
    entities = [json.loads(text) for text in printed]
    assert [e["id"] for e in entities] == ["urn:ngsi-ld:AirQualityObserved:demo-kit:air-pm-1:10s",
                                           "urn:ngsi-ld:NoiseLevelObserved:demo-kit:noise-1:10s"]
    assert entities[0]["pm25"]["value"] == 11.5 and entities[1]["LAeq"]["value"] == 58.3
    assert entities[0]["location"]["value"]["coordinates"] == [-3.7038, 40.4168]  # the demo kit's site
    for entity in entities:
        assert schema_errors(entity) == [] and vocab_fallbacks(entity) == []


def test_demo_takes_the_print_option() -> None:
    args = build_parser().parse_args(["demo", "--print", "ngsi-ld", "--duration", "1"])
    assert args.print_as == "ngsi-ld"
    assert build_parser().parse_args(["demo"]).print_as == "kpis"
