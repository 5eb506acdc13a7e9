"""citygw benchmark: end-to-end throughput, latency, CPU and memory against real Mosquitto and influxd 1.6.7,
in one run with two references — the naive pipeline most tutorials show, and the broker's own delivery rate.

    .venv/bin/python -m bench.run            # full run (about 3-4 minutes on 2 cores)
    .venv/bin/python -m bench.run --quick    # smaller counts, for a smoke check

Figures are printed as a table; docs/performance.md records them with the machine. Nothing here is a test:
no assertion on timing, only measurements.
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peers import (  # noqa: E402
    Consumer,
    Naive,
    NodeRed,
    install_node_red,
    keep_off_consumer_core,
    node_available,
)
from tests.servers import InfluxV1, Mosquitto  # noqa: E402 — the same real-server helpers the tests use

QUANTITIES = ["pm2_5", "pm10", "pm1_0", "temperature", "relative_humidity", "pressure", "no2", "o3", "co2",
              "noise_laeq"]
VALUES = [12.5, 20.1, 8.2, 21.5, 55.0, 1013.2, 30.0, 40.0, 420.0, 55.5]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- process measurements -----------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def influx_writes(influx: InfluxV1) -> int:
    """Write requests influxd has served so far (its /debug/vars), whoever sent them."""
    with urllib.request.urlopen(f"{influx.url}/debug/vars", timeout=10) as resp:
        stats = orjson.loads(resp.read())
    return sum(int(v["values"].get("writeReq", 0)) for v in stats.values()
               if isinstance(v, dict) and v.get("name") == "httpd")


def rss_mb(pid: int, peak: bool = False) -> float:
    """Resident (or peak resident) memory of a process in MB."""
    key = "VmHWM:" if peak else "VmRSS:"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


# -- workloads ----------------------------------------------------------------------------------------------

def make_payloads(n: int, readings: int, devices: int, base_ns: int) -> list[bytes]:
    """Canonical citygw JSON messages with unique event times (so no reading is a duplicate)."""
    out = []
    base_ns -= base_ns % 1_000_000  # whole milliseconds: Node-RED's points are written at ms precision
    for i in range(n):
        doc = {"device_id": f"dev-{i % devices}", "ts": base_ns + i * 1_000_000,
               "values": dict(zip(QUANTITIES[:readings], VALUES[:readings], strict=True))}
        out.append(orjson.dumps(doc))
    return out


# mosquitto_pub -l drops what it has not yet sent when its input ends early (it disconnects with QoS 1
# messages still in flight; Mosquitto logs "disconnected due to out of memory"): measured, 100,000 messages of
# 10 readings from one run reached a bare subscriber only in part. Runs of 10,000 lines each arrive whole.
PUBLISH_CHUNK = 10_000


class Publisher(threading.Thread):
    """mosquitto_pub -l runs (C, ~40k msg/s), one after another, of at most PUBLISH_CHUNK lines each."""

    def __init__(self, broker: Mosquitto, topic: str, payloads: list[bytes], qos: int = 1) -> None:
        super().__init__(name="bench-publisher", daemon=True)
        self.cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", str(qos), "-t", topic, "-l"]
        self.payloads = payloads
        self.error: BaseException | None = None

    def run(self) -> None:
        """Publish every chunk; a failing mosquitto_pub is kept for wait()."""
        try:
            for i in range(0, len(self.payloads), PUBLISH_CHUNK):
                data = b"\n".join(self.payloads[i:i + PUBLISH_CHUNK]) + b"\n"
                subprocess.run(self.cmd, input=data, check=True)
        except BaseException as exc:  # re-raised in wait()
            self.error = exc

    def wait(self, timeout: float = 600.0) -> None:
        """Join; raise what the publisher raised."""
        self.join(timeout)
        if self.is_alive():
            raise RuntimeError(f"publisher still running after {timeout:.0f} s")
        if self.error is not None:
            raise self.error


def publish_lines(broker: Mosquitto, topic: str, payloads: list[bytes], qos: int = 1,
                  background: bool = False) -> float | Publisher:
    """Publish every payload; the seconds it took, or (background) the running Publisher."""
    publisher = Publisher(broker, topic, payloads, qos)
    t0 = time.perf_counter()
    publisher.start()
    if background:
        return publisher
    publisher.wait()
    return time.perf_counter() - t0


def influx_count(influx: InfluxV1, db: str) -> int:
    """How many raw readings InfluxDB holds (-1 when influxd did not answer in time: a busy moment, ask again)."""
    try:
        rows = influx.query("SELECT count(value) FROM reading", db=db)
    except (TimeoutError, OSError):
        return -1
    return int(rows[0]["count"]) if rows else 0


def points_written(influx: InfluxV1, db: str) -> int:
    """Points influxd has accepted into `db` since it started (its shards' writePointsOk in /debug/vars: readings
    and KPI points, re-sent points counted again), or -1 when it did not answer. Cheap, unlike a count query."""
    try:
        with urllib.request.urlopen(f"{influx.url}/debug/vars", timeout=5) as resp:
            stats = orjson.loads(resp.read())
    except (TimeoutError, OSError):
        return -1
    return sum(int(v["values"].get("writePointsOk", 0)) for k, v in stats.items()
               if k.startswith("shard:") and isinstance(v, dict) and v.get("tags", {}).get("database") == db)


def wait_count(influx: InfluxV1, db: str, target: int, timeout: float,
               samples: list[tuple[float, int]] | None = None) -> float:
    """Wait until InfluxDB holds `target` readings; return the monotonic time it happened (samples: (t, points)).

    A count query costs influxd tens of milliseconds once it holds a few 100,000 points, and polling with it
    every 50 ms loaded the machine it measures. So influxd's own counter of accepted points is polled, and the
    count query runs only once that counter says the target may be there (the counter includes KPI points)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        written = points_written(influx, db)
        now = time.monotonic()
        if samples is not None and written >= 0:
            samples.append((now, written))
        if written >= target and influx_count(influx, db) >= target:
            return now
        time.sleep(0.02)
    raise RuntimeError(f"InfluxDB reached only {influx_count(influx, db)} of {target} readings in {timeout:.0f} s")


