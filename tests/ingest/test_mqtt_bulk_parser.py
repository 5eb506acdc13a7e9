"""The bulk MQTT input's packet parser and message handling, without a broker.

Byte vectors are built by hand from the MQTT 3.1.1 specification (OASIS, 2014): remaining length
encoding from section 2.2.3 (table 2.4), PUBLISH from section 3.3 (figure 3.11: topic "a/b", packet id 10),
PUBACK 3.4, SUBACK 3.9, PINGRESP 3.13, CONNACK 3.2.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import json_mapping
from devices.reading import Reading
from devices.registry import get_kind
from ingest.mqtt_bulk import BulkMqttSource
from ingest.mqtt_client import MqttOptions
from ingest.mqtt_codec import (
    CONNACK,
    PINGRESP,
    SUBACK,
    Control,
    ProtocolError,
    Publish,
    connect_packet,
    encode_remaining_length,
    packet_size,
    parse_packets,
    puback_packets,
    subscribe_packet,
)
from ingest.routes import Route

TS = 1_767_225_600_000_000_000

# MQTT 3.1.1 table 2.4: the boundaries of 1, 2, 3 and 4-byte remaining lengths.
SPEC_LENGTHS = [
    (0, b"\x00"), (127, b"\x7f"),
    (128, b"\x80\x01"), (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"), (2_097_151, b"\xff\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01"), (268_435_455, b"\xff\xff\xff\x7f"),
]


def publish(topic: bytes, payload: bytes, pid: int = 0, qos: int = 1) -> bytes:
    """A PUBLISH (section 3.3) built field by field, independent of the code under test."""
    var = len(topic).to_bytes(2, "big") + topic + (pid.to_bytes(2, "big") if qos else b"")
    body = var + payload
    n, length = len(body), bytearray()
    while True:  # section 2.2.3's encoding algorithm, written out again here
        digit, n = n % 128, n // 128
        length.append(digit | (128 if n else 0))
        if not n:
            break
    return bytes([0x30 | (qos << 1)]) + bytes(length) + body


def parse(data: bytes) -> tuple[list[Publish], list[Control], int]:
    pubs: list[Publish] = []
    ctrls: list[Control] = []
    used = parse_packets(data, pubs, ctrls)
    return pubs, ctrls, used


@pytest.mark.parametrize(("value", "encoded"), SPEC_LENGTHS)
def test_remaining_length_matches_the_spec_table(value: int, encoded: bytes) -> None:
    assert encode_remaining_length(value) == encoded
    assert packet_size(b"\x30" + encoded) == 1 + len(encoded) + value


def test_remaining_length_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_remaining_length(268_435_456)


def test_spec_publish_example_topic_a_b_packet_id_10() -> None:
    # Figure 3.11: topic "a/b" = 00 03 61 2F 62, packet identifier 10 = 00 0A; QoS 1 → first byte 0x32.
    packet = bytes([0x32, 5 + 2 + 3, 0x00, 0x03, 0x61, 0x2F, 0x62, 0x00, 0x0A]) + b"xyz"
    pubs, ctrls, used = parse(packet)
    assert pubs == [(1, 10, b"a/b", b"xyz", False)]
    assert ctrls == [] and used == len(packet)


@pytest.mark.parametrize("payload_len", [0, 1, 120, 121, 122, 123, 16_375, 16_376, 16_377, 16_378, 70_000])
def test_publish_around_length_boundaries_parses_whole_and_waits_when_cut(payload_len: int) -> None:
    # topic "t/x" (2+3 bytes) + packet id (2): remaining length = payload + 7 crosses 127/128, 16383/16384.
    payload = bytes(random.Random(payload_len).randbytes(payload_len))
    packet = publish(b"t/x", payload, pid=65535)
    pubs, _, used = parse(packet)
    assert pubs == [(1, 65535, b"t/x", payload, False)] and used == len(packet)
    for cut in {1, 2, 3, len(packet) // 2, len(packet) - 1}:
        pubs, ctrls, used = parse(packet[:cut])
        assert (pubs, ctrls, used) == ([], [], 0)  # incomplete: nothing consumed, nothing emitted


def test_qos0_publish_has_no_packet_id() -> None:
    packet = publish(b"s/1", b"\x00\x01payload", qos=0)
    assert parse(packet)[0] == [(0, 0, b"s/1", b"\x00\x01payload", False)]


def test_control_packets_and_a_mixed_stream() -> None:
    connack = b"\x20\x02\x01\x00"  # section 3.2: session present, accepted
    suback = b"\x90\x04\x00\x01\x01\x80"  # section 3.9: packet id 1, granted QoS 1, then failure 0x80
    pingresp = b"\xd0\x00"  # section 3.13
    puback = b"\x40\x02\x00\x07"  # section 3.4
    stream = connack + publish(b"a", b"1", 1) + suback + pingresp + puback + publish(b"b", b"2", qos=0)
    pubs, ctrls, used = parse(stream + b"\x32")  # a lone first byte of the next packet stays pending
    assert used == len(stream)
    assert pubs == [(1, 1, b"a", b"1", False), (0, 0, b"b", b"2", False)]
    assert [k for k, _ in ctrls] == [CONNACK, SUBACK, PINGRESP, 4]
    assert ctrls[1][1] == b"\x00\x01\x01\x80"


@pytest.mark.parametrize(("data", "why"), [
    (b"\x30\xff\xff\xff\xff\x01", "longer than 4 bytes"),
    (b"\x34\x05\x00\x01a\x00\x01", "QoS 2"),
    (b"\x36\x05\x00\x01a\x00\x01", "QoS 3"),
    (b"\x32\x05\x00\x01a\x00\x00", "packet id 0"),
    (b"\x32\x04\x00\x05abcd"[:6], "run past"),
    (b"\x30\x01\x00", "shorter than its topic length"),
    (b"\x10\x00", "not sent by a server"),
    (b"\xe0\x00", "not sent by a server"),
    (b"\xd1\x00", "reserved flags"),
    (b"\xd0\x01\x00", "PINGRESP with a body"),
    (b"\x90\x02\x00\x01", "SUBACK without return codes"),
    (b"\x40\x03\x00\x01\x00", "2 expected"),
])
def test_malformed_packets_are_protocol_errors(data: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        parse(data)


def test_oversized_packet_is_refused_before_it_is_buffered() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        parse_packets(b"\x30\x80\x80\x80\x01", [], [], max_packet=1_000_000)
    with pytest.raises(ProtocolError, match="exceeds"):  # only a PUBLISH is skipped; a server's control packet is small
        parse_packets(b"\x90\x80\x80\x80\x01", [], [], max_packet=1_000_000, oversized=[])


def test_oversized_publish_is_reported_from_its_header_and_skipped_whole() -> None:
    """With `oversized`: the header (topic, packet id) is enough; the count consumed covers the whole packet."""
    big = publish(b"big/t", b"x" * 5000, pid=77)
    after = publish(b"ok/t", b"1", pid=78)
    found: list[tuple[int, int, bytes, int]] = []
    pubs: list[Publish] = []
    assert parse_packets(big[:4], pubs, [], max_packet=1000, oversized=found) == 0  # header not complete yet
    assert found == []
    head = big[:20]
    used = parse_packets(head, pubs, [], max_packet=1000, oversized=found)
    assert found == [(1, 77, b"big/t", len(big))] and used == len(big) > len(head) and pubs == []
    found.clear()
    used = parse_packets(big + after, pubs, [], max_packet=1000, oversized=found)  # whole: parsing goes on
    assert found == [(1, 77, b"big/t", len(big))] and used == len(big) + len(after)
    assert pubs == [(1, 78, b"ok/t", b"1", False)]


def test_retain_flag_is_reported() -> None:
    packet = bytearray(publish(b"r/t", b"1", pid=5))
    packet[0] |= 0x01  # RETAIN (section 3.3.1.3)
    assert parse(bytes(packet))[0] == [(1, 5, b"r/t", b"1", True)]


def test_connect_subscribe_and_puback_encodings() -> None:
    opts = MqttOptions(host="h", client_id="gw-in", username="u", password="p", keepalive=30)
    # Section 3.1: protocol name "MQTT", level 4, flags user+password (0xC0), no clean session (persistent).
    expected_body = (b"\x00\x04MQTT\x04\xc0\x00\x1e" + b"\x00\x05gw-in" + b"\x00\x01u" + b"\x00\x01p")
    assert connect_packet(opts) == b"\x10" + bytes([len(expected_body)]) + expected_body
    anon = connect_packet(MqttOptions(host="h", keepalive=10))
    assert anon[9] == 0x02  # no client id: the broker needs a clean session
    routes = [Route("a/#", get_kind("json"), qos=2), Route("b/+", get_kind("json"), qos=0)]
    # Section 3.8: fixed header 0x82, packet id, (topic, requested QoS) pairs; QoS 2 is capped at 1.
    assert subscribe_packet(routes) == b"\x82\x0e\x00\x01" + b"\x00\x03a/#\x01" + b"\x00\x03b/+\x00"
    assert puback_packets([1, 258, 65535]) == b"\x40\x02\x00\x01" + b"\x40\x02\x01\x02" + b"\x40\x02\xff\xff"


# -- fuzzing: a hostile or broken broker must only ever produce ProtocolError --------------------------------

def _valid_stream(rng: random.Random) -> bytes:
    parts = []
    for i in range(rng.randint(1, 12)):
        choice = rng.randrange(4)
        if choice == 0:
            parts.append(publish(f"f/{i}".encode(), rng.randbytes(rng.choice([0, 5, 130, 17_000])),
                                 pid=rng.randint(1, 65535)))
        elif choice == 1:
            parts.append(b"\xd0\x00")
        elif choice == 2:
            parts.append(b"\x90\x03\x00\x01\x01")
        else:
            parts.append(publish(b"q0", rng.randbytes(20), qos=0))
    return b"".join(parts)


def _drive(stream: bytes, chunks: list[int]) -> tuple[list[Publish], list[Control], str]:
    """Feed a stream in chunks as the receive loop does; return what was parsed and how it ended."""
    pubs: list[Publish] = []
    ctrls: list[Control] = []
    pending = b""
    pos = 0
    for size in chunks:
        pending += stream[pos:pos + size]
        pos += size
        try:
            used = parse_packets(pending, pubs, ctrls, max_packet=1 << 20)
        except ProtocolError as exc:
            return pubs, ctrls, f"protocol error: {exc}"
        pending = pending[used:]
        size_needed = packet_size(pending)
        assert size_needed is None or size_needed > len(pending)  # only a partial packet may remain
    return pubs, ctrls, "ok"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), min_size=1, max_size=40))
def test_random_bytes_only_ever_end_in_a_protocol_error(data: bytes, chunks: list[int]) -> None:
    chunks = [*chunks, len(data)]
    pubs, _, outcome = _drive(data, chunks)
    assert outcome == "ok" or outcome.startswith("protocol error: ")
    for qos, pid, topic, payload, _retain in pubs:
        assert qos in (0, 1) and (pid > 0) == (qos == 1) and isinstance(topic, bytes) and isinstance(payload, bytes)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 8), st.lists(st.integers(1, 5000), min_size=1, max_size=20))
def test_mutated_streams_only_ever_end_in_a_protocol_error(seed: int, flips: int, chunks: list[int]) -> None:
    rng = random.Random(seed)
    data = bytearray(_valid_stream(rng))
    for _ in range(flips):
        if not data:
            break
        op = rng.randrange(3)
        i = rng.randrange(len(data))
        if op == 0:
            data[i] = rng.randrange(256)
        elif op == 1:
            del data[i:i + rng.randint(1, 8)]
        else:
            data[i:i] = rng.randbytes(rng.randint(1, 8))
    stream = bytes(data)
    _, _, outcome = _drive(stream, [*chunks, len(stream)])
    assert outcome == "ok" or outcome.startswith("protocol error: ")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.integers(1, 3000), min_size=1, max_size=30))
def test_any_chunking_of_a_valid_stream_parses_the_same_packets(seed: int, chunks: list[int]) -> None:
    stream = _valid_stream(random.Random(seed))
    whole = _drive(stream, [len(stream)])
    assert whole[2] == "ok"
    assert _drive(stream, [*chunks, len(stream)]) == whole


# -- handling a read: routing, decoding, one emitter call and one ack per batch ------------------------------

class Recorder:
    """An Emitter that records calls; the tests call the acks themselves."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Reading], Any]] = []
        self.rejections: list[tuple[str, str]] = []

    def readings(self, readings: list[Reading], ack: Any = None) -> None:
        self.calls.append((readings, ack))

    def rejected(self, device_id: str, reason: str, data: bytes | None = None) -> None:
        self.rejections.append((device_id, reason))

    def device_state(self, device_id: str, available: bool, reason: str = "") -> None:
        raise AssertionError("no device state from MQTT")


