"""Every TOML example in the docs parses (a technician copies them)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_toml_blocks_in_docs_parse() -> None:
    files = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    blocks = 0
    for f in files:
        for m in re.finditer(r"```toml\n(.*?)```", f.read_text(), re.S):
            blocks += 1
            try:
                tomllib.loads(m.group(1))
            except tomllib.TOMLDecodeError:
                # Route snippets are shown without their kit's [mqtt] table.
                tomllib.loads("[mqtt]\nhost = 'broker'\n" + m.group(1))
    assert blocks > 10
