"""The embedded default sink: JSON-lines files per UTC day, readable with any tool (`jq`, pandas)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gateway.journal import KIND_KPI, Entry

__all__ = ["LocalStoreSink", "entry_dict"]


def entry_dict(e: Entry) -> dict[str, Any]:
    """A journal entry as a JSON object (the local store's and the MQTT feed's payload shape)."""
    if e.kind == KIND_KPI:
        extra = e.extra or {}
        return {"device_id": e.device_id, "name": e.quantity, "window": extra.get("window"),
                "start": e.ts, "end": extra.get("end_ns"), "unit": e.unit, "value": e.value,
                "valid": extra.get("valid", True), **(extra.get("fields") or {}),
                **({"tags": e.tags} if e.tags else {})}
    out: dict[str, Any] = {"device_id": e.device_id, "quantity": e.quantity, "value": e.value,
                           "unit": e.unit, "ts": e.ts}
    if e.tags:
        out["tags"] = e.tags
    if e.quality != "good":
        out["quality"] = e.quality
    return out


class LocalStoreSink:
    """Appends readings to readings-YYYY-MM-DD.jsonl and KPI points to kpi-YYYY-MM-DD.jsonl (fsync per batch)."""

    only_kind: int | None = None

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def body(self, entry: Entry) -> str:
        """The JSON line."""
        return orjson.dumps(entry_dict(entry)).decode()

    def write(self, entries: Sequence[Entry]) -> None:
        """Append the batch to the day files and fsync them."""
        by_file: dict[str, list[bytes]] = {}
        for e in entries:
            day = datetime.fromtimestamp(e.ts / 1e9, UTC).strftime("%Y-%m-%d")
            prefix = "kpi" if e.kind == KIND_KPI else "readings"
            by_file.setdefault(f"{prefix}-{day}.jsonl", []).append(orjson.dumps(entry_dict(e)) + b"\n")
        for name, lines in by_file.items():
            with open(self.directory / name, "ab") as fh:
                fh.write(b"".join(lines))
                fh.flush()
                os.fsync(fh.fileno())

    def close(self) -> None:
        """Files are closed after every write."""
