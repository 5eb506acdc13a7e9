"""Secure by default: TLS with passwords and client certificates, secrets only from env/files and never shown,
publishing only under the gateway's own prefix, decoders that never evaluate input.

The run test uses real servers: Mosquitto requiring TLS + a client certificate + a password; InfluxDB 1.x
serving HTTPS with authentication on (the gateway's v1 sink, password from a file); VictoriaMetrics behind
a TLS terminator for the v2 sink's token (influxd 1.6 has no token API). A second v1 sink has a wrong
password so that errors are shown too. Then every byte the gateway printed, /status.json, /metrics and the
HTML status page are scanned for every secret (and its Basic-auth base64 form), and every topic seen on
the broker under '#' is checked against the feed prefix.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from devices import json_mapping
from gateway.settings import ConfigError, load_settings
from tests.reliability.support import FaultProxy, GatewayProcess, StatusPage, wait_for
from tests.servers import MQTT_PASSWORD, MQTT_USER, InfluxError, InfluxV1, Mosquitto, VictoriaMetrics
from tests.tls import TlsFiles

S = 10**9
REPO = Path(__file__).resolve().parents[2]
INFLUX_USER = "gw-writer"
INFLUX_PASSWORD = "infl-pässwörd-7d41c2"
WRONG_PASSWORD = "wrong-pässwörd-93ab11"
V2_TOKEN = "tok-5b9e0c77a1f34e2d9c1f"
PREFIX = "city/kit-7"


class InfluxHttps(InfluxV1):
    """influxd 1.x serving HTTPS ([http] https-enabled) with the local CA's server certificate."""

    def __init__(self, workdir: Path, *, tls: TlsFiles, auth: tuple[str, str]) -> None:
        self.tls = tls
        super().__init__(workdir, auth=auth)
        self._ctx = ssl.create_default_context(cafile=str(tls.ca_cert))

    @property
    def url(self) -> str:
        """HTTPS base URL (the certificate is valid for 127.0.0.1)."""
        return f"https://{self.host}:{self.port}"

    def _prepare(self) -> None:
        super()._prepare()
        text = self.config_path.read_text()
        https = (f'  https-enabled = true\n  https-certificate = "{self.tls.server_cert}"\n'
                 f'  https-private-key = "{self.tls.server_key}"\n')
        self.config_path.write_text(text.replace("  flux-enabled = false\n", "  flux-enabled = false\n" + https))

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self._ctx) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def _ready(self) -> bool:
        try:
            return self._request("GET", "/ping")[0] == 204
        except OSError:
            return False

    def _query_raw(self, sql: str, db: str | None) -> dict[str, Any]:
        params = {"q": sql, "epoch": "ns", **({"db": db} if db else {})}
        status, payload = self._request("POST", "/query", urllib.parse.urlencode(params).encode(),
                                        {"Content-Type": "application/x-www-form-urlencoded", **self._headers()})
        if status != 200:
            raise InfluxError(f"query {sql!r} failed with HTTP {status}: {payload.decode(errors='replace')}")
        result: dict[str, Any] = json.loads(payload)
        for statement in result.get("results", []):
            if "error" in statement:
                raise InfluxError(f"query {sql!r} failed: {statement['error']}")
        return result


def _tls_client(tls: TlsFiles, client_id: str) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(tls.ca_cert), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
    client.username_pw_set(MQTT_USER, MQTT_PASSWORD)
    return client


