"""InfluxDB line protocol, formatted directly from journal entries (the documented schema is in README.md).

Raw readings: measurement `reading`, tags gateway, device_id, quantity, unit (+ quality when not good, + the
reading's own tags), field `value`. KPI points: measurement `kpi`, tags gateway, device_id, name, window, unit,
valid (+ the point's tags), fields value and the window statistics; timestamp = window start. The `gateway` tag
(the writing gateway's id) keeps a fleet's kits apart: every kit built from one config has the same device
ids; a reading's own tag of that name gives way to it. Same series and timestamp overwrite, so re-delivery
after a crash is idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from sys import intern

import orjson

from devices.line_protocol import format_value
from gateway.journal_packs import KIND_KPI, Entry, EntryBatch

__all__ = ["entry_line", "entry_lines", "escape_key", "escape_tag"]

# Line protocol cannot carry a line break inside a key or tag value (influxd splits lines on it and answers
# 400), so CR and LF become *escaped* spaces: an unescaped space would end the tag set.
_KEY_TABLE = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\ ", "\r": r"\ "})
_MEASUREMENT_TABLE = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\ ", "\r": r"\ "})
_RESERVED_READING = ("gateway", "device_id", "quantity", "unit", "quality")
_RESERVED_KPI = ("gateway", "device_id", "name", "window", "unit", "valid")


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key (commas, equals signs, spaces; newlines become spaces)."""
    out = text.translate(_KEY_TABLE)
    # A trailing backslash would escape the separator that follows it.
    return out + " " if out.endswith("\\") else out


escape_tag = escape_key


def _tag_set(fixed: list[tuple[str, str]], extra: Mapping[str, str], reserved: tuple[str, ...]) -> str:
    pairs = [(k, v) for k, v in fixed if v != ""]
    pairs.extend((k, str(v)) for k, v in extra.items() if k not in reserved and str(v) != "")
    pairs.sort()
    return "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in pairs)


_prefix_cache: dict[tuple[str, str, str, str, str, str], str] = {}
# Series; beyond it the cache is rebuilt (bounded memory). 4,096 covers a kit of 400 ten-quantity devices. A kit with
# more series in rotation formats each series' prefix once per pack instead (a few µs), as it did at 10,000 devices
# with 20,000 entries, which missed there too and held 4.7 MB.
_PREFIX_CACHE_MAX = 4096


def _reading_prefix(gateway: str, device_id: str, quantity: str, unit: str, quality: str, tags_json: str) -> str:
    key = (gateway, device_id, quantity, unit, quality, tags_json)
    prefix = _prefix_cache.get(key)
    if prefix is None:
        fixed = [("gateway", gateway), ("device_id", device_id), ("quantity", quantity), ("unit", unit),
                 ("quality", "" if quality == "good" else quality)]
        reserved = _RESERVED_READING if gateway else _RESERVED_READING[1:]
        tags = orjson.loads(tags_json) if tags_json != "{}" else {}
        prefix = f"reading{_tag_set(fixed, tags, reserved)} value="
        if len(_prefix_cache) >= _PREFIX_CACHE_MAX:
            _prefix_cache.clear()  # bounded; the next lines rebuild what is still in use
        # Interned: the cache outlives the journal rows these strings were read from.
        _prefix_cache[(intern(gateway), intern(device_id), intern(quantity), intern(unit), intern(quality),
                       intern(tags_json))] = prefix
    return prefix


def entry_line(e: Entry, gateway: str = "") -> str:
    """One line of line protocol for a journal entry, tagged with the writing gateway's id when given."""
    if e.kind == KIND_KPI:
        extra = e.extra or {}
        fixed = [("gateway", gateway), ("device_id", e.device_id), ("name", e.quantity),
                 ("window", str(extra.get("window", ""))), ("unit", e.unit),
                 ("valid", "true" if extra.get("valid", True) else "false")]
        fields = {"value": float(e.value)}
        for k, v in (extra.get("fields") or {}).items():
            if k != "value" and v is not None and not (isinstance(v, float) and v != v):
                fields[k] = v
        field_text = ",".join(f"{escape_key(k)}={format_value(v)}" for k, v in sorted(fields.items()))
        reserved = _RESERVED_KPI if gateway else _RESERVED_KPI[1:]
        return f"kpi{_tag_set(fixed, e.tags, reserved)} {field_text} {e.ts}"
    # Readings repeat the same series over and over: the escaped measurement and tag set is cached.
    prefix = _reading_prefix(gateway, e.device_id, e.quantity, e.unit, e.quality, e.tags_json)
    return f"{prefix}{float(e.value)!r} {e.ts}"


def entry_lines(entries: Sequence[Entry], gateway: str = "") -> list[str]:
    """The lines of a batch of entries (as `entry_line` gives them, one per entry), formatted a batch at once."""
    if not isinstance(entries, EntryBatch):
        return _lines_of(entries, gateway)
    lines: list[str] = []
    for part in entries.parts:
        if isinstance(part, list):
            lines.extend(_lines_of(part, gateway))
            continue
        # A pack's readings, straight from its columns: the prefix once per series of the pack, then per reading
        # one f-string (the values are floats already: packs store them so).
        p, start, stop = part
        prefixes = [_reading_prefix(gateway, d, q, u, k, t) for d, q, u, t, k in p.series]
        lines.extend([f"{prefixes[s]}{v!r} {t}"
                      for s, v, t in zip(p.s[start:stop], p.value[start:stop], p.ts[start:stop], strict=True)])
    return lines


def _lines_of(entries: Iterable[Entry], gateway: str) -> list[str]:
    # Per batch: the prefix of each series looked up once in the shared cache, then in a local dict; per reading
    # only the tuple key, one dict lookup and the f-string. No call per entry.
    prefixes: dict[tuple[str, str, str, str, str], str] = {}
    lines: list[str] = []
    append = lines.append
    for e in entries:
        if e[1] == KIND_KPI:
            append(entry_line(e, gateway))
            continue
        key = (e[3], e[4], e[5], e[8], e[7])  # device_id, quantity, unit, quality, tags_json
        prefix = prefixes.get(key)
        if prefix is None:
            prefix = prefixes[key] = _reading_prefix(gateway, e[3], e[4], e[5], e[8], e[7])
        append(f"{prefix}{float(e[6])!r} {e[2]}")
    return lines