def _source(batch: int = 1000) -> tuple[BulkMqttSource, Recorder]:
    rec = Recorder()
    routes = [Route("bk/+/json", get_kind("json"), device_id="{1}"),
              Route("$share/g/tas/+/SENSOR", get_kind("tasmota"), device_id="{1}")]
    src = BulkMqttSource(rec, MqttOptions(host="127.0.0.1", client_id="unit"), routes, clock_ns=lambda: TS,
                         batch_messages=batch)
    src.acks.connected = True
    return src, rec


def test_a_read_becomes_one_emitter_call_with_one_ack_and_exact_rejections() -> None:
    src, rec = _source()
    try:
        good = [(1, 10 + i, f"bk/d{i}/json".encode(), json_mapping.encode(f"d{i}", TS - i, {"pm2_5": float(i)}),
                 False) for i in range(5)]
        bad = [(1, 20, b"bk/x/json", b"{not json", False), (1, 21, b"nowhere/at/all", b"{}", False),
               (0, 0, b"bk/\xff/json", b"{}", False)]
        src.inbound.handle(good[:2] + bad + good[2:])
        assert len(rec.calls) == 1
        readings, ack = rec.calls[0]
        assert [(r.device_id, r.value) for r in readings] == [(f"d{i}", float(i)) for i in range(5)]
        assert [d for d, _ in rec.rejections] == ["x", "", ""]
        assert rec.rejections[0][1].startswith("json payload on bk/x/json: ")
        assert rec.rejections[1][1] == "no route matches topic 'nowhere/at/all'"
        assert rec.rejections[2][1].startswith("topic is not valid UTF-8")
        assert src.messages == 8
        ack()
        # One write holding the PUBACKs of every QoS 1 message of the read, the failed ones included.
        assert bytes(src.acks.outbox) == puback_packets([10, 11, 20, 21, 12, 13, 14])
    finally:
        src.stop()


