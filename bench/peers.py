"""The pipelines citygw is compared with, each as a consumer process the benchmark can start, kill and restart.

- `NodeRed`: what cities and makers build by hand instead of citygw — Node-RED 4.1 with
  node-red-contrib-influxdb 0.7: `mqtt in` (QoS 1, persistent session) → `json` → `join` (1,000 messages or
  1 s) → a function turning each reading into a point of citygw's schema → `influx batch`. Installed with npm
  into `.cache/bench-peers/` on first use (bench only; no test needs it).
- `Naive`: the tutorial pipeline, paho `on_message` → one HTTP write per message.

Both are pinned to the gateway's core, take the same canonical JSON messages and write the same schema
(`reading`, tags device_id and quantity, field value, the message's time), so InfluxDB counts compare.
"""

from __future__ import annotations

import abc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
PEERS_DIR = REPO / ".cache" / "bench-peers"
NODE_RED_VERSION = "4.1"
INFLUXDB_NODES_VERSION = "0.7"


def pin(cmd: list[str], core: int = 1) -> list[str]:
    """Prefix a command with taskset when available (every consumer runs on one core, as on a small board)."""
    return ["taskset", "-c", str(core), *cmd] if shutil.which("taskset") else cmd


def keep_off_consumer_core(pid: int, core: int = 0) -> None:
    """Move every thread of a process onto `core`, away from the consumer's. bench/run.py moves only itself
    (and so the publishers it starts): the broker and influxd stay free to use either core, as the issue's
    set-up has them. Threads started later inherit the mask of the thread that starts them."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {core})
        except (ProcessLookupError, PermissionError):
            continue  # a thread that has just exited


def install_node_red(cache: Path = PEERS_DIR) -> Path:
    """Install Node-RED and node-red-contrib-influxdb with npm into `cache` once; return Node-RED's red.js."""
    red = cache / "node_modules" / "node-red" / "red.js"
    nodes = cache / "node_modules" / "node-red-contrib-influxdb" / "package.json"
    if red.exists() and nodes.exists():
        return red
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("--peers needs npm and node (Debian: apt-get install npm) to install Node-RED")
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "package.json").exists():
        (cache / "package.json").write_text('{"name": "citygw-bench-peers", "private": true}\n')
    print(f"installing node-red@{NODE_RED_VERSION} and node-red-contrib-influxdb@{INFLUXDB_NODES_VERSION} "
          f"into {cache} …", file=sys.stderr, flush=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", f"node-red@{NODE_RED_VERSION}",
                    f"node-red-contrib-influxdb@{INFLUXDB_NODES_VERSION}"], cwd=cache, check=True)
    return red


class Consumer(abc.ABC):
    """A consumer process: started (and restarted after a kill) with the same state directory."""

    label = "consumer"

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The command line (without the taskset prefix)."""

    @abc.abstractmethod
    def ready(self) -> bool:
        """True once the consumer is subscribed (its session then keeps everything for it)."""

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        """Where the process's output goes (appended across restarts)."""
        return self.workdir / "consumer.log"

    def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until it is subscribed."""
        self.starts += 1
        self._log = open(self.log_path, "ab")  # noqa: SIM115 — closed in _reap()
        self.proc = subprocess.Popen(pin(self.command()), cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} not subscribed after {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no chance to flush, ack or close anything."""
        assert self.proc is not None
        self.proc.kill()
        self._reap()

    def stop(self) -> None:
        """Clean stop (SIGTERM)."""
        if self.proc is None or self.proc.poll() is not None:
            self._reap()
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _connected_count(path: Path, marker: str) -> int:
    try:
        return path.read_text(errors="replace").count(marker)
    except FileNotFoundError:
        return 0


