"""The device registry: its lines say truly what each module registers, and a kind's module loads on first use."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from devices.registry import _WHERE, KINDS, get_kind, kind_names


def _run(code: str) -> str:
    """Run `code` in a fresh interpreter (this one has imported every device module already); its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout


def test_each_line_names_what_its_module_registers() -> None:
    """Importing each module alone, in a fresh interpreter, registers exactly the kinds and links of its lines."""
    out = _run("""
        import importlib, json
        from devices.kind import KINDS
        from devices.registry import _WHERE
        found = {}
        for module in sorted({m for m, _ in _WHERE.values()}):
            before = set(KINDS)
            importlib.import_module(module)
            found[module] = sorted((name, KINDS[name].link) for name in set(KINDS) - before)
        print(json.dumps(found))
    """)
    expected: dict[str, list[list[str]]] = {}
    for name, (module, link) in sorted(_WHERE.items()):
        expected.setdefault(module, []).append([name, link])
    assert json.loads(out) == expected


def test_a_kind_is_imported_when_first_used() -> None:
    """Checking a config imports no decoder; asking for one kind imports its module and no other kind's."""
    out = _run("""
        import sys
        from gateway.settings import Settings
        Settings.model_validate({"mqtt": {"host": "localhost", "routes": [{"topic": "t/#", "format": "json"}]},
                                 "devices": [{"id": "pm", "kind": "sds011", "port": "/dev/null"}]})
        from devices.registry import _WHERE, get_kind
        modules = {m for m, _ in _WHERE.values()}
        print(sorted(modules & set(sys.modules)))
        get_kind("sdm630")
        print(sorted(modules & set(sys.modules)))
    """)
    assert out.splitlines() == ["[]", "['devices.sdm630']"]


def test_the_mapping_lists_every_kind_and_refuses_unknown_ones() -> None:
    """KINDS iterates every kind (importing on lookup); an unknown name's KeyError lists the known kinds."""
    assert sorted(KINDS) == kind_names() == sorted(_WHERE)
    assert {k.name for k in KINDS.values()} == set(_WHERE)
    assert kind_names("mqtt") == sorted(n for n, (_, link) in _WHERE.items() if link == "mqtt")
    assert "sds011" in kind_names("serial", "modbus") and "json" not in kind_names("serial", "modbus")
    with pytest.raises(KeyError, match="unknown device kind 'nope'; known kinds: airrohr, bswa_slm"):
        get_kind("nope")
    for module_name in ("os", "devices.sds011", "json_mapping"):  # a name is looked up, never imported
        with pytest.raises(KeyError):
            KINDS[module_name]