def test_batches_are_bounded_and_acks_of_an_old_connection_are_dropped() -> None:
    src, rec = _source(batch=3)
    try:
        msgs = [(1, i + 1, b"bk/d/json", json_mapping.encode("d", TS + i, {"pm2_5": 1.0}), False) for i in range(7)]
        src.inbound.handle(msgs)
        assert [len(r) for r, _ in rec.calls] == [3, 3, 1]
        rec.calls[0][1]()
        assert bytes(src.acks.outbox) == puback_packets([1, 2, 3])
        src.acks.outbox.clear()
        src.acks.generation += 1  # a reconnect happened before the other two commits
        rec.calls[1][1]()
        rec.calls[2][1]()
        assert bytes(src.acks.outbox) == b"" and src.acks_skipped == 4
    finally:
        src.stop()


def test_receipt_times_are_distinct_within_and_across_reads() -> None:
    src, rec = _source()
    try:
        # Tasmota SENSOR payloads carry no usable event time here (no Time field): receipt time stamps them.
        payload = b'{"SDS0X1": {"PM2.5": 3.1, "PM10": 5.2}}'
        src.inbound.handle([(0, 0, b"tas/t1/SENSOR", payload, False)] * 3)
        src.inbound.handle([(0, 0, b"tas/t1/SENSOR", payload, False)] * 2)
        stamps = [r.ts for readings, _ in rec.calls for r in readings if r.quantity == "pm2_5"]
        assert stamps == [TS, TS + 1, TS + 2, TS + 3, TS + 4]
        assert src.acks.unacked == 6 + 4  # readings not yet acked (3 + 2 messages of 2 readings each)
        for _, ack in rec.calls:
            ack()
        assert src.acks.outbox == b"" and src.acks.unacked == 0  # QoS 0: nothing to acknowledge, only counted
    finally:
        src.stop()


