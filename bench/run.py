"""citygw benchmark: end-to-end throughput, latency, CPU and memory against real Mosquitto and influxd 1.6.7,
in one run with two references — the naive pipeline most tutorials show, and the broker's own delivery rate.

    .venv/bin/python -m bench.run            # full run (about 3-4 minutes on 2 cores)
    .venv/bin/python -m bench.run --quick    # smaller counts, for a smoke check

Figures are printed as a table; docs/performance.md records them with the machine. Nothing here is a test:
no assertion on timing, only measurements.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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


def rss_mb(pid: int, peak: bool = False) -> float:
    """Resident (or peak resident) memory of a process in MB."""
    key = "VmHWM:" if peak else "VmRSS:"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def pin(cmd: list[str], core: int) -> list[str]:
    """Prefix a command with taskset when available (the gateway runs on one core, as on a small board)."""
    return ["taskset", "-c", str(core), *cmd] if shutil.which("taskset") else cmd


# -- workloads ----------------------------------------------------------------------------------------------

def make_payloads(n: int, readings: int, devices: int, base_ns: int) -> list[bytes]:
    """Canonical citygw JSON messages with unique event times (so no reading is a duplicate)."""
    out = []
    for i in range(n):
        doc = {"device_id": f"dev-{i % devices}", "ts": base_ns + i * 1_000_000,
               "values": dict(zip(QUANTITIES[:readings], VALUES[:readings], strict=True))}
        out.append(orjson.dumps(doc))
    return out


def publish_lines(broker: Mosquitto, topic: str, payloads: list[bytes], qos: int = 1) -> float:
    """Publish with mosquitto_pub -l (C, ~40k msg/s) and return the seconds it took."""
    data = b"\n".join(payloads) + b"\n"
    t0 = time.perf_counter()
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", str(qos), "-t", topic,
                    "-l"], input=data, check=True)
    return time.perf_counter() - t0


def influx_count(influx: InfluxV1, db: str) -> int:
    """How many raw readings InfluxDB holds."""
    rows = influx.query("SELECT count(value) FROM reading", db=db)
    return int(rows[0]["count"]) if rows else 0


def wait_count(influx: InfluxV1, db: str, target: int, timeout: float) -> float:
    """Wait until InfluxDB holds `target` readings; return the monotonic time it happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if influx_count(influx, db) >= target:
            return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError(f"InfluxDB reached only {influx_count(influx, db)} of {target} readings in {timeout:.0f} s")


class Gateway:
    """`citygw run` pinned to one core, with a generated config."""

    def __init__(self, workdir: Path, broker: Mosquitto, influx: InfluxV1, db: str, topic: str,
                 raw_feed: bool = False, synchronous: str = "full", input_client: str = "paho") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
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
        self.log = open(workdir / "gateway.log", "wb")  # noqa: SIM115 — closed in stop()
        self.proc = subprocess.Popen(pin([sys.executable, "-m", "gateway.cli", "run", "--config",
                                          str(self.config)], core=1),
                                     cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_subscribed(self, broker: Mosquitto, topic: str) -> None:
        """Give the gateway time to connect and subscribe (its session then keeps everything)."""
        time.sleep(2.0)
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {(self.config.parent / 'gateway.log').read_text()}")

    def stop(self) -> None:
        """Clean stop."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def bench_citygw(broker: Mosquitto, influx: InfluxV1, tmp: Path, n: int, readings: int,
                 input_client: str = "paho") -> dict[str, Any]:
    """Sustained end-to-end rate: messages published → readings counted in InfluxDB."""
    db = f"bench_{input_client}_{readings}"
    influx.create_database(db)
    topic = f"bench/{input_client}/{readings}/json"
    gw = Gateway(tmp / f"citygw-{input_client}-{readings}", broker, influx, db, topic, input_client=input_client)
    try:
        gw.wait_subscribed(broker, topic)
        payloads = make_payloads(n, readings, 100, time.time_ns() - 3600 * 10**9)
        cpu0 = cpu_seconds(gw.proc.pid)
        t0 = time.monotonic()
        publish_lines(broker, topic, payloads)
        t1 = wait_count(influx, db, n * readings, timeout=300)
        cpu = cpu_seconds(gw.proc.pid) - cpu0
        elapsed = t1 - t0
        return {"msgs_s": n / elapsed, "readings_s": n * readings / elapsed, "cpu_per_1k_ms": cpu / n * 1e6,
                "peak_rss_mb": rss_mb(gw.proc.pid, peak=True), "elapsed": elapsed}
    finally:
        gw.stop()


def bench_naive(broker: Mosquitto, influx: InfluxV1, n: int, readings: int) -> dict[str, Any]:
    """The tutorial pipeline: paho on_message → one HTTP write to InfluxDB per message (pinned to one core)."""
    db = f"naive_{readings}"
    influx.create_database(db)
    topic = f"naive/{readings}/json"
    script = f"""
import sys, time, urllib.request, orjson, paho.mqtt.client as mqtt
url = "{influx.url}/write?db={db}&precision=ns"
def on_message(client, userdata, msg):
    doc = orjson.loads(msg.payload)
    lines = "\\n".join(f"reading,device_id={{doc['device_id']}},quantity={{q}} value={{float(v)}} {{doc['ts']}}"
                      for q, v in doc["values"].items())
    urllib.request.urlopen(urllib.request.Request(url, data=lines.encode(), method="POST")).read()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="naive-{readings}", clean_session=False)