def wait_stable(influx: InfluxV1, db: str, target: int, quiet_s: float, timeout: float) -> int:
    """The count once it reaches `target` or has not moved for `quiet_s` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = influx_count(influx, db)
        if count >= target:
            return count
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return count
        time.sleep(0.2)
    return influx_count(influx, db)


class Gateway(Consumer):
    """`citygw run` pinned to one core, with a generated config; restarted on the same data_dir after a kill."""

    label = "citygw"

    def __init__(self, workdir: Path, broker: Mosquitto, influx: InfluxV1, db: str, topic: str,
                 raw_feed: bool = False, synchronous: str = "full", input_client: str = "auto") -> None:
        super().__init__(workdir)
        self._started_at = 0.0
        self.config = workdir / "bench.toml"
        self.config.write_text(f"""
[gateway]
id = "bench"
data_dir = "{workdir / 'data'}"
status_listen = ""
log_level = "warning"

[mqtt]
host = "127.0.0.1"
port = {broker.port}
protocol = "{os.environ.get('BENCH_MQTT_PROTOCOL', '3.1.1')}"
input_client = "{input_client}"

[[mqtt.routes]]
topic = "{topic}"
format = "json"

[mqtt.feed]
raw = {'true' if raw_feed else 'false'}

[aggregation]
windows = ["1m"]
grace = "2s"

[journal]
synchronous = "{synchronous}"

