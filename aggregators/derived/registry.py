"""Indicator group registry: importing this module registers every group. A new group is one module plus one line.

The order of the lines is the order of the groups' series within a batch (and of `SERIES`).
"""

from __future__ import annotations

import importlib
from typing import Final

from aggregators.derived.base import GROUPS, GroupCalculator, SeriesTable

__all__ = ["GROUPS", "SERIES", "get_group"]

_MODULES = [
    "aggregators.derived.air",
    "aggregators.derived.noise",
    "aggregators.derived.water",
    "aggregators.derived.energy",
    "aggregators.derived.traffic",
]

for _name in _MODULES:
    importlib.import_module(_name)

# Every series the groups emit: name -> (windows, unit). docs/kpis.md documents each one.
SERIES: Final[SeriesTable] = {name: spec for cls in GROUPS.values() for name, spec in cls.SERIES.items()}


def get_group(name: str) -> type[GroupCalculator]:
    """The registered group called `name`; KeyError lists the known groups."""
    try:
        return GROUPS[name]
    except KeyError:
        raise KeyError(f"unknown indicator group {name!r}; known groups: {', '.join(GROUPS)}") from None
