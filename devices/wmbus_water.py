"""Wireless M-Bus water meters (EN 13757-4 radio, EN 13757-3 application layer), unencrypted telegrams.

Input: one telegram as a wM-Bus dongle delivers it in transparent mode, link-layer CRC blocks removed:
`L C M(2, LE) A(ID 4 BCD LE, version, type) CI [TPL header] records…` (reference §6b). CI 7A (short
header: ACC STS CFG), 72 (long header: ID M version type ACC STS CFG) and 78 (no header) are decoded; the
meter identity is taken from the long header when there is one.

Records are DIF/VIF coded; we read the current (storage 0, tariff 0, instantaneous) volume with VIF 10-17
(10^(n-6) m³) as `water_volume`, and volume flow with VIF 38-3F (m³/h), 40-47 (m³/min) or 48-4F (m³/s) as
`water_flow` in m³/h. Records with VIF extensions, storage > 0 (due-date values) or tariffs are skipped.
A type-F date-time record (04 6D) is the meter clock; it is used as the reading time only when option
`meter_time = true` (its zone from option `meter_timezone`, default UTC), because meter clocks drift and
carry no zone.

Encryption: CFG bits 8-12 give the security mode. A telegram whose payload does not begin with the `2F 2F`
marker that every decrypted payload starts with is rejected ("encrypted (security mode 5), key needed");
decryption needs the utility's key and is out of scope. A payload already decrypted upstream is accepted.

Options: `meter_ids` (list of meter id strings; telegrams from other meters heard by the same dongle are
rejected), `meter_time`, `meter_timezone`. Readings get tags `meter_id` and `manufacturer`; their device id
is the configured one, or `wmbus-<meter id>` when none is configured.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from devices.kind import DeviceKind, register
from devices.reading import DecodeContext, DecodeError, Reading

__all__ = [
    "FIELDS",
    "KIND",
    "Header",
    "Record",
    "WmbusFramer",
    "decode",
    "encode",
    "make_framer",
    "parse_header",
    "parse_records",
    "telegram_error",
]

FIELDS: tuple[tuple[str, str], ...] = (("water_volume", "m3"), ("water_flow", "m3/h"))

C_FIELDS = frozenset((0x44, 0x46, 0x08, 0x18, 0x28, 0x38))  # SND_NR, SND_IR, RSP_UD (with FCB/ACD bits)
CI_SHORT, CI_LONG, CI_NONE = 0x7A, 0x72, 0x78
KNOWN_CI = frozenset((CI_SHORT, CI_LONG, CI_NONE, 0x8C, 0x8D))  # 8C/8D = ELL, framed but not decoded
WATER_TYPES = {0x06: "warm water", 0x07: "water", 0x15: "hot water", 0x16: "cold water", 0x17: "dual water",
               0x28: "waste water"}
FILLER = 0x2F

# Data field (DIF bits 0-3) → data length in bytes; 0x0D is variable length, 0x0F special.
_DATA_LEN = {0x0: 0, 0x1: 1, 0x2: 2, 0x3: 3, 0x4: 4, 0x5: 4, 0x6: 6, 0x7: 8, 0x8: 0, 0x9: 1, 0xA: 2, 0xB: 3,
             0xC: 4, 0xE: 6}
_BCD = frozenset((0x9, 0xA, 0xB, 0xC, 0xE))
_INT = frozenset((0x1, 0x2, 0x3, 0x4, 0x6, 0x7))


@dataclass(frozen=True, slots=True)
class Header:
    """The link-layer and transport-layer header of a telegram."""

    length: int
    c_field: int
    manufacturer: str
    meter_id: str
    version: int
    device_type: int
    ci: int
    access_no: int
    status: int
    security_mode: int
    payload_offset: int


@dataclass(frozen=True, slots=True)
class Record:
    """One DIF/VIF data record; `value` is the raw number (before VIF scaling), None when not numeric."""

    dif: int
    vif: int
    vife: tuple[int, ...]
    storage: int
    tariff: int
    subunit: int
    function: int  # 0 instantaneous, 1 maximum, 2 minimum, 3 value during error
    data: bytes
    value: float | None


def manufacturer_code(m: int) -> str:
    """Three-letter manufacturer code from the 16-bit M field (5 bits per letter, + 64)."""
    return "".join(chr(((m >> shift) & 0x1F) + 64) for shift in (10, 5, 0))


def manufacturer_field(code: str) -> int:
    """The 16-bit M field of a three-letter manufacturer code (used by the encoder)."""
    if len(code) != 3 or not all("A" <= ch <= "Z" for ch in code):
        raise ValueError(f"manufacturer code {code!r} is not three letters A-Z")
    return ((ord(code[0]) - 64) << 10) | ((ord(code[1]) - 64) << 5) | (ord(code[2]) - 64)


def _id_string(raw: bytes) -> str:
    # 4 bytes BCD little-endian; meters with hex ids still give a stable 8-character string.
    return raw[::-1].hex()


def parse_header(telegram: bytes) -> Header:
    """Parse L, C, M, A, CI and the TPL header; raises DecodeError naming the failed check."""
    if len(telegram) < 11:
        raise DecodeError(f"telegram is {len(telegram)} bytes, shorter than the 11-byte header", telegram)
    length = telegram[0]
    if length + 1 != len(telegram):
        raise DecodeError(
            f"length field says {length} bytes follow, telegram has {len(telegram) - 1}", telegram
        )
    c_field = telegram[1]
    if c_field not in C_FIELDS:
        raise DecodeError(f"C field {c_field:02x} is not a data telegram (44 SND-NR expected)", telegram)
    manufacturer = manufacturer_code(int.from_bytes(telegram[2:4], "little"))
    meter_id = _id_string(telegram[4:8])
    version, device_type, ci = telegram[8], telegram[9], telegram[10]
    if ci == CI_SHORT:
        if len(telegram) < 15:
            raise DecodeError("telegram too short for the CI 7a short header", telegram)
        access_no, status = telegram[11], telegram[12]
        cfg = int.from_bytes(telegram[13:15], "little")
        offset = 15
    elif ci == CI_LONG:
        if len(telegram) < 23:
            raise DecodeError("telegram too short for the CI 72 long header", telegram)
        meter_id = _id_string(telegram[11:15])
        manufacturer = manufacturer_code(int.from_bytes(telegram[15:17], "little"))
        version, device_type = telegram[17], telegram[18]
        access_no, status = telegram[19], telegram[20]
        cfg = int.from_bytes(telegram[21:23], "little")
        offset = 23
    elif ci == CI_NONE:
        access_no = status = cfg = 0
        offset = 11
    else:
        raise DecodeError(f"CI {ci:02x} not supported (expected 7a, 72 or 78)", telegram)
    return Header(length, c_field, manufacturer, meter_id, version, device_type, ci, access_no, status,
                  (cfg >> 8) & 0x1F, offset)


def _bcd(data: bytes) -> float | None:
    digits = data[::-1].hex()
    sign = 1
    if digits and digits[0] == "f":  # a top nibble F marks a negative BCD number
        sign, digits = -1, digits[1:]
    if not digits.isdigit():
        return None
    return float(sign * int(digits))


def _number(data_field: int, data: bytes) -> float | None:
    if data_field in _INT:
        return float(int.from_bytes(data, "little", signed=True))
    if data_field == 0x5:
        value = float(struct.unpack("<f", data)[0])
        return value if math.isfinite(value) else None  # NaN / inf are not values
    if data_field in _BCD:
        return _bcd(data)
    return None


def _lvar_len(lvar: int) -> int:
    if lvar < 0xC0:
        return lvar  # ASCII string
    if lvar < 0xE0:
        return lvar & 0x0F  # positive (Cx) or negative (Dx) BCD, x bytes
    if lvar < 0xF0:
        return lvar - 0xE0  # binary number
    if lvar <= 0xF4:
        return 4 * (lvar - 0xEC)
    if lvar == 0xF5:
        return 48
    if lvar == 0xF6:
        return 64
    raise DecodeError(f"reserved variable-length code {lvar:02x}")


def _take(payload: bytes, pos: int, n: int, what: str) -> int:
    if pos + n > len(payload):
        raise DecodeError(f"record cut short: {what} needs {n} bytes at offset {pos}", payload)
    return pos + n


def parse_records(payload: bytes) -> list[Record]:
    """Parse every DIF/VIF record of an unencrypted application payload; DecodeError on bad structure."""
    records: list[Record] = []
    pos = 0
    n = len(payload)
    while pos < n:
        dif = payload[pos]
        pos += 1
        if dif == FILLER:
            continue
        if dif & 0x0F == 0x0F:
            break  # 0F/1F: manufacturer-specific data up to the end; other xF: no more records
        data_field = dif & 0x0F
        function = (dif >> 4) & 0x03
        storage = (dif >> 6) & 0x01
        tariff = subunit = 0
        ext, depth = dif & 0x80, 0
        while ext:
            _take(payload, pos, 1, "DIFE")
            dife = payload[pos]
            pos += 1
            if depth >= 10:
                raise DecodeError("more than 10 DIFE bytes", payload)
            storage |= (dife & 0x0F) << (1 + 4 * depth)
            tariff |= ((dife >> 4) & 0x03) << (2 * depth)
            subunit |= ((dife >> 6) & 0x01) << depth
            ext, depth = dife & 0x80, depth + 1
        _take(payload, pos, 1, "VIF")
        vif = payload[pos]
        pos += 1
        if vif & 0x7F == 0x7C:  # plain-text VIF: a length byte, then that many ASCII characters
            _take(payload, pos, 1, "plain-text VIF length")
            pos = _take(payload, pos + 1, payload[pos], "plain-text VIF")
        vife: list[int] = []
        ext = vif & 0x80
        while ext:
            _take(payload, pos, 1, "VIFE")
            if len(vife) >= 10:
                raise DecodeError("more than 10 VIFE bytes", payload)
            vife.append(payload[pos])
            ext = payload[pos] & 0x80
            pos += 1
        if data_field == 0x0D:
            _take(payload, pos, 1, "variable-length LVAR")
            size = _lvar_len(payload[pos])
            pos += 1
        else:
            size = _DATA_LEN[data_field]
        end = _take(payload, pos, size, f"data of DIF {dif:02x}")
        data = bytes(payload[pos:end])
        pos = end
        value = _number(data_field, data) if data_field != 0x0D else None
        records.append(Record(dif, vif, tuple(vife), storage, tariff, subunit, function, data, value))
    return records


def _type_f(data: bytes) -> dt.datetime | None:
    """Type F date-time (4 bytes): minute, hour, day, month, year; None when flagged invalid or impossible."""
    b0, b1, b2, b3 = data
    if b0 & 0x80:
        return None
    year = 2000 + (((b2 & 0xE0) >> 5) | ((b3 & 0xF0) >> 1))
    try:
        return dt.datetime(year, b3 & 0x0F, b2 & 0x1F, b1 & 0x1F, b0 & 0x3F)
    except ValueError:
        return None


def _encrypted(header: Header, payload: bytes) -> bool:
    return header.security_mode != 0 and payload[:2] != b"\x2f\x2f"


def telegram_error(telegram: bytes) -> str | None:
    """None when the telegram's header and (when readable) record structure are consistent, else why not."""
    try:
        header = parse_header(telegram)
        payload = telegram[header.payload_offset :]
        if not _encrypted(header, payload):
            parse_records(payload)
    except DecodeError as exc:
        return exc.reason
    return None