class NodeRed(Consumer):
    """Node-RED 4.1: mqtt in (QoS 1) → json → join 1,000 msgs / 1 s → function → influx batch (v1, ms)."""

    label = "Node-RED"

    def __init__(self, workdir: Path, red_js: Path, broker_port: int, influx_port: int, db: str,
                 topic: str) -> None:
        super().__init__(workdir)
        self.red_js = red_js
        user_dir = workdir / "node-red"
        user_dir.mkdir(exist_ok=True)
        self.user_dir = user_dir
        (user_dir / "settings.js").write_text(
            "module.exports = {\n"
            f"  uiPort: {_free_port()}, uiHost: '127.0.0.1', flowFile: 'flows.json',\n"
            "  httpAdminRoot: false, httpNodeRoot: false, credentialSecret: false,\n"
            "  logging: {console: {level: 'info', metrics: false, audit: false}},\n"
            "  diagnostics: {enabled: false}, runtimeState: {enabled: false}, telemetry: {enabled: false},\n"
            "  externalModules: {autoInstall: false}, functionExternalModules: false,\n"
            "};\n")
        # The function node writes citygw's schema; the bench's event times are whole milliseconds.
        func = ("const points = [];\n"
                "for (const m of msg.payload) {\n"
                "  const t = Math.round(m.ts / 1e6);\n"
                "  for (const q in m.values) {\n"
                "    points.push({measurement: 'reading', tags: {device_id: m.device_id, quantity: q},\n"
                "                 fields: {value: m.values[q]}, timestamp: t});\n"
                "  }\n"
                "}\n"
                "msg.payload = points;\n"
                "return msg;\n")
        flow = [
            {"id": "tab1", "type": "tab", "label": "bench"},
            {"id": "broker1", "type": "mqtt-broker", "name": "", "broker": "127.0.0.1", "port": str(broker_port),
             "clientid": f"nodered-{db}", "autoConnect": True, "usetls": False, "protocolVersion": "4",
             "keepalive": "60", "cleansession": False, "autoUnsubscribe": False},
            {"id": "influx1", "type": "influxdb", "hostname": "127.0.0.1", "port": str(influx_port),
             "protocol": "http", "database": db, "name": "", "usetls": False, "tls": "",
             "influxdbVersion": "1.x"},
            {"id": "in1", "type": "mqtt in", "z": "tab1", "name": "", "topic": topic, "qos": "1",
             "datatype": "utf8", "broker": "broker1", "nl": False, "rap": True, "rh": 0, "inputs": 0,
             "wires": [["json1"]]},
            {"id": "json1", "type": "json", "z": "tab1", "name": "", "property": "payload", "action": "obj",
             "pretty": False, "wires": [["join1"]]},
            {"id": "join1", "type": "join", "z": "tab1", "name": "", "mode": "custom", "build": "array",
             "property": "payload", "propertyType": "msg", "key": "topic", "joiner": "\\n",
             "joinerType": "str", "accumulate": False, "timeout": "1", "count": "1000",
             "reduceRight": False, "reduceExp": "", "reduceInit": "", "reduceInitType": "",
             "reduceFixup": "", "useparts": False, "wires": [["func1"]]},
            {"id": "func1", "type": "function", "z": "tab1", "name": "to points", "func": func, "outputs": 1,
             "timeout": 0, "noerr": 0, "initialize": "", "finalize": "", "libs": [], "wires": [["batch1"]]},
            {"id": "batch1", "type": "influxdb batch", "z": "tab1", "influxdb": "influx1", "precision": "ms",
             "retentionPolicy": "", "name": "", "database": "", "precisionV18FluxV20": "ms",
             "retentionPolicyV18Flux": "", "org": "", "bucket": "", "wires": []},
        ]
        (user_dir / "flows.json").write_text(json.dumps(flow, indent=1))
        (user_dir / "flows_cred.json").write_text(json.dumps({"influx1": {"username": "", "password": ""}}))

    def command(self) -> list[str]:
        """node red.js with its own user directory (settings and flow)."""
        return ["node", str(self.red_js), "--userDir", str(self.user_dir), "--settings",
                str(self.user_dir / "settings.js")]

    def ready(self) -> bool:
        """Node-RED logs "Connected to broker" once per (re)start of its MQTT client."""
        return _connected_count(self.log_path, "Connected to broker") >= self.starts


class Naive(Consumer):
    """paho `on_message` → one urllib POST to influxd's /write per message (paho acks after the callback)."""

    label = "naive"

    def __init__(self, workdir: Path, broker_port: int, influx_url: str, db: str, topic: str) -> None:
        super().__init__(workdir)
        self.script = workdir / "naive.py"
        self.script.write_text(f"""
import sys, time, urllib.request, orjson, paho.mqtt.client as mqtt
url = "{influx_url}/write?db={db}&precision=ns"
def on_message(client, userdata, msg):
    doc = orjson.loads(msg.payload)
    lines = "\\n".join(f"reading,device_id={{doc['device_id']}},quantity={{q}} value={{float(v)}} {{doc['ts']}}"
                      for q, v in doc["values"].items())
    urllib.request.urlopen(urllib.request.Request(url, data=lines.encode(), method="POST")).read()
def on_connect(c, u, f, r, p):
    c.subscribe("{topic}", 1)
    print("subscribed", flush=True)
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="naive-{db}", clean_session=False)
c.on_message = on_message
c.on_connect = on_connect
c.connect("127.0.0.1", {broker_port})
c.loop_forever()
""")

    def command(self) -> list[str]:
        """The script above, with the venv's Python."""
        return [sys.executable, str(self.script)]

    def ready(self) -> bool:
        """The script prints "subscribed" in on_connect (a second after, the SUBACK is in)."""
        return _connected_count(self.log_path, "subscribed") >= self.starts


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def node_available() -> bool:
    """True when node and npm are on PATH."""
    return shutil.which("node") is not None and shutil.which("npm") is not None


__all__ = ["PEERS_DIR", "Consumer", "Naive", "NodeRed", "install_node_red", "node_available", "pin"]