[[influx]]
api = "v1"
url = "{influx.url}"
database = "{db}"
batch_size = 5000
""")

    def command(self) -> list[str]:
        """`citygw run` with the generated config."""
        return [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)]

    def start(self, timeout: float = 60.0) -> None:
        """Start; see ready()."""
        self._started_at = time.monotonic()
        super().start(timeout)

    def ready(self) -> bool:
        """Two seconds to connect and subscribe (its persistent session then keeps everything)."""
        return time.monotonic() - self._started_at >= float(os.environ.get("BENCH_READY_S", "2"))


def bench_throughput(consumer: Consumer, broker: Mosquitto, influx: InfluxV1, db: str, topic: str, n: int,
                     readings: int, samples: list[tuple[float, int]] | None = None) -> dict[str, Any]:
    """Sustained end-to-end rate of one consumer: messages published → readings counted in InfluxDB."""
    consumer.start()
    try:
        payloads = make_payloads(n, readings, 100, time.time_ns() - 3600 * 10**9)
        cpu0 = cpu_seconds(consumer.pid)
        writes0 = influx_writes(influx)
        others0 = {name: cpu_seconds(server.pid) for name, server in (("broker", broker), ("influxd", influx))
                   if server.pid}
        t0 = time.monotonic()
        if samples is not None:
            samples.append((t0, 0))
        publish_lines(broker, topic, payloads, background=samples is not None)
        published = time.monotonic()
        t1 = wait_count(influx, db, n * readings, timeout=600, samples=samples)
        cpu = cpu_seconds(consumer.pid) - cpu0
        elapsed = t1 - t0
        # The servers' CPU too: a consumer that acknowledges late keeps more messages in flight at the broker.
        others = {f"{name}_cpu_per_1k_ms": (cpu_seconds(server.pid) - others0[name]) / n * 1e6
                  for name, server in (("broker", broker), ("influxd", influx)) if name in others0 and server.pid}
        # Landing right after the publisher finished: the publisher set the pace, not the consumer.
        writes = influx_writes(influx) - writes0
        print(f"  published in {published - t0:.1f} s, all landed after {elapsed:.1f} s; {writes:,} write requests",
              flush=True)
        return {"msgs_s": n / elapsed, "readings_s": n * readings / elapsed, "cpu_per_1k_ms": cpu / n * 1e6,
                "points_per_write": n * readings / max(1, writes),
                "peak_rss_mb": rss_mb(consumer.pid, peak=True), "elapsed": elapsed, **others}
    finally:
        consumer.stop()


def bench_citygw(broker: Mosquitto, influx: InfluxV1, tmp: Path, n: int, readings: int,
                 input_client: str = "paho") -> dict[str, Any]:
    """citygw's sustained rate with the given MQTT input."""
    db = f"bench_{input_client}_{readings}{ROUND.suffix}"
    influx.create_database(db)
    topic = f"bench/{input_client}/{readings}/json{ROUND.suffix}"
    gw = Gateway(tmp / f"citygw-{input_client}-{readings}{ROUND.suffix}", broker, influx, db, topic,
                 input_client=input_client)
    return bench_throughput(gw, broker, influx, db, topic, n, readings)


def bench_naive(broker: Mosquitto, influx: InfluxV1, tmp: Path, n: int, readings: int) -> dict[str, Any]:
    """The tutorial pipeline: paho on_message → one HTTP write to InfluxDB per message (pinned to one core)."""
    db = f"naive_{readings}{ROUND.suffix}"
    influx.create_database(db)
    topic = f"naive/{readings}/json{ROUND.suffix}"
    naive = Naive(tmp / f"naive-{readings}{ROUND.suffix}", broker.port, influx.url, db, topic)
    return bench_throughput(naive, broker, influx, db, topic, n, readings)


def bench_nodered(broker: Mosquitto, influx: InfluxV1, tmp: Path, n: int, readings: int) -> dict[str, Any]:
    """Node-RED's batched flow (join 1,000 msgs / 1 s → influx batch), pinned to the same core."""
    db = f"nodered_{readings}{ROUND.suffix}"
    influx.create_database(db)
    topic = f"nodered/{readings}/json{ROUND.suffix}"
    red = NodeRed(tmp / f"nodered-{readings}{ROUND.suffix}", install_node_red(), broker.port, influx.port, db, topic)
    return bench_throughput(red, broker, influx, db, topic, n, readings)


