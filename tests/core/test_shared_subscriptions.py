"""`$share` routes (issue 10, item 8): refused while their readings are windowed, with the route's file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import ConfigError, load_settings

ROUTES = """
[gateway]
id = "kit-a"

[mqtt]
host = "127.0.0.1"

[[mqtt.routes]]
topic = "sensors/+/json"
format = "json"

[[mqtt.routes]]
topic = "$share/kits/tele/+/SENSOR"
format = "tasmota"
"""


def test_a_shared_route_with_windows_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "kit.toml"
    path.write_text(ROUTES)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.key) == (str(path), 13, "mqtt.routes[1].topic")
    assert "several gateways" in problem.message and "overwriting" in problem.message
    assert "aggregation.windows = []" in problem.message  # and how to fix it


def test_a_shared_route_without_windows_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "kit.toml"
    path.write_text(ROUTES + "\n[aggregation]\nwindows = []\n")
    settings = load_settings(path, env={})
    assert [r.topic for r in settings.mqtt.routes] == ["sensors/+/json", "$share/kits/tele/+/SENSOR"]
