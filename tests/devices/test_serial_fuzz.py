"""Fuzz every serial decoder and framer of this catalogue with random bytes and mutated valid frames.

Invariants: nothing but DecodeError escapes; no reading ever comes from a frame whose checksum (recomputed
here, independently of the code under test) fails; framers only yield frames that pass that check.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from devices import bswa_slm, mhz19b, pms5003, pms5003t, sds011, wmbus_water
from devices.reading import DecodeContext, DecodeError, Reading

FUZZ = settings(max_examples=300, deadline=None)
CTX = DecodeContext(device_id="fuzz", received_ns=1)
WMBUS_CTX = DecodeContext(received_ns=1, options={"meter_time": True, "meter_timezone": "Europe/Madrid"})


# Independent checksum rules (reference §1, §2, §3, §8b).
def pms_ok(f: bytes) -> bool:
    if len(f) == 32:
        return f[:4] == b"BM\x00\x1c" and sum(f[:30]) & 0xFFFF == int.from_bytes(f[30:], "big")
    if len(f) == 8:
        return f[:4] == b"BM\x00\x04" and sum(f[:6]) & 0xFFFF == int.from_bytes(f[6:], "big")
    return False


def sds_ok(f: bytes) -> bool:
    return len(f) == 10 and f[0] == 0xAA and f[9] == 0xAB and sum(f[2:8]) & 0xFF == f[8]


def mhz_ok(f: bytes) -> bool:
    return len(f) == 9 and f[0] == 0xFF and sum(f[1:9]) & 0xFF == 0


def bswa_ok(f: bytes) -> bool:
    x = 0
    for b in f[:-3]:
        x ^= b
    return len(f) >= 7 and f[0] == 0x02 and f[-4] == 0x03 and f[-3] == x and f[-2:] == b"\r\n"


IPERL = bytes.fromhex("1E44AE4C9956341268077A360010002F2F0413181E0000023B00002F2F2F2F")  # wmbusmeters iperl test
AQUA = bytes.fromhex(  # wmbusmeters aquastream test
    "4644B42557920410050E7237329305B42501075B0030252F2F04130342000084101300000000046D0D30F62B4413491800"
    "00426CFF2A02FD17000002FD74DB152F2F2F2F2F2F2F"
)

Decoder = Callable[[bytes, DecodeContext], list[Reading]]
KINDS: dict[str, tuple[Decoder, Callable[[bytes], bool], list[bytes]]] = {
    "pms5003": (
        pms5003.decode,
        pms_ok,
        [pms5003.encode({"pm2_5": 8, "pm10": 8, "particles_0_3um": 210}), bytes.fromhex("424D0004E1000174")],
    ),
    "pms5003t": (
        pms5003t.decode,
        pms_ok,
        [pms5003t.encode({"pm2_5": 3, "temperature": -4.2, "relative_humidity": 80})],
    ),
    "sds011": (
        sds011.decode,
        sds_ok,
        # SDS011 V1.3 data frame and firmware reply (hjkoskel/sds011 packet_test.go)
        [bytes.fromhex("AAC0D4043A0AA1601DAB"), bytes.fromhex("AAC5070F070AA16028AB")],
    ),
    "mhz19b": (mhz19b.decode, mhz_ok, [mhz19b.encode({"co2": 812}), bytes.fromhex("FF8601F44300000042")]),
    "bswa_slm": (
        bswa_slm.decode,
        bswa_ok,
        [bswa_slm.answer("0,0,2,074.3,0"), bytes.fromhex("02010603060D0A")],  # ACK, BSWA manual p.96
    ),
}
ALL_SEEDS = [IPERL, AQUA, *[s for k in KINDS.values() for s in k[2]]]
FRAMERS: dict[str, Callable[[], object]] = {
    "pms5003": pms5003.make_framer,
    "sds011": sds011.make_framer,
    "mhz19b": mhz19b.make_framer,
    "bswa_slm": bswa_slm.make_framer,
    "wmbus_water": wmbus_water.make_framer,
}
CHECK = {"pms5003": pms_ok, "sds011": sds_ok, "mhz19b": mhz_ok, "bswa_slm": bswa_ok}


def _decode(name: str, frame: bytes) -> list[Reading] | None:
    decoder, _, _ = KINDS[name]
    try:
        return decoder(frame, CTX)
    except DecodeError as exc:
        assert exc.reason
        return None


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    frame = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(frame) - 1))
        frame[i] ^= draw(st.integers(1, 255))
    cut = draw(st.integers(0, 3))
    if cut == 1:
        del frame[draw(st.integers(0, len(frame) - 1)) :]
    elif cut == 2:
        frame += draw(st.binary(max_size=8))
    return bytes(frame)


def _fuzz_decoder(name: str) -> None:
    _, ok, seeds = KINDS[name]

    @FUZZ
    @given(data=st.one_of(st.binary(max_size=64), mutated(seeds)))
    def run(data: bytes) -> None:
        readings = _decode(name, data)
        if readings:
            assert ok(data), f"{name} produced readings from a frame failing its checksum: {data.hex(' ')}"

    run()


def test_seed_frames_are_valid() -> None:
    for name, (_, ok, seeds) in KINDS.items():
        for seed in seeds:
            assert ok(seed), name
            assert _decode(name, seed) is not None, name


def test_fuzz_pms5003() -> None:
    _fuzz_decoder("pms5003")


def test_fuzz_pms5003t() -> None:
    _fuzz_decoder("pms5003t")


def test_fuzz_sds011() -> None:
    _fuzz_decoder("sds011")


def test_fuzz_mhz19b() -> None:
    _fuzz_decoder("mhz19b")


def test_fuzz_bswa() -> None:
    _fuzz_decoder("bswa_slm")


@FUZZ
@given(data=st.one_of(st.binary(max_size=80), mutated([IPERL, AQUA])))
def test_fuzz_wmbus_decoder(data: bytes) -> None:
    try:
        readings = wmbus_water.decode(data, WMBUS_CTX)
    except DecodeError:
        return
    assert readings and len(data) == data[0] + 1
    for r in readings:
        assert r.quantity in ("water_volume", "water_flow") and r.value == r.value  # never NaN


@FUZZ
@given(payload=st.binary(max_size=64))
def test_fuzz_wmbus_records(payload: bytes) -> None:
    try:
        records = wmbus_water.parse_records(payload)
    except DecodeError:
        return
    assert sum(len(r.data) for r in records) <= len(payload)


@FUZZ
@given(
    name=st.sampled_from(sorted(FRAMERS)),
    chunks=st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(ALL_SEEDS)), max_size=12),
    split=st.integers(1, 17),
)
def test_fuzz_framers(name: str, chunks: list[bytes], split: int) -> None:
    framer = FRAMERS[name]()
    stream = b"".join(chunks)
    for i in range(0, len(stream), split):
        for item in framer.feed(stream[i : i + split]):  # type: ignore[attr-defined]
            assert isinstance(item, bytes | DecodeError)
            if isinstance(item, bytes):
                if name in CHECK:
                    assert CHECK[name](item), f"{name} framer yielded a bad frame {item.hex(' ')}"
                else:
                    assert wmbus_water.telegram_error(item) is None or item[10] in (0x8C, 0x8D)


@FUZZ
@given(data=st.binary(max_size=64))
def test_fuzz_reply_parsers(data: bytes) -> None:
    for parse in (pms5003.parse_ack, sds011.parse_reply, mhz19b.parse_reply, bswa_slm.parse_frame,
                  wmbus_water.parse_header):
        with contextlib.suppress(DecodeError):
            parse(data)


@FUZZ
@given(
    volume=st.floats(0, 2_000_000, allow_nan=False),
    flow=st.floats(-30, 30, allow_nan=False),
    when=st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 12, 31)),
)
def test_wmbus_encode_decode_round_trip(volume: float, flow: float, when: dt.datetime) -> None:
    telegram = wmbus_water.encode({"water_volume": volume, "water_flow": flow}, meter_time=when)
    readings = wmbus_water.decode(telegram, DecodeContext(options={"meter_time": True}))
    values = {r.quantity: r.value for r in readings}
    assert values["water_volume"] == round(volume * 1000) / 1000
    assert values["water_flow"] == round(flow * 1000) / 1000
    expected = when.replace(second=0, microsecond=0, tzinfo=dt.UTC)
    assert readings[0].ts == int(expected.timestamp()) * 10**9