def _secret_forms(secret: str, user: str = "") -> list[str]:
    forms = [secret, secret.encode().hex()]
    if user:
        forms.append(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return forms


def test_tls_auth_secrets_never_shown_and_topics_under_prefix(tmp_path: Path, tls_files: TlsFiles,
                                                              server_factory: Any,
                                                              victoria: VictoriaMetrics) -> None:
    broker: Mosquitto = server_factory(Mosquitto, tls=tls_files, require_certificate=True,
                                       users={MQTT_USER: MQTT_PASSWORD})
    influx = InfluxHttps(tmp_path / "influxd-https", tls=tls_files, auth=("admin", "admin-pw-1"))
    influx.start()
    # VictoriaMetrics does not check tokens: the TLS terminator in front of it does.
    proxy = FaultProxy(victoria.url, tls=(tls_files.server_cert, tls_files.server_key),
                       authorization=f"Token {V2_TOKEN}")
    seen: list[str] = []
    spy = _tls_client(tls_files, "security-spy")
    spy.on_connect = lambda c, u, f, r, p: c.subscribe("#", qos=1)
    spy.on_message = lambda c, u, m: seen.append(m.topic)
    gateway: GatewayProcess | None = None
    try:
        influx._query_raw(f"CREATE USER \"{INFLUX_USER}\" WITH PASSWORD '{INFLUX_PASSWORD}'", None)
        influx._query_raw(f'GRANT WRITE ON "{influx.database}" TO "{INFLUX_USER}"', None)
        spy.connect("127.0.0.1", broker.tls_port or 0)
        spy.loop_start()
        password_file = tmp_path / "influx-password"
        password_file.write_text(INFLUX_PASSWORD + "\n")
        password_file.chmod(0o600)
        status = StatusPage()
        config = tmp_path / "secure.toml"
        config.write_text(f"""
[gateway]
id = "secure"
data_dir = "{tmp_path / 'data'}"
status_listen = "{status.listen}"
log_level = "debug"

[mqtt]
host = "127.0.0.1"
port = {broker.tls_port}
username = "{MQTT_USER}"
password_env = "SEC_MQTT_PASSWORD"
tls = {{ ca_file = "{tls_files.ca_cert}", cert_file = "{tls_files.client_cert}", key_file = "{tls_files.client_key}" }}

[[mqtt.routes]]
topic = "sensors/+/json"
format = "json"
device_id = "{{1}}"

[mqtt.feed]
topic_prefix = "{PREFIX}"
raw = true

[aggregation]
windows = ["10s"]
grace = "1s"

[[influx]]
name = "influx-https"
api = "v1"
url = "{influx.url}"
database = "{influx.database}"
username = "{INFLUX_USER}"
password_file = "{password_file}"
ca_file = "{tls_files.ca_cert}"
flush_interval = "200ms"

[[influx]]
name = "influx-wrong-password"
api = "v1"
url = "{influx.url}"
database = "{influx.database}"
username = "{INFLUX_USER}"
password_env = "SEC_WRONG_PASSWORD"
ca_file = "{tls_files.ca_cert}"

[[influx]]
name = "v2-token"
api = "v2"
url = "{proxy.url}"
org = "city"
bucket = "secure"
token_env = "SEC_V2_TOKEN"
ca_file = "{tls_files.ca_cert}"
flush_interval = "200ms"
""")
        env = {"SEC_MQTT_PASSWORD": MQTT_PASSWORD, "SEC_WRONG_PASSWORD": WRONG_PASSWORD, "SEC_V2_TOKEN": V2_TOKEN}
        gateway = GatewayProcess(config, tmp_path / "gateway.log", env=env).start()
        wait_for(lambda: status.status().get("mqtt_connected"), 30, "the gateway on the TLS listener")
        base = (time.time_ns() - 3600 * S) // (10 * S) * (10 * S)
        devices = ["kerb-1", "../../evil/#", "+"]  # hostile device ids from the payload must stay one level
        pub = _tls_client(tls_files, "security-devices")
        pub.connect("127.0.0.1", broker.tls_port or 0)
        pub.loop_start()
        sent = []
        for i in range(25):
            for d in devices:
                topic = f"sensors/{'dev' if d != 'kerb-1' else d}/json"
                sent.append(topic)
                pub.publish(topic, json_mapping.encode(d, base + i * S, {"noise_laeq": 50.0 + i}), qos=1) \
                    .wait_for_publish(10)
        pub.loop_stop()
        pub.disconnect()

        def count() -> int:
            rows = influx.query("SELECT count(value) FROM reading")
            return int(rows[0]["count"]) if rows else 0

        wait_for(lambda: count() == 75, 30, "75 readings in InfluxDB over HTTPS with a password")
        wait_for(lambda: any("/kpi/" in t for t in seen), 30, "KPI points on the feed")
        wait_for(lambda: any(s["name"] == "influx-wrong-password" and "401" in s["last_error"]
                             for s in status.status()["sinks"]), 30, "the wrong password refused")
        wait_for(lambda: any(p[1].startswith("/api/v2/write") and p[2] == 204 for p in proxy.log), 30,
                 "a v2 write accepted with the token over TLS")
        assert all(p[2] != 401 for p in proxy.log)  # the token was right every time
        outputs = {"/status.json": status.get("/status.json").decode(), "/metrics": status.get("/metrics").decode(),
                   "/": status.get("/").decode()}
    finally:
        code = gateway.stop() if gateway is not None else 0
        spy.loop_stop()
        spy.disconnect()
        proxy.close()
        influx.close()
    assert gateway is not None
    outputs["log"] = gateway.log()
    assert code == 0, outputs["log"]
    for where, text in outputs.items():
        for secret, user in ((MQTT_PASSWORD, MQTT_USER), (INFLUX_PASSWORD, INFLUX_USER),
                             (WRONG_PASSWORD, INFLUX_USER), (V2_TOKEN, "")):
            for form in _secret_forms(secret, user):
                assert form not in text, f"a secret appears in {where}"
    # Every topic the gateway published is under its prefix (the rest are the test devices' own topics).
    ours = [t for t in seen if t not in set(sent)]
    assert ours and all(t.startswith(PREFIX + "/") for t in ours), sorted(set(ours))
    assert f"{PREFIX}/status" in ours
    assert any(t.startswith(f"{PREFIX}/reading/.._.._evil__/") for t in ours)  # one level, no wildcard
    assert all("#" not in t and "+" not in t for t in ours)


@pytest.mark.parametrize("prefix", ["#", "city/#", "city/+/kit", "$SYS/citygw", "+"])
def test_feed_prefix_outside_a_plain_topic_is_refused(tmp_path: Path, prefix: str) -> None:
    cfg = tmp_path / "kit.toml"
    cfg.write_text(f'[mqtt]\nhost = "127.0.0.1"\n[mqtt.feed]\ntopic_prefix = "{prefix}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    assert "topic_prefix" in str(info.value)


@pytest.mark.parametrize(("section", "key"), [("mqtt", "password"), ("influx", "token"), ("influx", "password")])
def test_secrets_written_in_the_config_file_are_refused_without_echoing_them(tmp_path: Path, section: str,
                                                                             key: str) -> None:
    secret = "plain-text-secret-4411"
    table = "[[influx]]\nurl = \"http://127.0.0.1:8086\"\nbucket = \"b\"\n" if section == "influx" else "[mqtt]\n"
    cfg = tmp_path / "kit.toml"
    cfg.write_text(f'{table}{key} = "{secret}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    text = str(info.value)
    assert f"{key}_env" in text and f"{key}_file" in text
    assert secret not in text


def test_missing_secret_reference_names_the_variable_not_a_value(tmp_path: Path) -> None:
    from gateway.settings import read_secret

    with pytest.raises(ConfigError) as info:
        read_secret("CITYGW_TEST_UNSET_SECRET_VAR", None, "mqtt.password")
    assert "CITYGW_TEST_UNSET_SECRET_VAR" in str(info.value)


FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile", "input"}
FORBIDDEN_ATTRS = {("pickle", "loads"), ("pickle", "load"), ("marshal", "loads"), ("yaml", "load"),
                   ("yaml", "unsafe_load"), ("os", "system"), ("subprocess", "run"), ("subprocess", "Popen"),
                   ("importlib", "import_module")}


def test_decoders_and_ingest_never_evaluate_input() -> None:
    """No decoder or transport module calls eval/exec/compile/pickle/yaml.load/import machinery or a shell."""
    offenders = []
    files = sorted((REPO / "devices").glob("*.py")) + sorted((REPO / "ingest").glob("*.py"))
    assert len(files) > 10
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
                    offenders.append(f"{path.name}:{node.lineno} {f.id}()")
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and \
                        (f.value.id, f.attr) in FORBIDDEN_ATTRS:
                    # The registry imports a module named in its own constant table (`module, _ = _WHERE[name]`:
                    # any other name is a KeyError, tests/devices/test_registry.py), never a name from input.
                    registry_lookup = path.name == "registry.py" and isinstance(node.args[0], ast.Name) \
                        and node.args[0].id == "module"
                    if not registry_lookup:
                        offenders.append(f"{path.name}:{node.lineno} {f.value.id}.{f.attr}()")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom)
                                                        and node.module else [])
                if any(n in ("pickle", "marshal", "yaml", "subprocess") for n in names):
                    offenders.append(f"{path.name}:{node.lineno} imports {names}")
    assert offenders == []


def test_python_in_a_payload_is_just_a_bad_value(tmp_path: Path) -> None:
    from devices.reading import DecodeContext, DecodeError
    from devices.registry import KINDS

    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path('{marker}').touch()"
    payloads = [code.encode(), json.dumps({"device_id": "x", "values": {"pm2_5": code}}).encode(),
                json.dumps({"device_id": code, "ts": code, "values": {code: 1}}).encode(),
                f"air,device={code} pm2_5={code} 1".encode()]
    threads_before = threading.active_count()
    for kind in KINDS.values():
        if kind.link != "mqtt":
            continue
        for p in payloads:
            with contextlib.suppress(DecodeError):
                kind.decode(p, DecodeContext(device_id="d", received_ns=1_767_225_600 * S, topic="t/x"))
    assert not marker.exists()
    assert threading.active_count() == threads_before
