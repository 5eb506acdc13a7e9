"""A seeded mutation fuzzer over valid MQTT payloads of every route format, and the hostile payloads it draws from;
shared by the malformed-payload test (tests/reliability/test_malformed_mqtt.py) and the bulk/paho equivalence test
(tests/ingest/test_mqtt_bulk_equivalence.py)."""

from __future__ import annotations

import random

FORMATS = ("ttn_v3", "tasmota", "zigbee2mqtt", "airrohr", "telraam", "line_protocol")
TS = 1_767_225_600_000_000_000
HOSTILE: list[bytes] = [
    b"", b" ", b"null", b"[]", b"{}", b"0", b"\"x\"", b"NaN", b"Infinity", b"-Infinity", b"1e999",
    b"{\"a\":" * 600 + b"1" + b"}" * 600, b"\xff\xfe\x00\x00", b"\xc3\x28", b"\x00" * 64,
    b"__import__('os').system('touch /tmp/citygw-pwned')", b"{\"values\": {\"pm2_5\": \"__import__('os')\"}}",
    b"{\"device_id\": \"x\", \"values\": {\"pm2_5\": 1e999}}", b"{\"device_id\": \"x\", \"values\": {\"pm2_5\": NaN}}",
    b"{\"device_id\": \"x\", \"ts\": -1, \"values\": {\"pm2_5\": 1}}",
    b"{\"device_id\": \"x\", \"ts\": 1e30, \"values\": {}}",
    b"{\"device_id\": [], \"values\": {\"pm2_5\": 1}}", b"{" + b"\"k\": 1," * 20_000 + b"\"z\": 2}",
]


def mutate(rng: random.Random, payload: bytes, other: bytes) -> bytes:
    """One seeded mutation of `payload`: bit flips, a cut, inserted or deleted bytes, a splice with `other`, a hostile
    value for a number, a hostile payload, random bytes, or a duplicated span."""
    op = rng.randrange(9)
    data = bytearray(payload)
    if op == 0 and data:  # flip bits
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif op == 1:  # cut
        data = data[: rng.randrange(len(data) + 1)]
    elif op == 2 and data:  # insert random bytes
        pos = rng.randrange(len(data))
        data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif op == 3 and data:  # delete a span
        pos = rng.randrange(len(data))
        del data[pos:pos + rng.randint(1, 16)]
    elif op == 4:  # splice with another format's payload
        data = data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1):]
    elif op == 5:  # replace a number with a hostile token
        text = data.decode("utf-8", "replace")
        digits = [i for i, c in enumerate(text) if c.isdigit()]
        if digits:
            i = rng.choice(digits)
            token = rng.choice(["NaN", "1e999", "-1e999", "\"\"", "null", "[]", "{}", "true", "9" * 40, "-0"])
            text = text[:i] + token + text[i + 1:]
        data = bytearray(text.encode())
    elif op == 6:
        data = bytearray(rng.choice(HOSTILE))
    elif op == 7:  # random bytes
        data = bytearray(rng.randbytes(rng.randint(0, 64)))
    else:  # duplicate a span (repeated keys, doubled separators)
        if data:
            pos = rng.randrange(len(data))
            data[pos:pos] = data[pos:pos + rng.randint(1, 24)]
    return bytes(data)