def bench_steady(broker: Mosquitto, influx: InfluxV1, tmp: Path, n: int, readings: int,
                 input_client: str) -> dict[str, Any]:
    """A long run (≥ 1,000,000 readings): throughput of each tenth, from InfluxDB's count sampled over time."""
    db = f"steady_{input_client}{ROUND.suffix}"
    influx.create_database(db)
    topic = f"steady/{input_client}/json{ROUND.suffix}"
    gw = Gateway(tmp / f"citygw-steady-{input_client}{ROUND.suffix}", broker, influx, db, topic,
                 input_client=input_client)
    samples: list[tuple[float, int]] = []
    result = bench_throughput(gw, broker, influx, db, topic, n, readings, samples=samples)
    total = n * readings
    # Time at which the count crossed each tenth (linear between samples); rate of each tenth.
    crossings = [_crossing(samples, total * k / 10) for k in range(1, 11)]
    first_landed = next(t for t, c in samples if c > 0)
    starts = [first_landed, *crossings[:-1]]
    tenths = [total / 10 / max(end - begin, 1e-6) for begin, end in zip(starts, crossings, strict=True)]
    result.update({"readings": total, "tenths_readings_s": tenths, "first_tenth": tenths[0],
                   "last_tenth": tenths[-1], "last_over_first": tenths[-1] / tenths[0]})
    return result


def _crossing(samples: list[tuple[float, int]], level: float) -> float:
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if c0 < level <= c1:
            return t0 + (t1 - t0) * (level - c0) / (c1 - c0)
    return samples[-1][0]


def bench_crash(consumer: Consumer, broker: Mosquitto, influx: InfluxV1, db: str, topic: str,
                n: int) -> dict[str, Any]:
    """SIGKILL the consumer once a third of an n-message burst is published, restart it, count what landed.

    The first third is published (and acknowledged by the broker), then the rest starts and the consumer is
    killed at once, with whatever it had received but not yet written; the restarted consumer resumes its
    persistent session. What InfluxDB holds once the count stops moving is what landed.
    """
    consumer.start()
    try:
        payloads = make_payloads(n, 1, 100, time.time_ns() - 3600 * 10**9)
        third = n // 3
        publish_lines(broker, topic, payloads[:third])
        rest = publish_lines(broker, topic, payloads[third:], background=True)
        consumer.kill()
        at_kill = influx_count(influx, db)
        consumer.start()
        assert isinstance(rest, Publisher)
        rest.wait()
        landed = wait_stable(influx, db, n, quiet_s=10.0, timeout=600)
        return {"sent": n, "landed": landed, "lost": n - landed, "lost_pct": (n - landed) / n * 100,
                "in_influx_at_kill": at_kill}
    finally:
        consumer.stop()


def crash_citygw(broker: Mosquitto, influx: InfluxV1, tmp: Path, n: int, input_client: str) -> dict[str, Any]:
    """The crash row for citygw with the given MQTT input."""
    db = f"crash_{input_client}{ROUND.suffix}"
    influx.create_database(db)
    topic = f"crash/{input_client}/json{ROUND.suffix}"
    gw = Gateway(tmp / f"citygw-crash-{input_client}{ROUND.suffix}", broker, influx, db, topic,
                 input_client=input_client)
    return bench_crash(gw, broker, influx, db, topic, n)


def crash_naive(broker: Mosquitto, influx: InfluxV1, tmp: Path, n: int) -> dict[str, Any]:
    """The crash row for the naive pipeline."""
    db = f"crash_naive{ROUND.suffix}"
    influx.create_database(db)
    topic = f"crash/naive/json{ROUND.suffix}"
    naive = Naive(tmp / f"naive-crash{ROUND.suffix}", broker.port, influx.url, db, topic)
    return bench_crash(naive, broker, influx, db, topic, n)


def crash_nodered(broker: Mosquitto, influx: InfluxV1, tmp: Path, n: int) -> dict[str, Any]:
    """The crash row for Node-RED's batched flow."""
    db = f"crash_nodered{ROUND.suffix}"
    influx.create_database(db)
    topic = f"crash/nodered/json{ROUND.suffix}"
    red = NodeRed(tmp / f"nodered-crash{ROUND.suffix}", install_node_red(), broker.port, influx.port, db, topic)
    return bench_crash(red, broker, influx, db, topic, n)


