"""Byte vectors from the protocol reference: CRC, request frames, float encodings, full reply decoding."""

from __future__ import annotations

import struct

import pytest

from devices.kind import ModbusRead
from devices.modbus_common import (
    Field,
    crc16,
    decode_fields,
    exception_reply,
    parse_read_request,
    plan_reads,
    read_reply,
    read_request,
)
from devices.reading import DecodeContext, DecodeError
from devices.registry import get_kind


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def crc_bitwise(data: bytes) -> bytes:
    """Textbook CRC-16/MODBUS (reference §0: reflected poly 0xA001, init 0xFFFF, low byte first), bit by bit.

    Independent of the table-driven pymodbus CRC under test; used for frames the reference does not list.
    """
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def ctx(request: str | None, **options: object) -> DecodeContext:
    return DecodeContext(
        device_id="dev",
        received_ns=1_700_000_000_000_000_000,
        request=h(request) if request else None,
        options=options,
    )


# --------------------------------------------------------------------------------------------- CRC


@pytest.mark.parametrize(
    ("body", "crc"),
    [
        ("01 04 00 00 00 02", "71 CB"),  # reference §0, Eastron protocol document known value
        ("01 03 00 00 00 02", "C4 0B"),  # reference §0
        ("FE 04 00 03 00 01", "D5 C5"),  # reference §0 / §4 (Senseair read CO2)
        ("FE 04 00 00 00 04", "E5 C6"),  # reference §4 status + CO2 in one read
        ("FE 06 00 00 00 00", "9D C5"),  # reference §4 clear HR1
        ("FE 06 00 01 7C 06", "6C C7"),  # reference §4 background calibration
        ("FE 06 00 01 7C 07", "AD 07"),  # reference §4 zero calibration (K30 sketches)
        ("FE 03 00 00 00 01", "90 05"),  # reference §4 read HR1
        ("FE 03 02 00 20", "AD 88"),  # reference §4 expected HR1 reply
        ("FE 03 00 1F 00 01", "A1 C3"),  # reference §4 read ABC period
        ("FE 06 00 1F 00 00", "AC 03"),  # reference §4 disable ABC
        ("FE 06 00 1F 00 B4", "AC 74"),  # reference §4 ABC 180 h
        ("01 04 00 06 00 02", "91 CA"),  # reference §5 SDM current
        ("01 04 00 0C 00 02", "B1 C8"),  # reference §5 SDM power
        ("01 04 00 48 00 02", "F1 DD"),  # reference §5 SDM import kWh
        ("01 04 01 56 00 02", "90 27"),  # reference §5 SDM total kWh
        ("01 08 00 00 AA 55", "5E 94"),  # reference §5 diagnostics echo
        ("01 04 00 46 00 02", "90 1E"),  # reference §5 frequency (the public sketch's 90 E1 is wrong)
        ("01 90 01", "8D C0"),  # reference §0 exception: illegal function on 0x10
        ("FE 84 02", "F2 F1"),  # reference §0/§4 exception: illegal data address on 0x04
        ("01 03 00 01 00 01", "D5 CA"),  # reference §6a Supmea EC8.0 request
        ("01 03 02 02 BC", "B8 95"),  # reference §6a Supmea EC8.0 reply
        ("01 04 04 CC CD 41 48", "65 4D"),  # reference §6a DPH7 example reply
        ("01 03 00 00 00 01", "84 0A"),  # reference §8a SM7901 request
        ("01 03 02 00 79", "79 A6"),  # reference §8a QM7903 example reply
    ],
)
def test_crc16_known_values(body: str, crc: str) -> None:
    assert crc16(h(body)) == h(crc)


def test_crc16_agrees_with_bitwise_reference_on_many_frames() -> None:
    for n in range(0, 300, 7):
        data = bytes((i * 37 + n) & 0xFF for i in range(n))
        assert crc16(data) == crc_bitwise(data)


def test_crc16_register_value_is_sent_low_byte_first() -> None:
    # reference §0: CRC register value 0xCB71 is transmitted 71 CB
    assert int.from_bytes(crc16(h("01 04 00 00 00 02")), "little") == 0xCB71


