"""`citygw tail` follows a running gateway through its status server's `/live` stream (gateway/live_stream.py).

One gateway process for the module (MQTT input from a real Mosquitto, a status token, no windows, so the
journal holds exactly the readings published): `tail` prints only the device and quantity asked for, in order;
a wrong token is refused with a message saying where the token comes from; a client that stops reading is
skipped ahead and told how many entries it missed, and every entry is either shown or counted.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from devices import json_mapping
from gateway.fieldcmds import JournalReader
from gateway.live_stream import LiveFilter, format_entry
from tests.integration.helpers import REPO, GatewayProcess, publish_all, wait_for
from tests.reliability.support import metric
from tests.servers import Mosquitto, free_port

TOKEN = "tail-token-0123456789"
QUANTITIES = ("pm1_0", "pm2_5", "pm10", "temperature", "relative_humidity")


@dataclass
class Kit:
    """The running gateway of this module."""

    gw_id: str
    config: Path
    listen: str
    journal: Path
    mqtt_port: int

    def get(self, path: str) -> bytes:
        """GET a status path with the token."""
        request = urllib.request.Request(f"http://{self.listen}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            return bytes(resp.read())

    def metrics(self) -> str:
        """/metrics, or "" while the gateway does not answer."""
        try:
            return self.get("/metrics").decode()
        except OSError:
            return ""

    def last_seq(self) -> int:
        """The journal's last entry, read beside the gateway."""
        reader = JournalReader(self.journal)
        try:
            return reader.last_seq()
        finally:
            reader.close()

    def publish(self, device: str, values: list[dict[str, float]]) -> None:
        """One message per dict, a millisecond apart in event time (no two alike: none is a duplicate)."""
        now = time.time_ns()
        publish_all(self.mqtt_port, [(f"{self.gw_id}/{device}/json", json_mapping.encode(device, now + i * 10**6, v))
                                     for i, v in enumerate(values)])


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, mosquitto: Mosquitto) -> Iterator[Kit]:
    tmp = tmp_path_factory.mktemp("tail")
    gw_id = f"tail{time.time_ns() % 10**8}"
    token_file = tmp / "status_token"
    token_file.write_text(TOKEN + "\n")
    listen = f"127.0.0.1:{free_port()}"
    config = tmp / "kit.toml"
    config.write_text(f"""
[gateway]
id = "{gw_id}"
data_dir = "{tmp / 'data'}"
status_token_file = "{token_file}"
status_listen = "{listen}"

[aggregation]
windows = []

[mqtt]
host = "127.0.0.1"
port = {mosquitto.port}
reconnect_max = "1s"

[[mqtt.routes]]
topic = "{gw_id}/+/json"
format = "json"
device_id = "{{1}}"
""")
    kit = Kit(gw_id, config, listen, tmp / "data" / "journal.sqlite", mosquitto.port)
    gateway = GatewayProcess(config, tmp / "gateway.log").start()
    try:
        wait_for(lambda: metric(kit.metrics(), "citygw_mqtt_connected", client="in") == 1, 60, "the gateway up")
        yield kit
    finally:
        code = gateway.stop()
    assert code == 0, gateway.log()


def _tail(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "tail", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_tail_prints_one_device_and_quantity_published_over_mqtt(kit: Kit) -> None:
    assert kit.journal.exists(), "the fixture's journal path is the gateway's"
    tail = _tail("-c", str(kit.config), "--device", "dev-b", "--quantity", "pm10", "--no-kpis", "--last", "0",
                 "--count", "3", "--duration", "120")
    try:
        wait_for(lambda: metric(kit.metrics(), "citygw_live_clients") == 1, 60, "tail following the gateway")
        for round_ in range(3):  # another device and another quantity around each wanted reading
            kit.publish("dev-a", [{"pm10": 50.0 + round_, "pm2_5": 60.0 + round_}])
            kit.publish("dev-b", [{"pm10": 10.0 + round_, "pm2_5": 20.0 + round_}])
        out, err = tail.communicate(timeout=120)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    lines = out.splitlines()
    assert [line.split()[1:] for line in lines] == [["dev-b", "pm10", "=", f"{10.0 + i:g}", "ug/m3"] for i in range(3)]
    # --last shows the newest entries that pass the filter, then follows (here: stops after them).
    again = _tail("-c", str(kit.config), "--device", "dev-b", "--quantity", "pm10", "--last", "2", "--count", "2")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert [line.split()[4] for line in out.splitlines()] == ["11", "12"]


def test_a_wrong_token_is_refused_with_a_clear_message(kit: Kit, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_token"
    wrong.write_text("not-the-token\n")
    config = tmp_path / "wrong.toml"
    config.write_text(kit.config.read_text().replace(str(kit.config.parent / "status_token"), str(wrong)))
    tail = _tail("-c", str(config), "--count", "1", "--duration", "30")
    out, err = tail.communicate(timeout=60)
    assert tail.returncode == 1 and out == ""
    assert f"http://{kit.listen}/live" in err and "refused the token (wrong)" in err
    assert "gateway.status_token_env / status_token_file" in err
    # Nothing listening: a clear message too, not a traceback.
    tail = _tail("-c", str(config), "--url", f"http://127.0.0.1:{free_port()}", "--count", "1")
    out, err = tail.communicate(timeout=60)
    assert tail.returncode == 1 and "no gateway answers at" in err and "Traceback" not in err


def _read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "the stream ended"
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def test_a_client_that_stops_reading_is_skipped_ahead_and_told(kit: Kit) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    host, _, port = kit.listen.rpartition(":")
    sock.connect((host, int(port)))
    sock.sendall(f"GET /live?{LiveFilter(kpis=False).query()} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                 .encode())
    buf = bytearray()
    try:
        while _read_line(sock, buf) not in (b"", b"\r"):
            pass  # status line and headers
        hello = orjson.loads(_read_line(sock, buf))
        following = hello["following"]
        # Far more than the kernel buffers, one read batch and the bound hold while the client reads nothing.
        messages = 1200
        kit.publish("dev-slow", [{q: float(i % 50) for q in QUANTITIES} for i in range(messages)])
        last = following + messages * len(QUANTITIES)
        wait_for(lambda: kit.last_seq() >= last, 120, "every reading journaled")
        shown: list[int] = []
        dropped: list[int] = []
        while not shown or shown[-1] < last:
            item = orjson.loads(_read_line(sock, buf))
            if "seq" in item:
                shown.append(item["seq"])
                assert format_entry(item).split()[1] == "dev-slow"
            elif "dropped" in item:
                dropped.append(item["dropped"])
    finally:
        sock.close()
    assert dropped and min(dropped) > 0 and len(shown) >= hello["max_behind"]
    assert len(shown) + sum(dropped) == last - following  # every entry either shown or counted
    assert shown == sorted(shown) and len(set(shown)) == len(shown)
    assert metric(kit.metrics(), "citygw_live_dropped_total") == sum(dropped)