c.on_message = on_message
c.on_connect = lambda c, u, f, r, p: c.subscribe("{topic}", 1)
c.connect("127.0.0.1", {broker.port})
c.loop_forever()
"""
    proc = subprocess.Popen(pin([sys.executable, "-c", script], core=1))
    try:
        time.sleep(2.0)
        payloads = make_payloads(n, readings, 100, time.time_ns() - 3600 * 10**9)
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        publish_lines(broker, topic, payloads)
        t1 = wait_count(influx, db, n * readings, timeout=300)
        cpu = cpu_seconds(proc.pid) - cpu0
        return {"msgs_s": n / (t1 - t0), "readings_s": n * readings / (t1 - t0), "cpu_per_1k_ms": cpu / n * 1e6,
                "peak_rss_mb": rss_mb(proc.pid, peak=True)}
    finally:
        proc.kill()
        proc.wait()


def bench_broker(broker: Mosquitto, n: int) -> dict[str, Any]:
    """The broker's own delivery rate to a bare C subscriber (mosquitto_sub) at QoS 1."""
    topic = "bare/json"
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
    db = f"bench_latency_{synchronous}"
    influx.create_database(db)
    topic = f"lat/{synchronous}/json"
    gw = Gateway(tmp / f"citygw-latency-{synchronous}", broker, influx, db, topic, raw_feed=True,
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
        gw.wait_subscribed(broker, topic)
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
            gw.wait_subscribed(broker, topic)
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
    db = f"bench_dev_{devices}"
    influx.create_database(db)
    topic = f"dev{devices}/json"
    gw = Gateway(tmp / f"citygw-dev-{devices}", broker, influx, db, topic)
    try:
        gw.wait_subscribed(broker, topic)
        idle_rss = rss_mb(gw.proc.pid)
        payloads = make_payloads(n, 10, devices, time.time_ns() - 30 * 10**9)
        publish_lines(broker, topic, payloads)
        wait_count(influx, db, n * 10, timeout=300)
        # Let every window close and its KPI points reach InfluxDB, then measure a quiet gateway.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = influx.query("SELECT count(value) FROM kpi", db=db)
            if rows and int(rows[0]["count"]) >= devices * 10:
                break
            time.sleep(0.5)
        time.sleep(15.0)  # housekeeping trims what was delivered (real work, not idle): let it finish
        cpu0 = cpu_seconds(gw.proc.pid)
        time.sleep(10.0)
        idle_cpu = (cpu_seconds(gw.proc.pid) - cpu0) / 10.0 * 100
        return {"rss_mb": rss_mb(gw.proc.pid), "peak_rss_mb": rss_mb(gw.proc.pid, peak=True),
                "idle_rss_mb": idle_rss, "idle_cpu_pct": idle_cpu}
    finally:
        gw.stop()


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts (smoke check)")
    args = parser.parse_args(argv)
    n = 5_000 if args.quick else 50_000
    n_naive = 1_000 if args.quick else 3_000
    tmp = Path(tempfile.mkdtemp(prefix="citygw-bench-"))
    results: dict[str, Any] = {}
    steps: list[tuple[str, Callable[[], Any]]] = []
    # set_tcp_nodelay: Mosquitto's default (Nagle on) holds small packets for the peer's delayed ACK and adds
    # ~20 ms to every publish → feed hop; docs/performance.md shows both.
    with Mosquitto(tmp / "mosquitto", extra_config="set_tcp_nodelay true") as broker, \
            InfluxV1(tmp / "influx") as influx:
        steps = [
            ("broker", lambda: bench_broker(broker, n)),
            ("citygw_1", lambda: bench_citygw(broker, influx, tmp, n, 1)),
            ("citygw_10", lambda: bench_citygw(broker, influx, tmp, n // 2, 10)),
            ("citygw_bulk_1", lambda: bench_citygw(broker, influx, tmp, n, 1, "bulk")),
            ("citygw_bulk_10", lambda: bench_citygw(broker, influx, tmp, n // 2, 10, "bulk")),
            ("naive_1", lambda: bench_naive(broker, influx, n_naive, 1)),
            ("naive_10", lambda: bench_naive(broker, influx, n_naive, 10)),
            ("latency", lambda: bench_latency(broker, influx, tmp, 1000, 5 if args.quick else 10)),
            ("latency_normal", lambda: bench_latency(broker, influx, tmp, 1000, 5 if args.quick else 10,
                                                     synchronous="normal")),
            ("drain", lambda: bench_drain(broker, tmp, n // 5)),
            ("devices_10", lambda: bench_devices(broker, influx, tmp, 10, 10_000 if not args.quick else 2_000)),
            ("devices_10k", lambda: bench_devices(broker, influx, tmp, 10_000, 20_000 if not args.quick else 10_000)),
        ]
        for name, step in steps:
            t0 = time.monotonic()
            results[name] = step()
            print(f"  {name}: {results[name]}  ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    print_table(results, n, n_naive)
    return 0


def print_table(r: dict[str, Any], n: int, n_naive: int) -> None:
    """The summary table with the three-way ratios."""
    broker = r["broker"]["msgs_s"]
    print(f"\ncitygw benchmark — {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, gateway pinned to "
          f"one core, journal synchronous=full, QoS 1 end to end, counted in influxd 1.6.7\n")
    print(f"{'pipeline':<34}{'msg/s':>10}{'readings/s':>12}{'CPU ms/1k msg':>15}{'peak RSS MB':>13}")
    for key, label in [("citygw_1", f"citygw, 1 reading/msg ({n} msgs)"),
                       ("citygw_10", f"citygw, 10 readings/msg ({n // 2} msgs)"),
                       ("citygw_bulk_1", f"citygw bulk, 1 reading/msg ({n})"),
                       ("citygw_bulk_10", f"citygw bulk, 10 rdgs/msg ({n // 2})"),
                       ("naive_1", f"naive, 1 reading/msg ({n_naive} msgs)"),
                       ("naive_10", f"naive, 10 readings/msg ({n_naive} msgs)")]:
        x = r[key]
        print(f"{label:<34}{x['msgs_s']:>10,.0f}{x['readings_s']:>12,.0f}{x['cpu_per_1k_ms']:>15,.0f}"
              f"{x['peak_rss_mb']:>13.0f}")
    print(f"{'broker → bare C subscriber':<34}{broker:>10,.0f}")
    print()
    for k in ("1", "10"):
        c, nv = r[f"citygw_{k}"]["msgs_s"], r[f"naive_{k}"]["msgs_s"]
        print(f"ratios, {k:>2} reading(s)/msg: citygw/naive {c / nv:6.1f}×   citygw/broker {c / broker:6.1%}")
        b = r[f"citygw_bulk_{k}"]["msgs_s"]
        print(f"  bulk MQTT input, {k:>2} rdg/msg: bulk/naive  {b / nv:6.1f}×   bulk/broker   {b / broker:6.1%}"
              f"   bulk/paho input {b / c:5.2f}×")
    print()
    for key, label in [("latency", "synchronous=full"), ("latency_normal", "synchronous=normal")]:
        lat = r[key]
        print(f"latency publish → raw feed at 1,000 msg/s, {label:<18}: p50 {lat['p50_ms']:.1f} ms, "
              f"p99 {lat['p99_ms']:.1f} ms ({lat['received']}/{lat['sent']} received)")
    print(f"journal drain after an InfluxDB outage: {r['drain']['readings_s']:,.0f} readings/s "
          f"({r['drain']['readings']:,} readings)")
    for key, label in [("devices_10", "10 devices"), ("devices_10k", "10,000 devices")]:
        d = r[key]
        print(f"RSS with {label:<15}: {d['rss_mb']:.0f} MB (idle at start {d['idle_rss_mb']:.0f} MB, "
              f"peak {d['peak_rss_mb']:.0f} MB), idle CPU afterwards {d['idle_cpu_pct']:.2f} %")


if __name__ == "__main__":
    sys.exit(main())