def test_known_wrong_crcs_from_public_sources_do_not_match() -> None:
    # reference §5: sketch comment's frequency request 01 04 00 46 00 02 90 E1 has a wrong CRC
    assert crc16(h("01 04 00 46 00 02")) != h("90 E1")
    # reference §4: SFeli README reply FE 04 02 03 88 D5 C5 carries a copied CRC
    assert crc16(h("FE 04 02 03 88")) != h("D5 C5")


# --------------------------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    ("kind", "options", "address", "frames"),
    [
        ("senseair_s8", {}, 0xFE, ["FE 04 00 00 00 04 E5 C6"]),  # reference §4
        ("noise_modbus", {}, 1, ["01 03 00 00 00 01 84 0A"]),  # reference §8a
        ("conductivity_probe", {}, 1, ["01 03 00 01 00 01 D5 CA"]),  # reference §6a (Supmea EC8.0 preset)
        # reference §5: voltage, current, power requests; PF and freq/import/export computed from the same CRC
        (
            "sdm120",
            {},
            1,
            [
                "01 04 00 00 00 02 71 CB",
                "01 04 00 06 00 02 91 CA",
                "01 04 00 0C 00 02 B1 C8",
                "01 04 00 1E 00 02 " + crc_bitwise(h("01 04 00 1E 00 02")).hex(" "),
                "01 04 00 46 00 06 " + crc_bitwise(h("01 04 00 46 00 06")).hex(" "),
            ],
        ),
    ],
)
def test_poll_requests_match_reference_frames(
    kind: str, options: dict[str, object], address: int, frames: list[str]
) -> None:
    k = get_kind(kind)
    assert k.modbus_reads is not None
    assert [read_request(address, r) for r in k.modbus_reads(options)] == [h(f) for f in frames]


def test_parse_read_request_rejects_bad_crc_and_non_reads() -> None:
    assert parse_read_request(h("01 04 00 48 00 02 F1 DD")) == (1, ModbusRead(4, 0x48, 2))
    with pytest.raises(DecodeError, match="request CRC mismatch: expected 90 1e, got 90 e1"):
        parse_read_request(h("01 04 00 46 00 02 90 E1"))  # reference §5 wrong sketch CRC
    with pytest.raises(DecodeError, match="not a register read"):
        parse_read_request(h("FE 06 00 00 00 00 9D C5"))  # reference §4 write single register
    with pytest.raises(DecodeError, match="8"):
        parse_read_request(h("01 08 00 00 AA 55 5E 94 00"))


# --------------------------------------------------------------------------------------------- value encodings


def test_float32_abcd_240_5() -> None:
    # reference §5: 240.5 = 43 70 80 00, high word first
    f = Field(0, "float32", "voltage", "V")
    assert f.raw_from_registers([0x4370, 0x8000]) == 240.5
    assert f.registers_from_value(240.5) == [0x4370, 0x8000]


@pytest.mark.parametrize(
    ("order", "wire"),
    [("ABCD", "43 70 80 00"), ("CDAB", "80 00 43 70"), ("BADC", "70 43 00 80"), ("DCBA", "00 80 70 43")],
)
def test_float32_word_orders(order: str, wire: str) -> None:
    # 240.5 = 43 70 80 00 (reference §5) transmitted in each vendor word order
    f = Field(0, "float32", "voltage", "V", word_order=order)
    regs = list(struct.unpack(">2H", h(wire)))
    assert f.raw_from_registers(regs) == 240.5
    assert f.registers_from_value(240.5) == regs


def test_integer_types_and_scaling() -> None:
    assert Field(0, "s16", "temperature", "degC", scale=0.1).registers_from_value(-12.5) == [0xFF83]
    assert Field(0, "s16", "temperature", "degC").raw_from_registers([0xFF83]) == -125
    assert Field(0, "u32", "water_volume", "m3").raw_from_registers([0x0001, 0x0002]) == 65538
    assert Field(0, "u32", "water_volume", "m3", word_order="CDAB").raw_from_registers([0x0002, 0x0001]) == 65538
    assert Field(0, "s32", "water_flow", "m3/h").raw_from_registers([0xFFFF, 0xFFFE]) == -2
    read = ModbusRead(3, 0, 1)
    ph = Field(0, "u16", "ph", "pH", scale=0.01)
    # 1234 * 0.01 must read 12.34, not binary noise
    assert decode_fields([ph], read, [1234], DecodeContext())[0].value == 12.34