def bench_broker(broker: Mosquitto, n: int) -> dict[str, Any]:
    """The broker's own delivery rate to a bare C subscriber (mosquitto_sub) at QoS 1."""
    topic = f"bare/json{ROUND.suffix}"
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic,
                            "-C", str(n)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    payloads = make_payloads(n, 1, 100, time.time_ns())
    t0 = time.monotonic()
    publish_lines(broker, topic, payloads)
    sub.wait(timeout=300)
    return {"msgs_s": n / (time.monotonic() - t0)}


def bench_latency(broker: Mosquitto, influx: InfluxV1, tmp: Path, rate: int, seconds: float,
                  synchronous: str = "full") -> dict[str, Any]:
    """p50/p99 from publish to the raw feed at a steady rate (publisher and gateway on separate cores)."""
    db = f"bench_latency_{synchronous}{ROUND.suffix}"
    influx.create_database(db)
    topic = f"lat/{synchronous}/json{ROUND.suffix}"
    gw = Gateway(tmp / f"citygw-latency-{synchronous}{ROUND.suffix}", broker, influx, db, topic, raw_feed=True,
                 synchronous=synchronous)
    latencies: list[float] = []
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time_ns()
        sent = orjson.loads(msg.payload)["ts"]
        with lock:
            latencies.append((now - sent) / 1e6)

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.on_connect = lambda c, u, f, r, p: c.subscribe("citygw/bench/reading/#", 0)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        gw.start()
        total = int(rate * seconds)
        start = time.monotonic()
        for i in range(total):
            target = start + i / rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            doc = {"device_id": f"lat-{i % 50}", "ts": time.time_ns(), "values": {"pm2_5": 10.0}}
            pub.publish(topic, orjson.dumps(doc), qos=1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(latencies) < total:
            time.sleep(0.1)
        with lock:
            data = sorted(latencies)
        if not data:
            raise RuntimeError("no raw feed messages arrived")
        return {"p50_ms": data[len(data) // 2], "p99_ms": data[int(len(data) * 0.99) - 1], "received": len(data),
                "sent": total}
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.disconnect()
        sub.loop_stop()
        gw.stop()


def bench_drain(broker: Mosquitto, tmp: Path, n: int) -> dict[str, Any]:
    """Journal drain: readings buffered during an InfluxDB outage, then delivered when it returns."""
    with InfluxV1(tmp / "influx-drain", database="bench_drain") as influx:
        db = "bench_drain"
        topic = "drain/json"
        gw = Gateway(tmp / "citygw-drain", broker, influx, db, topic)
        try:
            gw.start()
            influx.stop()
            payloads = make_payloads(n, 10, 100, time.time_ns() - 3600 * 10**9)
            publish_lines(broker, topic, payloads)
            # Wait until everything is journaled (the gateway acknowledges after commit; the broker then has
            # nothing in flight), then bring InfluxDB back and time the catch-up.
            time.sleep(max(2.0, n / 5000))
            influx.start()
            # Time from the first delivered reading (the sink's backoff timer does not count) to the last.
            first = wait_count(influx, db, 1, timeout=120)
            base = influx_count(influx, db)
            t1 = wait_count(influx, db, n * 10, timeout=300)
            return {"readings_s": (n * 10 - base) / max(t1 - first, 1e-3), "readings": n * 10}
        finally:
            gw.stop()


def bench_devices(broker: Mosquitto, influx: InfluxV1, tmp: Path, devices: int, n: int) -> dict[str, Any]:
    """RSS after `n` messages spread over `devices` distinct devices (open windows per device)."""
    db = f"bench_dev_{devices}{ROUND.suffix}"
    influx.create_database(db)
    topic = f"dev{devices}/json{ROUND.suffix}"
    gw = Gateway(tmp / f"citygw-dev-{devices}{ROUND.suffix}", broker, influx, db, topic)
    try:
        gw.start()
        idle_rss = rss_mb(gw.pid)
        payloads = make_payloads(n, 10, devices, time.time_ns() - 30 * 10**9)
        publish_lines(broker, topic, payloads)
        wait_count(influx, db, n * 10, timeout=900)  # 100,000 new series: influxd itself is slow to index them
        # Let every window close and its KPI points reach InfluxDB, then measure a quiet gateway.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = influx.query("SELECT count(value) FROM kpi", db=db)
            if rows and int(rows[0]["count"]) >= devices * 10:
                break
            time.sleep(0.5)
        # Then wait for the work the burst left (the feed publishing 100,000 retained KPI messages, the trims) to
        # end: RSS measured while that ran read 20-30 MB higher, at random. Quiet = under 5 % CPU for 5 s.
        # A quiet spell can end: in one run the 10 s after the reading ran at 63 % CPU, and RSS read 26 MB above
        # the other runs. So a reading counts only when the 10 s after it are quiet too.
        time.sleep(15.0)
        deadline = time.monotonic() + 180
        while True:
            cpu0 = cpu_seconds(gw.pid)
            time.sleep(5.0)
            if cpu_seconds(gw.pid) - cpu0 >= 0.25 and time.monotonic() < deadline:
                continue
            rss = rss_mb(gw.pid)
            cpu0 = cpu_seconds(gw.pid)
            time.sleep(10.0)
            idle_cpu = (cpu_seconds(gw.pid) - cpu0) / 10.0 * 100
            if idle_cpu < 5.0 or time.monotonic() >= deadline:
                break
        return {"rss_mb": rss, "peak_rss_mb": rss_mb(gw.pid, peak=True), "idle_rss_mb": idle_rss,
                "idle_cpu_pct": idle_cpu}
    finally:
        gw.stop()


def compile_bytecode() -> None:
    """Compile citygw's modules to bytecode first, as pip does when it installs the wheel on a kit.

    In a checkout run with PYTHONDONTWRITEBYTECODE=1 (this machine's environment), every `citygw run` compiled
    its ~100 modules from source, which a kit never does: 0.35 MB more RSS at start, and CPU at every start.
    """
    for package in ("gateway", "devices", "ingest", "aggregators"):
        compileall.compile_dir(REPO / package, quiet=1)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts (smoke check)")
    parser.add_argument("--peers", action="store_true",
                        help="also run Node-RED's batched flow (installed with npm into .cache/bench-peers/)")
    parser.add_argument("--crash", action="store_true",
                        help="crash rows: SIGKILL each consumer at a third of a burst, restart, count what landed")
    parser.add_argument("--steady-input", default="bulk", choices=("paho", "bulk"),
                        help="MQTT input of the ≥ 1,000,000-reading row (default: bulk)")
    parser.add_argument("--only", default="", help="comma-separated row names to run (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count (smoke checks)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of the chosen rows; the table shows each row's median round (a shared machine)")
    args = parser.parse_args(argv)
    if args.peers and not node_available():
        parser.error("--peers needs node and npm on PATH")
    compile_bytecode()
    scale = args.scale * (0.1 if args.quick else 1.0)
    n = max(100, int(50_000 * scale))
    # Throughput rows run long enough (10-20 s) that start-up and the last batch's linger do not decide them:
    # 50,000 messages at 10 readings took 3 s, and such short runs put citygw at 0.8-1.1× Node-RED at random.
    n_rate = max(100, int(200_000 * scale))
    n_naive = max(100, int(3_000 * scale))
    n_crash = max(300, int(40_000 * scale))
    n_steady = max(1000, int(100_000 * scale))  # × 10 readings: 1,000,000 readings at scale 1
    tmp = Path(tempfile.mkdtemp(prefix="citygw-bench-"))
    failed: dict[str, str] = {}
    # set_tcp_nodelay: Mosquitto's default (Nagle on) holds small packets for the peer's delayed ACK and adds
    # ~20 ms to every publish → feed hop; docs/performance.md shows both.
    with Mosquitto(tmp / "mosquitto", extra_config="set_tcp_nodelay true") as broker, \
            InfluxV1(tmp / "influx") as influx:
        # This script and the publishers it starts on core 0; each consumer on core 1 (pin()); the servers free.
        keep_off_consumer_core(os.getpid())
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("broker", lambda: bench_broker(broker, n)),
            ("citygw_1", lambda: bench_citygw(broker, influx, tmp, n_rate, 1)),
            ("citygw_10", lambda: bench_citygw(broker, influx, tmp, n_rate // 2, 10)),
            ("citygw_bulk_1", lambda: bench_citygw(broker, influx, tmp, n_rate, 1, "bulk")),
            ("citygw_bulk_10", lambda: bench_citygw(broker, influx, tmp, n_rate // 2, 10, "bulk")),
            ("naive_1", lambda: bench_naive(broker, influx, tmp, n_naive, 1)),
            ("naive_10", lambda: bench_naive(broker, influx, tmp, n_naive, 10)),
        ]
        if args.peers:
            steps += [("nodered_1", lambda: bench_nodered(broker, influx, tmp, n_rate, 1)),
                      ("nodered_10", lambda: bench_nodered(broker, influx, tmp, n_rate // 2, 10))]
        steps += [
            ("steady", lambda: bench_steady(broker, influx, tmp, n_steady, 10, args.steady_input)),
            ("latency", lambda: bench_latency(broker, influx, tmp, 1000, 5 if args.quick else 10)),
            ("latency_normal", lambda: bench_latency(broker, influx, tmp, 1000, 5 if args.quick else 10,
                                                     synchronous="normal")),
            ("drain", lambda: bench_drain(broker, tmp, max(1000, n // 5))),
            ("devices_10", lambda: bench_devices(broker, influx, tmp, 10, max(1000, int(10_000 * scale)))),
            ("devices_10k", lambda: bench_devices(broker, influx, tmp, 10_000, max(10_000, int(20_000 * scale)))),
        ]
        if args.crash:
            steps += [("crash_paho", lambda: crash_citygw(broker, influx, tmp, n_crash, "paho")),
                      ("crash_bulk", lambda: crash_citygw(broker, influx, tmp, n_crash, "bulk")),
                      ("crash_naive", lambda: crash_naive(broker, influx, tmp, max(300, n_crash // 10)))]
            if args.peers:
                steps.append(("crash_nodered", lambda: crash_nodered(broker, influx, tmp, n_crash)))
        only = {name for name in args.only.split(",") if name}
        unknown = only - {name for name, _ in steps}
        if unknown:
            parser.error(f"--only: unknown rows {sorted(unknown)} (with these flags: {[k for k, _ in steps]})")
        runs: dict[str, list[dict[str, Any]]] = {}
        for round_no in range(args.repeat):  # rounds of every row: each pipeline meets the same moments of the machine
            ROUND.suffix = f"_r{round_no}" if round_no else ""
            for name, step in steps:
                if only and name not in only:
                    continue
                t0 = time.monotonic()
                try:
                    row = step()
                except Exception as exc:  # one failed row (a timeout on a loaded machine) must not lose the others
                    failed[name] = f"{type(exc).__name__}: {exc}"
                    print(f"  {name}: FAILED {failed[name]}", file=sys.stderr, flush=True)
                    continue
                runs.setdefault(name, []).append(row)  # not before the step: a failed row has no rounds
                print(f"  {name}: {runs[name][-1]}  ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        results = {name: median_run(rows) for name, rows in runs.items()}
    shutil.rmtree(tmp, ignore_errors=True)
    if args.repeat > 1:
        print(f"\nmedian of {args.repeat} rounds (by msg/s where a row has it); every round's msg/s:")
        for name, rows in runs.items():
            if "msgs_s" in rows[0]:
                print(f"  {name:<16}" + "  ".join(f"{row['msgs_s']:>9,.0f}" for row in rows))
    print_table(results)
    for name, error in failed.items():
        print(f"row {name} FAILED: {error}")
    return 1 if failed else 0


class _Round:
    """Which round of --repeat runs: every round writes to databases, topics and directories of its own."""

    suffix = ""


ROUND = _Round()


def median_run(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median msg/s (the first round for rows without a rate)."""
    if "msgs_s" not in rows[0]:
        return rows[0]
    return sorted(rows, key=lambda row: row["msgs_s"])[(len(rows) - 1) // 2]


ROWS = [("citygw_1", "citygw, paho input, 1 rdg/msg"), ("citygw_10", "citygw, paho input, 10 rdg/msg"),
        ("citygw_bulk_1", "citygw, bulk input, 1 rdg/msg"), ("citygw_bulk_10", "citygw, bulk input, 10 rdg/msg"),
        ("nodered_1", "Node-RED batch flow, 1 rdg/msg"), ("nodered_10", "Node-RED batch flow, 10 rdg/msg"),
        ("naive_1", "naive, 1 reading/msg"), ("naive_10", "naive, 10 readings/msg")]


def print_table(r: dict[str, Any]) -> None:
    """The summary table with the ratios of the rows that ran."""
    print(f"\ncitygw benchmark — {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, every consumer pinned "
          f"to one core, journal synchronous=full, QoS 1 end to end, counted in influxd 1.6.7\n")
    print(f"{'pipeline':<34}{'msg/s':>10}{'readings/s':>12}{'CPU ms/1k msg':>15}{'peak RSS MB':>13}")
    for key, label in ROWS:
        if key in r:
            x = r[key]
            print(f"{label:<34}{x['msgs_s']:>10,.0f}{x['readings_s']:>12,.0f}{x['cpu_per_1k_ms']:>15,.0f}"
                  f"{x['peak_rss_mb']:>13.0f}")
    broker = r.get("broker", {}).get("msgs_s")
    if broker:
        print(f"{'broker → bare C subscriber':<34}{broker:>10,.0f}")
    print()
    for k in ("1", "10"):
        for ours, name in ((f"citygw_{k}", "paho input"), (f"citygw_bulk_{k}", "bulk input")):
            if ours not in r:
                continue
            c = r[ours]["msgs_s"]
            parts = [f"citygw ({name}), {k:>2} rdg/msg:"]
            for peer, peer_name in ((f"nodered_{k}", "Node-RED"), (f"naive_{k}", "naive")):
                if peer in r:
                    parts.append(f"{c / r[peer]['msgs_s']:6.2f}× {peer_name}")
            if broker:
                parts.append(f"{c / broker:6.1%} of the broker")
            if len(parts) > 1:  # nothing to compare with when only this row ran
                print("   ".join(parts))
    if "steady" in r:
        s = r["steady"]
        print(f"\n{s['readings']:,} readings, 10 per message: {s['readings_s']:,.0f} readings/s overall; first tenth "
              f"{s['first_tenth']:,.0f}/s, last tenth {s['last_tenth']:,.0f}/s (last/first {s['last_over_first']:.0%});"
              f" tenths: {', '.join(f'{x / 1000:.0f}k' for x in s['tenths_readings_s'])}")
    print()
    for key, label in [("latency", "synchronous=full"), ("latency_normal", "synchronous=normal")]:
        if key in r:
            lat = r[key]
            print(f"latency publish → raw feed at 1,000 msg/s, {label:<18}: p50 {lat['p50_ms']:.1f} ms, "
                  f"p99 {lat['p99_ms']:.1f} ms ({lat['received']}/{lat['sent']} received)")
    if "drain" in r:
        print(f"journal drain after an InfluxDB outage: {r['drain']['readings_s']:,.0f} readings/s "
              f"({r['drain']['readings']:,} readings)")
    for key, label in [("devices_10", "10 devices"), ("devices_10k", "10,000 devices")]:
        if key in r:
            d = r[key]
            print(f"RSS with {label:<15}: {d['rss_mb']:.0f} MB (idle at start {d['idle_rss_mb']:.0f} MB, "
                  f"peak {d['peak_rss_mb']:.0f} MB), idle CPU afterwards {d['idle_cpu_pct']:.2f} %")
    crash_labels = [("crash_paho", "citygw, paho input"), ("crash_bulk", "citygw, bulk input"),
                    ("crash_nodered", "Node-RED batch flow"), ("crash_naive", "naive")]
    crash_rows = [(k, label) for k, label in crash_labels if k in r]
    if crash_rows:
        print("\nSIGKILL at a third of a burst (1 reading/msg), restarted; counted in InfluxDB:")
        for key, label in crash_rows:
            c = r[key]
            print(f"  {label:<22} {c['landed']:>7,} of {c['sent']:>7,} landed, {c['lost']:>6,} lost "
                  f"({c['lost_pct']:.1f} %)")


if __name__ == "__main__":
    sys.exit(main())
