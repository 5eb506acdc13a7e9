"""The SensorThings mapping (pure) and the `[[sensorthings]]` configuration checks; no server needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregators.derived import SERIES
from devices.vocabulary import QUANTITIES
from gateway.settings import ConfigError, load_settings
from gateway.sinks import sta_model as model
from gateway.sinks.sta_http import entity_path, odata_string

S = 10**9


def test_observation_carries_the_window_interval_and_flags_invalid_windows() -> None:
    start = 1_790_000_000 * S
    good = model.observation_body(start, start + 3600 * S, 12.5, True, {"count": 60, "coverage": 1.0})
    assert good == {"phenomenonTime": "2026-09-21T14:13:20Z/2026-09-21T15:13:20Z",
                    "resultTime": "2026-09-21T15:13:20Z", "result": 12.5,
                    "parameters": {"count": 60, "coverage": 1.0}}
    bad = model.observation_body(start, start + 3600 * S, 3.0, False, {"coverage": 0.25, "p95": float("nan")})
    assert bad["resultQuality"]["valid"] is False and bad["resultQuality"]["coverage"] == 0.25
    assert bad["parameters"]["p95"] is None  # JSON has no NaN


def test_observed_property_definitions() -> None:
    assert model.definition_of("pm2_5") == "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/6001"
    assert model.definition_of("pm10") == "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/5"
    assert model.definition_of("no2") == "http://dd.eionet.europa.eu/vocabulary/aq/pollutant/8"
    assert model.definition_of("us_aqi") == f"{model.DOCS_URL}/kpis.md#us_aqi"
    assert model.definition_of("nowcast_pm2_5").endswith("kpis.md#nowcast_pm2_5")  # not the raw pollutant
    for code in model.EEA_POLLUTANTS:
        assert code in QUANTITIES


def test_every_unit_citygw_emits_has_a_name_symbol_and_definition() -> None:
    units = {u for q in QUANTITIES.values() for u in q.units} | {unit for _, unit in SERIES.values()}
    for unit in units:
        uom = model.unit_of_measurement(unit)
        assert set(uom) == {"name", "symbol", "definition"} and all(uom.values()), unit
        assert uom["definition"].startswith(("http://", "https://")), unit
    assert model.unit_of_measurement("ug/m3")["symbol"] == "µg/m³"


def test_thing_datastream_and_paths() -> None:
    device = model.DeviceInfo("air-1", "pms5003", {"site": "plaza"}, (-3.7, 40.4))
    thing = model.thing_body("gw1", device)
    assert thing["properties"] == {"gateway": "gw1", "device": "air-1", "kind": "pms5003", "tags": {"site": "plaza"}}
    assert thing["Locations"][0]["location"] == {"type": "Point", "coordinates": [-3.7, 40.4]}
    assert "Locations" not in model.thing_body("gw1", model.DeviceInfo("x", "mqtt", {}, None))
    ds = model.datastream_body("gw1", "air-1", "us_aqi", "1h", "AQI", {"standard": "US EPA AQI 2024", "site": "p"},
                               {"thing": 1, "sensor": "s'1", "observed_property": 3})
    assert ds["name"] == "gw1/air-1/us_aqi/1h"
    assert ds["observationType"] == model.OM_MEASUREMENT
    assert ds["properties"] == {"gateway": "gw1", "device": "air-1", "kpi": "us_aqi", "window": "1h", "unit": "AQI",
                                "standard": "US EPA AQI 2024"}
    assert ds["Sensor"] == {"@iot.id": "s'1"}
    assert entity_path("Datastreams", 7) == "Datastreams(7)"
    assert entity_path("Datastreams", "a'b") == "Datastreams('a''b')"
    assert odata_string("O'Brien") == "'O''Brien'"


def _load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "kit.toml"
    path.write_text(text)
    load_settings(path, env={})


def test_config_errors_say_what_and_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, '[[sensorthings]]\nurl = "host:8080/v1.1"\n')
    assert "kit.toml:1" in str(err.value) and "must start with http:// or https://" in str(err.value)
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, '[[sensorthings]]\nurl = "http://h/v1.1"\nusername = "u"\ntoken_env = "T"\n')
    assert "not both" in str(err.value)
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, '[[sensorthings]]\nurl = "http://h/v1.1"\npassword = "x"\n')
    assert "password_env" in str(err.value)
    devices = '[[devices]]\nid = "pm-1"\nkind = "pms5003"\nport = "/dev/ttyUSB0"\n'
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, devices + '[[sensorthings]]\nurl = "http://h/v1.1"\n')
    assert "pm-1 has none" in str(err.value) and "lat/lon" in str(err.value)
    _load(tmp_path, '[gateway]\nlat = 40.4\nlon = -3.7\n' + devices + '[[sensorthings]]\nurl = "http://h/v1.1"\n')


def test_the_commented_example_block_is_a_valid_config(tmp_path: Path) -> None:
    """config/example.toml (and so the README) shows [[sensorthings]] commented out; uncommented, it loads."""
    text = (Path(__file__).parents[2] / "config" / "example.toml").read_text()
    start = text.index("# [[sensorthings]]")
    lines = []
    for line in text[start:].splitlines():
        if not line.startswith("# ") or line.startswith("# ---"):
            break
        lines.append(line[2:])
    path = tmp_path / "kit.toml"
    path.write_text("\n".join(lines) + "\n")
    (cfg,) = load_settings(path, env={}).sensorthings
    assert cfg.url.endswith("/v1.1") and cfg.transport == "http" and "pm2_5" in cfg.kpis