def test_field_table_rejects_unknown_type_order_and_quantity() -> None:
    with pytest.raises(ValueError, match="register type"):
        Field(0, "f64", "ph", "pH")
    with pytest.raises(ValueError, match="word order"):
        Field(0, "float32", "ph", "pH", word_order="ACBD")
    with pytest.raises(ValueError, match="vocabulary"):
        Field(0, "u16", "ph_value", "pH")


def test_plan_reads_groups_contiguous_registers_only_by_default() -> None:
    fields = [Field(a, "float32", "voltage", "V") for a in (0, 2, 6)]
    assert plan_reads(fields, 4) == [ModbusRead(4, 0, 4), ModbusRead(4, 6, 2)]
    assert plan_reads(fields, 4, max_gap=2) == [ModbusRead(4, 0, 8)]
    far = [Field(0, "u16", "ph", "pH"), Field(200, "u16", "ph", "pH")]
    assert plan_reads(far, 3, max_gap=500) == [ModbusRead(3, 0, 1), ModbusRead(3, 200, 1)]  # ≤ 125 registers


# --------------------------------------------------------------------------------------------- full replies


def test_sdm120_voltage_reply() -> None:
    # reference §5 (gosdm630 debug log / Tasmota 230.2 V example): request and reply
    [r] = get_kind("sdm120").decode(h("01 04 04 43 66 33 34 1B 38"), ctx("01 04 00 00 00 02 71 CB"))
    assert (r.quantity, r.unit, r.device_id) == ("voltage", "V", "dev")
    assert r.value == pytest.approx(230.2, abs=1e-4)
    assert r.ts == 1_700_000_000_000_000_000


def test_sdm120_energy_block_reply() -> None:
    # frequency, import, export in one read of 0x0046+6; floats per reference §5 (ABCD)
    regs = list(struct.unpack(">6H", struct.pack(">3f", 50.0, 1234.5, 240.5)))
    frame = read_reply(1, 4, regs)
    got = get_kind("sdm120").decode(frame, ctx(read_request(1, ModbusRead(4, 0x46, 6)).hex()))
    assert [(r.quantity, r.value, r.unit) for r in got] == [
        ("frequency", 50.0, "Hz"),
        ("energy_import", 1234.5, "kWh"),
        ("energy_export", 240.5, "kWh"),
    ]


def test_sdm630_per_phase_tags_and_mwh_option() -> None:
    values = [230.0, 231.5, 229.25, 0, 0, 0, 1.5, 2.5, 3.5]
    regs = list(struct.unpack(">18H", struct.pack(">9f", *values)))
    request = read_request(7, ModbusRead(4, 0, 18)).hex()
    got = get_kind("sdm630").decode(read_reply(7, 4, regs), ctx(request))
    volts = [(r.tags["phase"], r.value) for r in got if r.quantity == "voltage"]
    assert volts == [("L1", 230.0), ("L2", 231.5), ("L3", 229.25)]
    assert [(r.tags["phase"], r.value) for r in got if r.quantity == "active_power"] == [
        ("L1", 1.5),
        ("L2", 2.5),
        ("L3", 3.5),
    ]
    energy = list(struct.unpack(">6H", struct.pack(">3f", 50.0, 12.5, 0.25)))
    request = read_request(7, ModbusRead(4, 0x46, 6)).hex()
    got = get_kind("sdm630").decode(read_reply(7, 4, energy), ctx(request, energy_unit="MWh"))
    assert {r.quantity: r.value for r in got} == {"frequency": 50.0, "energy_import": 12500.0, "energy_export": 250.0}
    assert all("phase" not in r.tags for r in got)


def test_senseair_s8_status_and_co2() -> None:
    k = get_kind("senseair_s8")
    request = "FE 04 00 00 00 04 E5 C6"  # reference §4
    [r] = k.decode(read_reply(0xFE, 4, [0, 0, 0, 0x0388]), ctx(request))
    assert (r.quantity, r.value, r.unit) == ("co2", 904.0, "ppm")
    with pytest.raises(DecodeError, match=r"sensor status 0x0022: offset regulation error, out of range"):
        k.decode(read_reply(0xFE, 4, [0x22, 0, 0, 0x0388]), ctx(request))
    # bits above the 0x7F mask are not error flags (Tasmota masks & 0x7F)
    assert k.decode(read_reply(0xFE, 4, [0x80, 0, 0, 500]), ctx(request))[0].value == 500.0
    # an explicitly accepted flag
    assert k.decode(read_reply(0xFE, 4, [0x20, 0, 0, 10000]), ctx(request, ignore_status=0x20))[0].value == 10000.0


