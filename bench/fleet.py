"""Central-tier benchmark (issue 14 part 4): throughput of 1, 2 and 3 `citygw run` instances, each owning one
partition of a simulated LoRaWAN application's TTN v3 uplinks, against real Mosquitto and influxd 1.6.7.

    .venv/bin/python -m bench.fleet              # 5,000 devices x 4 uplinks (about 2-4 minutes on 2 cores)
    .venv/bin/python -m bench.fleet --devices 500 --uplinks 2    # a smoke run
    .venv/bin/python -m bench.fleet --engine jetstream           # the same through NATS JetStream

Partitioning is by device, written into the topic by the publisher (`part/<crc32(device) mod k>/v3/…`, the
"any broker" way in docs/fleet.md; the NATS mapping does the same hash on the server, but NATS 2.9.10's MQTT
listener corrupts mapped topics, see docs/fleet.md). Each run first lets every instance create its persistent
session, stops them, publishes everything (the broker holds it), then starts all instances at once and times
until InfluxDB holds every reading: the drain rate of the whole tier, not the publisher's. No assertions: only
measurements, printed as a table (docs/fleet.md records them with the machine).

`--engine jetstream` runs the tiers on a 3-node NATS cluster instead (tests/fleet/nats_cluster.py): the uplinks
are published into one stream per tier (3 replicas) through the account's `partition(k, <device>)` mapping, and
each instance's durable consumer (`[nats]`, ingest/nats_source.py) drains its partition; timed the same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simulators.mqtt_publishers import make_payload  # noqa: E402
from tests.fleet.central_support import central_config, partition, publish_uplinks  # noqa: E402
from tests.fleet.nats_cluster import NatsCluster, jetstream_config  # noqa: E402
from tests.servers import InfluxV1, Mosquitto  # noqa: E402 — the same real-server helpers the tests use

READINGS_PER_UPLINK = 8  # pm2_5, pm10, temperature, relative_humidity, noise_laeq, battery, rssi, snr
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def uplinks(devices: int, per_device: int, k: int) -> list[tuple[str, bytes]]:
    """Every device's uplinks, 20 s apart, on its partition's topic."""
    base = (time.time_ns() // (60 * 10**9)) * 60 * 10**9 - per_device * 20 * 10**9 - 120 * 10**9
    out = []
    for u in range(per_device):
        for d in range(devices):
            device = f"lora-{d:05d}"
            topic, payload = make_payload("ttn_v3", 7, base + u * 20 * 10**9, device)
            out.append((f"part/{partition(device, k)}/{topic}", payload))
    return out


def start(file: Path, log: Path) -> subprocess.Popen[bytes]:
    """`citygw run` as a subprocess."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(file)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)


def wait_log(log: Path, text: str, timeout: float) -> None:
    """Wait for a line in a log."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{log}: no {text!r} within {timeout:.0f} s")
        time.sleep(0.1)


def readings(influx: InfluxV1, db: str) -> int:
    """Readings InfluxDB holds (0 while influxd, busy with the writes, does not answer a query in time)."""
    try:
        rows = influx.query("SELECT count(value) FROM reading", db=db)
    except OSError:
        return 0
    return int(rows[0]["count"]) if rows else 0


def run_tier(k: int, broker: Mosquitto, influx: InfluxV1, tmp: Path, devices: int, per_device: int) -> dict[str, Any]:
    """Drain one tier of k instances; return the rates and CPU per instance."""
    db = f"bench_fleet_{k}_{time.time_ns() % 10**6}"
    influx.create_database(db)
    files = [central_config(tmp / f"k{k}-i{i}", f"central-{k}-{i}", broker, influx, db, f"part/{i}/v3/+/devices/+/up")
             for i in range(k)]
    logs = [tmp / f"k{k}-i{i}.log" for i in range(k)]
    procs = [start(f, log) for f, log in zip(files, logs, strict=True)]  # create the persistent sessions
    for log in logs:
        wait_log(log, "connected to MQTT broker", 60)
    time.sleep(1.0)  # the SUBSCRIBE follows the CONNACK
    for p in procs:
        p.terminate()
        p.wait(60)
    messages = uplinks(devices, per_device, k)
    publish_uplinks(broker.port, messages, inflight=1000)
    target = len(messages) * READINGS_PER_UPLINK
    started = time.monotonic()
    procs = [start(f, log) for f, log in zip(files, logs, strict=True)]
    return drain(k, procs, influx, db, len(messages), target, started)


def jetstream_mappings(tiers: list[int]) -> dict[str, str]:
    """One subject mapping per tier size k: `k<k>.v3.<app>@<tenant>.devices.<device>.up` into k partitions."""
    return {f"k{k}.v3.*.devices.*.up":
            f"k{k}.part.{{{{partition({k},2)}}}}.v3.{{{{split(1,@)}}}}.devices.{{{{wildcard(2)}}}}.up" for k in tiers}


def run_jetstream_tier(k: int, cluster: NatsCluster, influx: InfluxV1, tmp: Path, devices: int,
                       per_device: int) -> dict[str, Any]:
    """Publish every uplink into the tier's stream, then drain it with k instances; rates and CPU per instance."""
    db = f"bench_fleet_js{k}_{time.time_ns() % 10**6}"
    influx.create_database(db)
    stream = f"BENCH_K{k}"
    cluster.add_stream(stream, [f"k{k}.part.>"], replicas=3)
    messages = [(f"k{k}/{topic.split('/', 2)[2]}", payload) for topic, payload in uplinks(devices, per_device, k)]
    cluster.js_publish(cluster.nodes[0], messages, timeout_s=600)
    files = [jetstream_config(tmp / f"js{k}-i{i}", f"central-js{k}-{i}", cluster.client_urls(), influx.url, db,
                              stream, f"k{k}.part.{i}.>", route=f"k{k}/part/{i}/v3/#") for i in range(k)]
    logs = [tmp / f"js{k}-i{i}.log" for i in range(k)]
    target = len(messages) * READINGS_PER_UPLINK
    started = time.monotonic()
    procs = [start(f, log) for f, log in zip(files, logs, strict=True)]
    return drain(k, procs, influx, db, len(messages), target, started)


