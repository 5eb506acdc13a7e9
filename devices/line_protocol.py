"""InfluxDB line protocol passthrough: `measurement[,tag=value…] field=value[,…] [timestamp]`, one per line.

Escaping (InfluxDB v1/v2 reference): in measurements `\\,` and `\\ `; in tag keys, tag values and field keys
`\\,`, `\\=` and `\\ `; in string field values `\\"` and `\\\\`. `\\\\` is a backslash everywhere; a backslash
before any other character is kept literally. Integers end in `i`, unsigned in `u`, booleans are
t/T/true/True/TRUE/f/F/false/False/FALSE. See docs/devices/line_protocol.md.

Numeric fields become readings: quantity = the field key when it is a vocabulary quantity, else the option
`fields` {"measurement.field" or "field": quantity | {quantity, unit?, scale?, offset?}}; other fields, and
string and boolean fields, are skipped. A malformed line rejects the message with its line number.

Options:
- `device_tag`: tag holding the device id (default: `device_id`, else `host`); the route's id otherwise.
- `precision`: "ns" (default), "us", "ms" or "s" — the unit of the timestamps.
- `fields`: see above.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from devices.kind import DeviceKind, register
from devices.payload import FieldSpec, canonical_unit, field_specs
from devices.reading import DecodeContext, DecodeError, Reading
from devices.vocabulary import QUANTITIES

__all__ = ["Point", "decode", "encode", "format_line", "format_value", "parse"]

FieldValue = float | int | str | bool


@dataclass(slots=True)
class Point:
    """One parsed line: measurement, tags, typed fields, optional timestamp (in the payload's precision)."""

    measurement: str
    tags: dict[str, str] = field(default_factory=dict)
    fields: dict[str, FieldValue] = field(default_factory=dict)
    timestamp: int | None = None
    line: int = 0


_PRECISION_NS = {"ns": 1, "us": 1_000, "u": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+")
_UINT = re.compile(r"\d+")
_TRUE = {"t", "T", "true", "True", "TRUE"}
_FALSE = {"f", "F", "false", "False", "FALSE"}
_I64 = (-(2**63), 2**63 - 1)
_U64 = (0, 2**64 - 1)

_MEASUREMENT_ESC = frozenset(", \\")
_KEY_ESC = frozenset(",= \\")


class _LineError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Scanner:
    """A cursor over the payload text; newlines inside quoted string fields are part of the field."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self, escapable: frozenset[str], stops: str, what: str) -> str:
        """Read an unquoted token up to an unescaped character of `stops` (or a newline / the end)."""
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in escapable:
                out.append(text[self.pos + 1])
                self.pos += 2
                continue
            if ch in stops or ch == "\n":
                break
            out.append(ch)
            self.pos += 1
        if not out:
            raise _LineError(f"empty {what} at column {self.column()}")
        return "".join(out)

    def column(self) -> int:
        start = self.text.rfind("\n", 0, self.pos) + 1
        return self.pos - start + 1

    def expect(self, ch: str, what: str) -> None:
        if self.peek() != ch:
            got = repr(self.peek()) if self.peek() else "end of line"
            raise _LineError(f"expected {what} at column {self.column()}, found {got}")
        self.pos += 1

    def skip_spaces(self) -> None:
        while self.peek() == " ":
            self.pos += 1


def _parse_field_value(sc: _Scanner) -> FieldValue:
    text = sc.text
    if sc.peek() == '"':
        sc.pos += 1
        out: list[str] = []
        while True:
            if sc.pos >= len(text):
                raise _LineError("unterminated string field value (missing closing quote)")
            ch = text[sc.pos]
            if ch == "\\" and sc.pos + 1 < len(text) and text[sc.pos + 1] in '"\\':
                out.append(text[sc.pos + 1])
                sc.pos += 2
                continue
            if ch == '"':
                sc.pos += 1
                return "".join(out)
            if ch == "\n":
                sc.line += 1
            out.append(ch)
            sc.pos += 1
    start = sc.pos
    while sc.pos < len(text) and text[sc.pos] not in ", \r\n":
        sc.pos += 1
    raw = text[start:sc.pos]
    if not raw:
        raise _LineError(f"empty field value at column {sc.column()}")
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if raw[-1] == "i" and _INT.fullmatch(raw[:-1]):
        value = int(raw[:-1])
        if not _I64[0] <= value <= _I64[1]:
            raise _LineError(f"integer field value {raw} is out of the int64 range")
        return value
    if raw[-1] == "u" and _UINT.fullmatch(raw[:-1]):
        value = int(raw[:-1])
        if value > _U64[1]:
            raise _LineError(f"unsigned field value {raw} is out of the uint64 range")
        return value
    if _FLOAT.fullmatch(raw):
        number = float(raw)
        if number in (float("inf"), float("-inf")):
            raise _LineError(f"float field value {raw[:40]} overflows")
        return number
    raise _LineError(f"invalid field value {raw[:40]!r} (not a number, i/u integer, boolean or string)")


def _parse_point(sc: _Scanner) -> Point:
    point = Point(sc.token(_MEASUREMENT_ESC, ", ", "measurement"), line=sc.line)
    while sc.peek() == ",":
        sc.pos += 1
        key = sc.token(_KEY_ESC, ",= ", "tag key")
        sc.expect("=", f"'=' after tag key {key!r}")
        value = sc.token(_KEY_ESC, ",= ", f"tag value of {key!r}")
        if sc.peek() == "=":
            raise _LineError(f"unescaped '=' in the value of tag {key!r} at column {sc.column()}")
        point.tags[key] = value
    if sc.peek() != " ":
        got = repr(sc.peek()) if sc.peek() else "end of line"
        raise _LineError(f"expected a space before the field set at column {sc.column()}, found {got}")
    sc.skip_spaces()
    while True:
        key = sc.token(_KEY_ESC, ",= ", "field key")
        sc.expect("=", f"'=' after field key {key!r}")
        point.fields[key] = _parse_field_value(sc)
        if sc.peek() != ",":
            break
        sc.pos += 1
    if sc.peek() == " ":
        sc.skip_spaces()
        start = sc.pos
        while sc.pos < len(sc.text) and sc.text[sc.pos] not in " \r\n":
            sc.pos += 1
        raw = sc.text[start:sc.pos]
        if raw:
            if not _INT.fullmatch(raw):
                raise _LineError(f"timestamp {raw[:40]!r} is not an integer")
            ts = int(raw)
            if not _I64[0] <= ts <= _I64[1]:
                raise _LineError(f"timestamp {raw[:40]} is out of the int64 range")
            point.timestamp = ts
        sc.skip_spaces()
    if sc.peek() not in ("", "\n", "\r"):
        raise _LineError(f"unexpected {sc.peek()!r} at column {sc.column()} after the field set")
    if sc.peek() == "\r":
        sc.pos += 1
        if sc.peek() not in ("", "\n"):
            raise _LineError(f"stray carriage return at column {sc.column() - 1}")
    return point


def parse(text: str) -> list[Point]:
    """Parse line-protocol text into points; a malformed line raises DecodeError naming the line."""
    sc = _Scanner(text)
    points: list[Point] = []
    while sc.pos < len(text):
        ch = sc.peek()
        if ch == "\n":
            sc.pos += 1
            sc.line += 1
            continue
        line_start = sc.line
        rest_end = text.find("\n", sc.pos)
        rest = text[sc.pos: rest_end if rest_end >= 0 else len(text)]
        if not rest.strip() or rest.lstrip().startswith("#"):
            sc.pos += len(rest)  # blank line or comment
            continue
        sc.skip_spaces()
        try:
            points.append(_parse_point(sc))
        except _LineError as exc:
            raise DecodeError(f"line {line_start}: {exc.reason}", rest.encode()[:200]) from None
    return points


def _resolve(point: Point, key: str, specs: Mapping[str, FieldSpec]) -> FieldSpec | None:
    spec = specs.get(f"{point.measurement}.{key}") or specs.get(key)
    if spec is not None:
        return spec
    if key in QUANTITIES:
        return FieldSpec(key, canonical_unit(key))
    return None


def decode(payload: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode line-protocol text into readings, one per numeric field that maps to a quantity."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"payload is not UTF-8 text (byte {exc.start})", payload) from None
    opts = ctx.options
    precision = opts.get("precision", "ns")
    if not isinstance(precision, str) or precision not in _PRECISION_NS:
        raise DecodeError(f"option 'precision' is {precision!r}, expected one of ns, us, ms, s")
    scale = _PRECISION_NS[precision]
    device_tag = opts.get("device_tag")
    if device_tag is not None and not isinstance(device_tag, str):
        raise DecodeError(f"option 'device_tag' must be a tag name, got {device_tag!r}")
    tag_names = (device_tag,) if device_tag else ("device_id", "host")
    specs = field_specs(opts.get("fields"))

    points = parse(text)
    if not points:
        raise DecodeError("payload has no line-protocol points", payload)
    out: list[Reading] = []
    for point in points:
        mapped = [
            (spec, float(value))
            for key, value in point.fields.items()
            if not isinstance(value, bool | str)  # strings and booleans are not measurements
            and (spec := _resolve(point, key, specs)) is not None
        ]
        if not mapped:
            continue
        tags = dict(point.tags)
        device_id = ""
        for name in tag_names:
            if name in tags:
                device_id = tags.pop(name)
                break
        device_id = device_id or ctx.device_id
        if not device_id:
            raise DecodeError(
                f"line {point.line}: no {' or '.join(tag_names)} tag and the route sets no device id"
            )
        ts = ctx.received_ns if point.timestamp is None else point.timestamp * scale
        if not _I64[0] <= ts <= _I64[1]:
            raise DecodeError(f"line {point.line}: timestamp {point.timestamp} in {precision} overflows int64 ns")
        all_tags = {**ctx.tags, "measurement": point.measurement, **tags}
        for spec, value in mapped:
            out.append(Reading(device_id, spec.quantity, spec.apply(value), spec.unit, ts, all_tags))
    if not out:
        raise DecodeError("no numeric field maps to a known quantity (use option 'fields')", payload)
    return out


def _escape(text: str, chars: str) -> str:
    out = text.replace("\\", "\\\\")
    for ch in chars:
        out = out.replace(ch, "\\" + ch)
    return out


def format_value(value: FieldValue) -> str:
    """A field value in line protocol: `true`, `12i`, `0.5`, or a quoted string with escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_line(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], timestamp: int | None = None
) -> str:
    """One line of line protocol, escaped (ints get the `i` suffix; floats must be finite)."""
    head = _escape(measurement, ", ")
    for key, value in sorted(tags.items()):
        head += f",{_escape(key, ',= ')}={_escape(value, ',= ')}"
    body = ",".join(f"{_escape(k, ',= ')}={format_value(v)}" for k, v in fields.items())
    return f"{head} {body}" + (f" {timestamp}" if timestamp is not None else "")


def encode(device_id: str, ts_ns: int, values: Mapping[str, float], measurement: str = "citygw") -> bytes:
    """One point with `device_id` as a tag and each quantity as a float field (used by the simulator)."""
    fields = {k: float(v) for k, v in values.items()}
    return format_line(measurement, {"device_id": device_id}, fields, ts_ns).encode()


KIND = register(
    DeviceKind(
        name="line_protocol",
        link="mqtt",
        summary="InfluxDB line protocol passthrough: numeric fields named after quantities (or mapped)",
        quantities=(),
        decode=decode,
        encode=encode,
        doc="line_protocol.md",
    )
)
