"""The NATS input's pure parts: subjects as topics, and the `[nats]` section's checks (the input itself runs
against a real 3-node cluster in tests/fleet/test_central_jetstream.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import ConfigError, load_settings
from ingest.nats_source import NatsOptions, subject_to_topic


def test_subject_to_topic_is_the_mqtt_listeners_mapping() -> None:
    assert subject_to_topic("part.1.v3.citygw-sim.ttn.devices.lora-00001.up") == \
        "part/1/v3/citygw-sim/ttn/devices/lora-00001/up"
    # NATS's MQTT listener writes an MQTT `.` as `//` in the subject.
    assert subject_to_topic("sensors.kit//1.json") == "sensors/kit.1/json"


def test_options_never_show_secrets() -> None:
    opts = NatsOptions(("nats://a:4222",), "UPLINKS", "c0", "part.0.>", password="hunter2", token="t0ken")
    assert "hunter2" not in repr(opts) and "t0ken" not in repr(opts)


def _load(tmp_path: Path, text: str) -> ConfigError:
    file = tmp_path / "c.toml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(file, env={})
    return info.value


def test_an_incomplete_nats_section_names_what_is_missing(tmp_path: Path) -> None:
    err = _load(tmp_path, '[nats]\nservers = ["nats://a:4222"]\nstream = "UPLINKS"\n')
    assert "durable, subject, routes" in str(err)


def test_bad_names_and_filters_are_located(tmp_path: Path) -> None:
    err = _load(tmp_path, '[nats]\nservers = ["nats://a:4222"]\nstream = "UP.LINKS"\ndurable = "c0"\n'
                          'subject = "part.>.x"\n\n[[nats.routes]]\ntopic = "part/#"\nformat = "ttn_v3"\n')
    lines = {p.key: p.line for p in err.problems}
    assert lines == {"nats.stream": 3, "nats.subject": 5}


def test_a_secret_in_the_file_is_refused(tmp_path: Path) -> None:
    err = _load(tmp_path, '[nats]\npassword = "x"\n')
    assert "password_env" in str(err)


def test_a_complete_section_loads(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('[nats]\nservers = ["nats://a:4222", "nats://b:4222"]\nstream = "UPLINKS"\ndurable = "c0"\n'
                    'subject = "part.0.>"\nack_wait = "10s"\n\n[[nats.routes]]\ntopic = "part/+/v3/#"\n'
                    'format = "ttn_v3"\n')
    s = load_settings(file, env={"CITYGW_NATS_DURABLE": "c1"})
    assert (s.nats.durable, s.nats.ack_wait, s.nats.routes[0].format) == ("c1", 10.0, "ttn_v3")