def drain(k: int, procs: list[subprocess.Popen[bytes]], influx: InfluxV1, db: str, n_messages: int, target: int,
          started: float) -> dict[str, Any]:
    """Wait until InfluxDB holds `target` readings; the rate after the first delivered batch, CPU per process."""
    first_at, first_count = 0.0, 0
    try:
        while (count := readings(influx, db)) < target:
            if count and not first_at:
                # Process start (imports, journal, connect) is not the tier's rate: time from the first
                # delivered batch, as bench.run's journal drain does.
                first_at, first_count = time.monotonic(), count
            if time.monotonic() - started > 900:
                raise RuntimeError(f"{k} instance(s): {count} of {target} readings after 900 s")
            time.sleep(1.0)
        done = time.monotonic()
        elapsed = done - started
        cpu = [cpu_seconds(p.pid) for p in procs]
    finally:
        for p in procs:
            p.terminate()
            p.wait(60)
    steady = (target - first_count) / max(done - first_at, 1e-3) if first_at else target / elapsed
    return {"instances": k, "messages": n_messages, "readings": target, "seconds": elapsed,
            "msg_s": steady / READINGS_PER_UPLINK, "readings_s": steady, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    """Run the 1-, 2- and 3-instance tiers and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--uplinks", type=int, default=4, help="uplinks per device")
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--engine", choices=["mosquitto", "jetstream"], default="mosquitto",
                        help="partitions in the topic on Mosquitto, or NATS JetStream's partition() mapping")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="citygw-bench-fleet-"))
    rows = []
    try:
        if args.engine == "jetstream":
            cluster = NatsCluster(tmp / "nats", jetstream_mappings(args.instances)).start()
            try:
                with InfluxV1(tmp / "influx") as influx:
                    for k in args.instances:
                        rows.append(run_jetstream_tier(k, cluster, influx, tmp, args.devices, args.uplinks))
                        print(f"{k} instance(s): {rows[-1]['msg_s']:.0f} msg/s", file=sys.stderr, flush=True)
            finally:
                cluster.close()
        else:
            with Mosquitto(tmp / "mosquitto") as broker, InfluxV1(tmp / "influx") as influx:
                for k in args.instances:
                    rows.append(run_tier(k, broker, influx, tmp, args.devices, args.uplinks))
                    print(f"{k} instance(s): {rows[-1]['msg_s']:.0f} msg/s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ncentral tier on {args.engine}, {args.devices} TTN v3 devices x {args.uplinks} uplinks, "
          f"{READINGS_PER_UPLINK} readings each; {os.cpu_count()} CPUs\n")
    print("| instances | uplinks | seconds from start | uplinks/s (after the first batch) | readings/s | "
          "CPU s per instance |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cpu = ", ".join(f"{c:.1f}" for c in r["cpu_s"])
        print(f"| {r['instances']} | {r['messages']:,} | {r['seconds']:.1f} | {r['msg_s']:,.0f} | "
              f"{r['readings_s']:,.0f} | {cpu} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
