"""Helpers shared by MQTT payload decoders: JSON parsing, safe field paths, timestamps. No eval anywhere."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from devices.reading import DecodeError
from devices.vocabulary import QUANTITIES

__all__ = [
    "FieldSpec",
    "canonical_unit",
    "field_specs",
    "get_path",
    "parse_json_object",
    "parse_number",
    "parse_timestamp_ns",
    "topic_level",
]

_MISSING = object()


def parse_json_object(payload: bytes) -> dict[str, Any]:
    """Parse a JSON object payload; anything else is a DecodeError with the parser's reason."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"malformed JSON: {exc}", payload) from None
    if not isinstance(doc, dict):
        raise DecodeError(f"JSON payload is a {type(doc).__name__}, expected an object", payload)
    return doc


def get_path(doc: Any, path: str, default: Any = _MISSING) -> Any:
    """Follow a dotted path (`a.b.0.c`; digits index lists) through dicts and lists, without evaluation."""
    node = doc
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            if default is _MISSING:
                raise DecodeError(f"field {path!r} not found (missing at {part!r})")
            return default
    return node


def parse_number(value: Any, what: str) -> float:
    """A finite float from a JSON number or numeric string; bools, NaN and infinities are rejected."""
    kind = type(value)
    if kind is float:  # the hot path: JSON numbers with a fraction
        if value - value != 0.0:  # NaN or an infinity
            raise DecodeError(f"{what}: value is {value}, not a finite number")
        return float(value)
    if kind is int:
        return float(value)
    if isinstance(value, bool) or value is None:
        raise DecodeError(f"{what}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            raise DecodeError(f"{what}: {value[:40]!r} is not a number") from None
    else:
        raise DecodeError(f"{what}: expected a number, got a {type(value).__name__}")
    if not math.isfinite(out):
        raise DecodeError(f"{what}: value is {out}, not a finite number")
    return out


def parse_timestamp_ns(value: Any, what: str = "timestamp") -> int:
    """UTC nanoseconds from RFC 3339 text or epoch seconds/ms/us/ns (chosen by magnitude)."""
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_timestamp_ns(int(text), what)
        if text and (text[0].isdigit() and "-" not in text and ":" not in text):
            return parse_timestamp_ns(parse_number(text, what), what)
        try:
            # RFC 3339 with up to nanoseconds: Python keeps microseconds, so split the fraction off.
            frac_ns = 0
            if "." in text:
                head, _, rest = text.partition(".")
                digits = ""
                for ch in rest:
                    if not ch.isdigit():
                        break
                    digits += ch
                tail = rest[len(digits):]
                frac_ns = int((digits + "000000000")[:9]) if digits else 0
                text = head + tail
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise DecodeError(f"{what}: {value[:40]!r} is not an RFC 3339 time") from None
        if dt.tzinfo is None:
            raise DecodeError(f"{what}: {value[:40]!r} has no UTC offset")
        return int(dt.timestamp()) * 1_000_000_000 + frac_ns
    if type(value) is int:
        # Integer epochs stay integers: a float cannot hold nanoseconds since 1970 exactly.
        if value < 0:
            raise DecodeError(f"{what}: negative epoch {value}")
        if value < 10**11:
            return value * 1_000_000_000
        if value < 10**14:
            return value * 1_000_000
        if value < 10**17:
            return value * 1_000
        if value >= 2**63:
            raise DecodeError(f"{what}: epoch {value} is out of range")
        return value
    number = parse_number(value, what)
    if number < 0:
        raise DecodeError(f"{what}: negative epoch {number}")
    magnitude = abs(number)
    if magnitude < 1e11:
        return round(number * 1e9)
    if magnitude < 1e14:
        return round(number * 1e6)
    if magnitude < 1e17:
        return round(number * 1e3)
    return int(number)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Where a payload value goes: quantity, unit, and a linear conversion (value · scale + offset)."""

    quantity: str
    unit: str
    scale: float = 1.0
    offset: float = 0.0

    def apply(self, value: float) -> float:
        """The converted value; a result that overflows to infinity is a DecodeError."""
        out = value * self.scale + self.offset
        if not math.isfinite(out):
            raise DecodeError(f"{self.quantity}: {value} x {self.scale} + {self.offset} is not a finite number")
        return out


def canonical_unit(quantity: str) -> str:
    """The canonical unit of a vocabulary quantity; an unknown quantity is a DecodeError."""
    q = QUANTITIES.get(quantity)
    if q is None:
        raise DecodeError(f"unknown quantity {quantity!r} (not in the vocabulary)")
    return q.units[0]


def field_specs(option: Any, what: str = "option 'fields'") -> dict[str, FieldSpec]:
    """Parse `{key: "quantity" | {quantity, unit?, scale?, offset?}}`; a bad entry raises DecodeError."""
    if option is None:
        return {}
    if not isinstance(option, Mapping):
        raise DecodeError(f"{what} must be a table of key = quantity, got {type(option).__name__}")
    out: dict[str, FieldSpec] = {}
    for key, spec in option.items():
        if isinstance(spec, str):
            out[str(key)] = FieldSpec(spec, canonical_unit(spec))
            continue
        if not isinstance(spec, Mapping) or not isinstance(spec.get("quantity"), str):
            raise DecodeError(f"{what}[{key!r}] must be a quantity name or a table with a 'quantity'")
        quantity = spec["quantity"]
        unit = spec.get("unit") or canonical_unit(quantity)
        canonical_unit(quantity)  # an unknown quantity is an error even when a unit is given
        if not isinstance(unit, str):
            raise DecodeError(f"{what}[{key!r}].unit must be a unit name, got {unit!r}")
        scale = parse_number(spec.get("scale", 1.0), f"{what}[{key!r}].scale")
        offset = parse_number(spec.get("offset", 0.0), f"{what}[{key!r}].offset")
        out[str(key)] = FieldSpec(quantity, str(unit), scale, offset)
    return out


def topic_level(topic: str, level: int) -> str:
    """Level `level` (0-based) of an MQTT topic; a missing or empty level is a DecodeError."""
    parts = topic.split("/")
    if level < 0 or level >= len(parts) or not parts[level]:
        raise DecodeError(f"topic {topic!r} has no level {level} to take the device id from")
    return parts[level]
