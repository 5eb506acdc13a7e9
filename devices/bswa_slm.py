"""BSWA 308/309 class-1 sound level meter, serial ASCII protocol (reference §8b; BSWA 308/309 manual §5).

Block: `STX(02) ADDR TYPE payload ETX(03) BCC CR LF`; BCC = XOR of every byte from STX through ETX. TYPE
`C` = command from the host, `A` = answer, `06` ACK, `15` NAK. ADDR is the meter id (1-255, 0 = broadcast).

The gateway polls with `DMA1 ?` (main-screen data, single return). The answer payload is 5 ASCII fields
`filter,detector,mode,level,overload` (e.g. `0,0,0,074.3,0` = A, Fast, SPL, 74.3 dB, normal).

Mapping (A-weighting only, because the noise_* quantities are A-weighted):
- mode 2 LEQ → `noise_laeq`; 3 MAX → `noise_lamax`; 4 MIN → `noise_lamin`.
- mode 0 SPL (the instantaneous time-weighted level, the screen meters are often left on) → `noise_spl`, a
  quantity of its own: an SPL sample is not an equivalent level, so it never enters LAeq series or Lden.
- mode 1 PEAK is rejected with a reason (a peak is no level to average). Filters B, C, Z are rejected.
- Tags `filter` (A) and `detector` (the time weighting: fast/slow/impulse) are added.
- Overload indicator 1/3 (overload now / during the integration) gives quality "overload", 2/4 (under-range)
  gives "under_range"; the reading is kept (the meter's level is a bound, not garbage). With option
  `overload = "reject"` such answers are rejected instead.

Options: `address` (meter id, default 1; answers from another id are rejected),
`overload` ("flag" | "reject").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from devices.kind import DeviceKind, register
from devices.reading import DecodeContext, DecodeError, Reading

__all__ = ["FIELDS", "KIND", "BswaFramer", "answer", "bcc", "block", "decode", "encode", "frame_error", "make_framer",
           "parse_frame", "poll_request", "request"]

STX, ETX, CR, LF = 0x02, 0x03, 0x0D, 0x0A
TYPE_COMMAND, TYPE_ANSWER, TYPE_ACK, TYPE_NAK = 0x43, 0x41, 0x06, 0x15
MAX_FRAME = 512

FIELDS: tuple[tuple[str, str], ...] = (
    ("noise_laeq", "dBA"),
    ("noise_lamax", "dBA"),
    ("noise_lamin", "dBA"),
    ("noise_spl", "dBA"),
)
FILTERS = ("A", "B", "C", "Z")
DETECTORS = ("fast", "slow", "impulse")
MODES = ("SPL", "PEAK", "LEQ", "MAX", "MIN")
_QUANTITY_OF_MODE = {0: "noise_spl", 2: "noise_laeq", 3: "noise_lamax", 4: "noise_lamin"}
_MODE_OF_QUANTITY = {q: m for m, q in _QUANTITY_OF_MODE.items()}
OVERLOAD_QUALITY = {1: "overload", 2: "under_range", 3: "overload", 4: "under_range"}
POLL_TEXT = "DMA1 ?"


def bcc(data: bytes) -> int:
    """XOR of all bytes (the block check character over STX..ETX)."""
    out = 0
    for b in data:
        out ^= b
    return out


def block(address: int, kind: int, payload: bytes = b"") -> bytes:
    """A block `STX ADDR TYPE payload ETX BCC CR LF` (TYPE 43 command, 41 answer, 06 ACK, 15 NAK)."""
    if not 0 <= address <= 0xFF:
        raise ValueError(f"meter address {address} out of 0..255")
    body = bytes((STX, address, kind)) + payload + bytes((ETX,))
    return body + bytes((bcc(body), CR, LF))


def request(text: str, address: int = 1) -> bytes:
    """A command block carrying the ASCII command `text` (e.g. "DMA1 ?", "STA1") to meter `address`."""
    return block(address, TYPE_COMMAND, text.encode("ascii"))


def answer(text: str, address: int = 1) -> bytes:
    """An answer block carrying `text` (used by the simulator)."""
    return block(address, TYPE_ANSWER, text.encode("ascii"))


def _address(options: Mapping[str, Any]) -> int:
    try:
        return int(options.get("address", 1))
    except (TypeError, ValueError):
        raise ValueError(f"options.address {options.get('address')!r} is not an integer") from None


def poll_request(options: Mapping[str, Any]) -> bytes:
    """`DMA1 ?` (main-screen data, single return) to the configured meter address."""
    return request(POLL_TEXT, _address(options))


def frame_error(frame: bytes) -> str | None:
    """None when `frame` is a well-formed block (framing, printable payload, BCC), else which check failed."""
    if len(frame) < 7:
        return f"block is {len(frame)} bytes, shorter than the 7-byte minimum"
    if frame[0] != STX:
        return f"block starts with {frame[0]:02x}, expected 02"
    if frame[-2:] != b"\r\n":
        return "block does not end with CR LF"
    if frame[-4] != ETX:
        return f"byte before BCC is {frame[-4]:02x}, expected ETX 03"
    if any(not 0x20 <= b < 0x7F for b in frame[3:-4]):
        return "payload has non-printable bytes"
    expected = bcc(frame[:-3])
    if frame[-3] != expected:
        return f"BCC mismatch: block says {frame[-3]:02x}, XOR gives {expected:02x}"
    return None


def parse_frame(frame: bytes) -> tuple[int, int, str]:
    """(address, type byte, payload text) of a valid block; raises DecodeError otherwise."""
    reason = frame_error(frame)
    if reason is not None:
        raise DecodeError(reason, frame)
    return frame[1], frame[2], frame[3:-4].decode("ascii")


def _field(fields: list[str], i: int, name: str, allowed: int, frame: bytes) -> int:
    text = fields[i].strip()
    if not text.isdigit() or int(text) >= allowed:
        raise DecodeError(f"{name} field {text!r} is not 0..{allowed - 1}", frame)
    return int(text)


def decode(frame: bytes, ctx: DecodeContext) -> list[Reading]:
    """Decode a DMA answer into one noise_spl / noise_laeq / noise_lamax / noise_lamin reading; an ACK gives []."""
    address, kind, text = parse_frame(frame)
    expected = _address(ctx.options) if "address" in ctx.options else None
    if expected is not None and address != expected:
        raise DecodeError(f"answer from meter address {address}, expected {expected}", frame)
    if kind == TYPE_ACK:
        return []
    if kind == TYPE_NAK:
        raise DecodeError("meter answered NAK (command refused)", frame)
    if kind != TYPE_ANSWER:
        raise DecodeError(f"block type {kind:02x} is not an answer (41)", frame)
    fields = text.split(",")
    if len(fields) != 5:
        raise DecodeError(f"answer has {len(fields)} fields, expected 5 (DMA main-screen data)", frame)
    filt = _field(fields, 0, "filter", 4, frame)
    detector = _field(fields, 1, "detector", 3, frame)
    mode = _field(fields, 2, "mode", 5, frame)
    overload = _field(fields, 4, "overload", 5, frame)
    level_text = fields[3].strip()
    if not level_text or not level_text.replace(".", "", 1).isdigit():
        raise DecodeError(f"level field {level_text!r} is not a number like 074.3", frame)
    level = float(level_text)
    if filt != 0:
        raise DecodeError(f"filter {FILTERS[filt]}: only A-weighted levels map to noise quantities", frame)
    quantity = _QUANTITY_OF_MODE.get(mode)
    if quantity is None:
        raise DecodeError(f"main screen shows {MODES[mode]}, not SPL/LEQ/MAX/MIN; set the meter's main screen "
                          "to LEQ (or SPL)", frame)
    quality = OVERLOAD_QUALITY.get(overload, "good")
    if quality != "good" and str(ctx.options.get("overload", "flag")) == "reject":
        raise DecodeError(f"meter reports {quality.replace('_', '-')} (indicator {overload})", frame)
    tags = {**ctx.tags, "filter": FILTERS[filt], "detector": DETECTORS[detector]}
    return [Reading(ctx.device_id, quantity, level, "dBA", ctx.received_ns, tags, quality)]


def encode(
    values: Mapping[str, float], address: int = 1, detector: int = 0, overload: int = 0, filt: int = 0
) -> bytes:
    """Build a DMA answer from one of noise_spl / noise_laeq / noise_lamax / noise_lamin (for simulators)."""
    for quantity, mode in _MODE_OF_QUANTITY.items():
        if quantity in values:
            level = max(0.0, min(999.9, float(values[quantity])))
            return answer(f"{filt},{detector},{mode},{level:05.1f},{overload}", address)
    raise ValueError("values need one of noise_spl, noise_laeq, noise_lamax, noise_lamin")


class BswaFramer:
    """Finds `STX … ETX BCC CR LF` blocks. ADDR and BCC are binary and may equal any control byte, so the
    ETX is searched after the type byte and through printable payload only; a bad block costs one byte."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> Iterator[bytes | DecodeError]:
        """Consume `data`; yield each good block, and a DecodeError for each rejected span."""
        self._buf += data
        buf = self._buf
        while True:
            start = buf.find(STX)
            if start < 0:
                if buf:
                    yield DecodeError("garbage bytes before STX skipped", bytes(buf))
                    buf.clear()
                return
            if start > 0:
                yield DecodeError("garbage bytes before STX skipped", bytes(buf[:start]))
                del buf[:start]
            # Scan the printable payload from offset 3 for ETX.
            i = 3
            while i < len(buf) and i < self._max_frame and 0x20 <= buf[i] < 0x7F:
                i += 1
            if i >= len(buf):
                return  # incomplete: wait for more bytes
            if i >= self._max_frame or buf[i] != ETX:
                # The printable run cannot hold another block's start, so skip it whole (one rejection).
                cut = i if i > 3 else 1
                bad = bytes(buf[:cut])
                del buf[:cut]
                yield DecodeError("no ETX after printable payload (cut or corrupt block)", bad)
                continue
            if len(buf) < i + 4:
                return
            frame = bytes(buf[: i + 4])
            reason = frame_error(frame)
            if reason is None:
                del buf[: i + 4]
                yield frame
            else:
                del buf[:1]
                yield DecodeError(reason, frame)


def make_framer() -> BswaFramer:
    """A fresh framer for one meter link."""
    return BswaFramer()


KIND = register(
    DeviceKind(
        name="bswa_slm",
        link="serial",
        summary="BSWA 308/309 class-1 sound level meter, polled ASCII protocol (DMA main-screen data)",
        quantities=FIELDS,
        decode=decode,
        encode=encode,
        framer=make_framer,
        poll_request=poll_request,
        doc="bswa_slm.md",
    )
)