def test_mqtt5_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"MQTT 3\.1\.1 only"):
        BulkMqttSource(Recorder(), MqttOptions(host="h", protocol="5"), [])


def test_a_refused_subscription_is_logged_with_its_topic(caplog: pytest.LogCaptureFixture) -> None:
    src, _ = _source()
    try:
        with caplog.at_level(logging.INFO, logger="citygw.mqtt"):
            src.inbound.on_suback(b"\x00\x01" + b"\x01\x80")  # section 3.9.3: granted QoS 1, then failure 0x80
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "refused the subscription to '$share/g/tas/+/SENSOR'" in errors[0]
    finally:
        src.stop()


def test_a_read_of_many_multi_reading_messages_is_cut_at_2000_readings() -> None:
    src, rec = _source()
    try:
        values = {q: 1.0 for q in ("pm2_5", "pm10", "pm1_0", "temperature", "no2", "o3", "co2", "pressure")}
        msgs = [(1, i + 1, b"bk/d/json", json_mapping.encode("d", TS + i, values), False) for i in range(600)]
        src.inbound.handle(msgs)  # 600 messages × 8 readings: 4,800 readings in one read
        assert [len(r) for r, _ in rec.calls] == [2000, 2000, 800]  # 250, 250 and 100 messages
        for _, ack in rec.calls:
            ack()
        assert bytes(src.acks.outbox) == puback_packets(list(range(1, 601)))
    finally:
        src.stop()