def test_senseair_s8_co2_only_read() -> None:
    # reference §4: FE 04 00 03 00 01 D5 C5 → FE 04 02 HI LO CRC; no status register in this read
    [r] = get_kind("senseair_s8").decode(read_reply(0xFE, 4, [0x01F4]), ctx("FE 04 00 03 00 01 D5 C5"))
    assert r.value == 500.0


def test_senseair_sfeli_reply_with_copied_crc_is_rejected() -> None:
    # reference §4: SFeli README reply FE 04 02 03 88 D5 C5 has an invalid (copied) CRC
    with pytest.raises(DecodeError, match="reply CRC mismatch"):
        get_kind("senseair_s8").decode(h("FE 04 02 03 88 D5 C5"), ctx("FE 04 00 03 00 01 D5 C5"))


def test_exception_replies_name_the_exception() -> None:
    # reference §0/§4: FE 84 02 F2 F1 = illegal data address on 0x04 (S8 has no IR5/IR6)
    request = read_request(0xFE, ModbusRead(4, 4, 2)).hex()
    with pytest.raises(DecodeError, match=r"exception 02 \(illegal data address\) to function 04"):
        get_kind("senseair_s8").decode(h("FE 84 02 F2 F1"), ctx(request))
    assert exception_reply(0xFE, 4, 2) == h("FE 84 02 F2 F1")
    # reference §0: 01 90 01 8D C0 = illegal function on 0x10; as an answer to a read it is a function mismatch
    assert exception_reply(1, 0x10, 1) == h("01 90 01 8D C0")
    with pytest.raises(DecodeError, match="reply function 90 does not match request function 04"):
        get_kind("sdm120").decode(h("01 90 01 8D C0"), ctx("01 04 00 00 00 02 71 CB"))


def test_supmea_conductivity_reply() -> None:
    # reference §6a: Supmea EC8.0 01 03 00 01 00 01 D5 CA → 01 03 02 02 BC B8 95 = 700
    [r] = get_kind("conductivity_probe").decode(h("01 03 02 02 BC B8 95"), ctx("01 03 00 01 00 01 D5 CA"))
    assert (r.quantity, r.value, r.unit) == ("conductivity", 700.0, "uS/cm")


def test_dph7_float_cdab_reply() -> None:
    # reference §6a: DPH7 manual 01 04 04 CC CD 41 48 65 4D is CRC-valid and decodes (CDAB) to 12.55
    request = read_request(1, ModbusRead(4, 0, 2)).hex()
    [r] = get_kind("ph_probe").decode(h("01 04 04 CC CD 41 48 65 4D"), ctx(request, preset="dph7"))
    assert (r.quantity, r.unit) == ("ph", "pH")
    assert r.value == pytest.approx(12.55, abs=1e-5)
    # the same bytes read as ABCD are a different (tiny negative) number: word order matters
    [wrong] = get_kind("ph_probe").decode(
        h("01 04 04 CC CD 41 48 65 4D"), ctx(request, preset="dph7", word_order="ABCD")
    )
    assert wrong.value != pytest.approx(12.55)


def test_ph_u16_x100_and_temperature_option() -> None:
    request = read_request(1, ModbusRead(3, 0, 2)).hex()
    got = get_kind("ph_probe").decode(read_reply(1, 3, [718, 153]), ctx(request, temperature_register=1))
    assert [(r.quantity, r.value, r.unit) for r in got] == [("ph", 7.18, "pH"), ("temperature", 15.3, "degC")]
    k = get_kind("ph_probe")
    assert k.modbus_reads is not None
    assert k.modbus_reads({"temperature_register": 1}) == [ModbusRead(3, 0, 2)]
    assert k.modbus_reads({"temperature_register": 4}) == [ModbusRead(3, 0, 1), ModbusRead(3, 4, 1)]


def test_turbidity_float_option() -> None:
    regs = list(struct.unpack(">2H", struct.pack(">f", 3.25)))
    request = read_request(2, ModbusRead(3, 0, 2)).hex()
    [r] = get_kind("turbidity_probe").decode(read_reply(2, 3, regs), ctx(request, preset="float_abcd"))
    assert (r.quantity, r.value, r.unit) == ("turbidity", 3.25, "NTU")


