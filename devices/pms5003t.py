"""Plantower PMS5003T: the PMS5003 32-byte frame with words 11-12 reused for temperature and humidity.

Same framing, checksum and commands as `devices.pms5003`. Bytes 24-25 carry temperature × 10 and bytes
26-27 relative humidity × 10 (reference §1: `00 D4` = 21.2 °C, `00 E0` = 22.4 %), so the > 5.0 µm and > 10 µm
counts do not exist on this sensor.

Sign choice: the reference leaves sub-zero temperatures unverified. We read the temperature word as a
signed 16-bit two's-complement value: an unsigned reading above 3276.7 °C is physically impossible, so this
loses nothing above zero and gives the only sensible meaning to `FF xx` words outdoors in winter.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from devices import pms5003
from devices.kind import DeviceKind, register
from devices.reading import DecodeContext, DecodeError, Reading

# Words 1..10 as in the PMS5003; words 11 and 12 are temperature and humidity.
FIELDS: tuple[tuple[str, str], ...] = (
    *pms5003.FIELDS[:10],
    ("temperature", "degC"),
    ("relative_humidity", "%"),
)

_WORDS = struct.Struct(">4x10HhH2x2x")


def decode(frame: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode one 32-byte PMS5003T frame into 12 readings (PM, four counts, temperature, humidity)."""
    if len(frame) == pms5003.ACK_LEN:
        pms5003.parse_ack(frame)
        return []
    reason = pms5003.frame_error(frame)
    if reason is not None:
        raise DecodeError(reason, frame)
    raw = _WORDS.unpack(frame)
    values = [float(v) for v in raw[:10]] + [raw[10] / 10.0, raw[11] / 10.0]
    return [
        Reading(ctx.device_id, quantity, value, unit, ctx.received_ns, ctx.tags)
        for (quantity, unit), value in zip(FIELDS, values, strict=True)
    ]


def encode(values: Mapping[str, float], reserved: int = 0x9700) -> bytes:
    """Build a PMS5003T frame from {quantity: value} (temperature degC, humidity %); missing values are 0."""
    words = [max(0, min(0xFFFF, round(values.get(q, 0)))) for q, _ in FIELDS[:10]]
    temp = max(-0x8000, min(0x7FFF, round(values.get("temperature", 0) * 10)))
    rh = max(0, min(0xFFFF, round(values.get("relative_humidity", 0) * 10)))
    body = struct.pack(">2sH10HhHH", pms5003.HEADER, 28, *words, temp, rh, reserved)
    return body + pms5003.checksum(body).to_bytes(2, "big")


KIND = register(
    DeviceKind(
        name="pms5003t",
        link="serial",
        summary="Plantower PMS5003T particulate sensor with temperature and humidity, active-mode frames",
        quantities=FIELDS,
        decode=decode,
        encode=encode,
        framer=pms5003.make_framer,
        doc="pms5003t.md",
    )
)