def _flow_m3h(vif: int) -> float | None:
    exp = vif & 0x07
    if 0x38 <= vif <= 0x3F:
        return 10.0 ** (exp - 6)
    if 0x40 <= vif <= 0x47:
        return 10.0 ** (exp - 7) * 60.0
    if 0x48 <= vif <= 0x4F:
        return 10.0 ** (exp - 9) * 3600.0
    return None


def _options(opts: Mapping[str, Any]) -> tuple[set[str] | None, bool, str]:
    ids = opts.get("meter_ids")
    wanted = {str(i).lower() for i in ids} if ids else None
    return wanted, bool(opts.get("meter_time", False)), str(opts.get("meter_timezone", "UTC"))


def decode(telegram: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode one unencrypted telegram into water_volume (m³) and, when present, water_flow (m³/h)."""
    header = parse_header(telegram)
    wanted, use_meter_time, tz_name = _options(ctx.options)
    if wanted is not None and header.meter_id not in wanted:
        raise DecodeError(f"meter {header.meter_id} is not in options.meter_ids", telegram)
    if header.device_type not in WATER_TYPES:
        raise DecodeError(f"device type {header.device_type:02x} is not a water meter", telegram)
    payload = telegram[header.payload_offset :]
    if _encrypted(header, payload):
        raise DecodeError(f"encrypted (security mode {header.security_mode}), key needed", telegram)
    volume: float | None = None
    flow: float | None = None
    meter_dt: dt.datetime | None = None
    for rec in parse_records(payload):
        current = rec.storage == 0 and rec.tariff == 0 and rec.subunit == 0 and rec.function == 0
        if not current or rec.vife:
            continue
        if rec.vif == 0x6D and rec.dif & 0x0F == 0x4 and meter_dt is None:
            meter_dt = _type_f(rec.data)
        elif rec.value is None:
            continue
        elif 0x10 <= rec.vif <= 0x17 and volume is None:
            volume = rec.value * 10.0 ** ((rec.vif & 0x07) - 6)
        elif (scale := _flow_m3h(rec.vif)) is not None and flow is None:
            flow = rec.value * scale
    if volume is None and flow is None:
        raise DecodeError("telegram has no current volume (VIF 10-17) or flow (VIF 38-4F) record", telegram)
    ts = ctx.received_ns
    if use_meter_time and meter_dt is not None:
        try:
            zone = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise DecodeError(f"options.meter_timezone {tz_name!r} is not a known time zone") from None
        ts = int(meter_dt.replace(tzinfo=zone).timestamp()) * 1_000_000_000
    device_id = ctx.device_id or f"wmbus-{header.meter_id}"
    tags = {**ctx.tags, "meter_id": header.meter_id, "manufacturer": header.manufacturer}
    out: list[Reading] = []
    if volume is not None:
        out.append(Reading(device_id, "water_volume", round(volume, 9), "m3", ts, tags))
    if flow is not None:
        out.append(Reading(device_id, "water_flow", round(flow, 9), "m3/h", ts, tags))
    return out


def encode(
    values: Mapping[str, float],
    meter_id: str = "12345699",
    manufacturer: str = "SEN",
    version: int = 0x68,
    device_type: int = 0x07,
    access_no: int = 0,
    meter_time: dt.datetime | None = None,
) -> bytes:
    """Build an unencrypted CI 7A telegram: volume (04 13, litres), flow (02 3B, l/h), date-time (04 6D)."""
    if len(meter_id) != 8 or not meter_id.isdigit():
        raise ValueError(f"meter id {meter_id!r} is not 8 decimal digits")
    payload = bytearray(b"\x2f\x2f")
    if "water_volume" in values:
        litres = max(0, min(0x7FFFFFFF, round(values["water_volume"] * 1000)))
        payload += b"\x04\x13" + litres.to_bytes(4, "little")
    if "water_flow" in values:
        lph = max(-0x8000, min(0x7FFF, round(values["water_flow"] * 1000)))
        payload += b"\x02\x3b" + lph.to_bytes(2, "little", signed=True)
    if meter_time is not None:
        y = meter_time.year - 2000
        payload += b"\x04\x6d" + bytes((
            meter_time.minute & 0x3F,
            meter_time.hour & 0x1F,
            (meter_time.day & 0x1F) | ((y & 0x07) << 5),
            (meter_time.month & 0x0F) | ((y & 0x78) << 1),
        ))
    body = (
        bytes((0x44,))
        + manufacturer_field(manufacturer).to_bytes(2, "little")
        + bytes.fromhex(meter_id)[::-1]
        + bytes((version, device_type, CI_SHORT, access_no & 0xFF, 0x00))
        + b"\x00\x00"  # CFG: no encryption
        + bytes(payload)
    )
    return bytes((len(body),)) + body


class WmbusFramer:
    """Splits a byte stream of L-prefixed telegrams. There is no CRC left, so a candidate is accepted only
    when its C field and CI are known and its records parse exactly to its end; otherwise the scan moves
    one byte on, and each run of skipped bytes is reported once."""

    def __init__(self, max_buffer: int = 4096) -> None:
        self._buf = bytearray()
        self._max_buffer = max_buffer

    @staticmethod
    def _plausible(buf: bytearray) -> bool:
        return buf[0] >= 10 and buf[1] in C_FIELDS and buf[10] in KNOWN_CI

    def feed(self, data: bytes) -> Iterator[bytes | DecodeError]:
        """Consume `data`; yield each complete telegram, and a DecodeError for each skipped run of bytes."""
        self._buf += data
        buf = self._buf
        skipped = bytearray()
        last_reason = "no telegram header (L, C 44, CI 7a/72/78) found"
        while len(buf) >= 11:
            if self._plausible(buf):
                size = buf[0] + 1
                if len(buf) < size:
                    break
                frame = bytes(buf[:size])
                reason = telegram_error(frame) if frame[10] in (CI_SHORT, CI_LONG, CI_NONE) else None
                if reason is None:
                    if skipped:
                        yield DecodeError(f"bytes skipped: {last_reason}", bytes(skipped))
                        skipped.clear()
                    del buf[:size]
                    yield frame
                    continue
                last_reason = reason
            skipped.append(buf[0])
            del buf[0]
            if len(skipped) >= self._max_buffer:
                yield DecodeError(f"bytes skipped: {last_reason}", bytes(skipped))
                skipped.clear()
        if skipped:
            yield DecodeError(f"bytes skipped: {last_reason}", bytes(skipped))


def make_framer() -> WmbusFramer:
    """A fresh framer for a dongle's telegram stream."""
    return WmbusFramer()


KIND = register(
    DeviceKind(
        name="wmbus_water",
        link="serial",
        summary="Wireless M-Bus water meter telegrams (unencrypted, CI 7A/72/78) from a transparent dongle",
        quantities=FIELDS,
        decode=decode,
        encode=encode,
        framer=make_framer,
        doc="wmbus_water.md",
    )
)