def test_sm7901_noise_reply() -> None:
    # reference §8a: request 01 03 00 00 00 01 84 0A; QM7903 example reply 01 03 02 00 79 79 A6 = 121 → 12.1 dB
    [r] = get_kind("noise_modbus").decode(h("01 03 02 00 79 79 A6"), ctx("01 03 00 00 00 01 84 0A"))
    assert (r.quantity, r.value, r.unit) == ("noise_laeq", 12.1, "dBA")
    [r] = get_kind("noise_modbus").decode(read_reply(1, 3, [655]), ctx("01 03 00 00 00 01 84 0A"))
    assert r.value == 65.5


# Frames marked "+crc" get a valid CRC appended, so that the later structural check is the one that fails.
@pytest.mark.parametrize(
    ("frame", "req", "reason"),
    [
        ("01 04 04 43 66 33 34 1B 39", "01 04 00 00 00 02 71 CB", "reply CRC mismatch: expected 1b 38, got 1b 39"),
        ("01 04 04 43 66 33 34 1B 38", None, "request frame"),
        ("02 04 04 43 66 33 34 +crc", "01 04 00 00 00 02 71 CB", "reply comes from address 2"),
        ("01 04 02 43 66 +crc", "01 04 00 00 00 02 71 CB", "byte count is 2"),
        ("01 03 04 43 66 33 34 +crc", "01 04 00 00 00 02 71 CB", "reply function 03 does not match"),
        ("01 04 04 43 66 33 +crc", "01 04 00 00 00 02 71 CB", "byte count 4 needs 9"),
        ("01 04 00 00", "01 04 00 00 00 02 71 CB", "shortest Modbus reply is 5"),
        ("01 04 04 43 66 33 34 1B 38", "01 04 00 00 00 02 71 CC", "request CRC mismatch"),
        ("01 04 04 00 00 00 00 +crc", "01 04 00 02 00 02 +crc", "hold none of this device's fields"),
        ("01 84 02 00 00 +crc", "01 04 00 00 00 02 71 CB", "exception reply is 7 bytes"),
    ],
)
def test_bad_replies_are_rejected_with_the_failed_check(frame: str, req: str | None, reason: str) -> None:
    def build(text: str) -> bytes:
        raw = h(text.replace("+crc", ""))
        return raw + crc_bitwise(raw) if "+crc" in text else raw

    raw = build(frame)
    request = build(req).hex() if req is not None else None
    with pytest.raises(DecodeError, match=reason) as err:
        get_kind("sdm120").decode(raw, ctx(request))
    if req is not None and "request" not in reason:
        assert err.value.data == raw  # the offending bytes travel with the error


def test_bad_options_become_decode_errors() -> None:
    request = read_request(1, ModbusRead(3, 0, 1)).hex()
    with pytest.raises(DecodeError, match="bad device options: option 'type'"):
        get_kind("ph_probe").decode(read_reply(1, 3, [700]), ctx(request, type="f64"))
    with pytest.raises(DecodeError, match="bad device options: option 'preset'"):
        get_kind("ph_probe").decode(read_reply(1, 3, [700]), ctx(request, preset="nope"))


def test_holding_registers_are_not_taken_for_input_registers() -> None:
    # reference §5: SDM holding register 0x0000 is the demand time, not the voltage at input register 0x0000
    with pytest.raises(DecodeError, match="function 04"):
        get_kind("sdm120").decode(
            h("01 03 04 43 66 33 34") + crc_bitwise(h("01 03 04 43 66 33 34")), ctx("01 03 00 00 00 02 C4 0B")
        )  # reference §0 request CRC
    # a probe configured for input registers refuses a holding-register reply, and accepts its own function
    request = read_request(1, ModbusRead(3, 0, 1)).hex()
    with pytest.raises(DecodeError, match="function 04"):
        get_kind("noise_modbus").decode(read_reply(1, 3, [500]), ctx(request, function=4))
    request = read_request(1, ModbusRead(4, 0, 1)).hex()
    assert get_kind("noise_modbus").decode(read_reply(1, 4, [500]), ctx(request, function=4))[0].value == 50.0
