"""Building a paho-mqtt client from connection options: protocol, persistent session, TLS, auth, reconnect."""

from __future__ import annotations

import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["MqttOptions", "build_client", "connect_failure_message", "connect_properties", "set_nodelay"]


@dataclass(frozen=True, slots=True)
class MqttOptions:
    """How to reach the broker (secrets already resolved; never logged)."""

    host: str
    port: int = 1883
    client_id: str = ""
    username: str = ""
    password: str = ""
    protocol: str = "3.1.1"  # "3.1.1" or "5"
    keepalive: int = 30
    session_expiry_s: float = 7 * 86400.0
    reconnect_max_s: float = 60.0
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls: bool = False
    insecure_skip_verify: bool = False

    def __repr__(self) -> str:  # never show the password
        return f"MqttOptions(host={self.host!r}, port={self.port}, client_id={self.client_id!r}, tls={self.tls})"


def build_client(opts: MqttOptions, manual_ack: bool = False) -> mqtt.Client:
    """A configured (not yet connected) paho client."""
    v5 = opts.protocol == "5"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=opts.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        # 3.1.1: a persistent session keeps QoS 1 messages for us; it needs a client id to be found again.
        clean_session=None if v5 else not opts.client_id,
        manual_ack=manual_ack,
    )
    if opts.username:
        client.username_pw_set(opts.username, opts.password or None)
    if opts.tls or opts.ca_file:
        client.tls_set(
            ca_certs=str(opts.ca_file) if opts.ca_file else None,
            certfile=str(opts.cert_file) if opts.cert_file else None,
            keyfile=str(opts.key_file) if opts.key_file else None,
            cert_reqs=ssl.CERT_NONE if opts.insecure_skip_verify else ssl.CERT_REQUIRED,
        )
        if opts.insecure_skip_verify:
            client.tls_insecure_set(True)
    client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(opts.reconnect_max_s)))
    # paho walks every in-flight message on each PUBACK (Client._update_inflight): 1,000 in flight made a feed of
    # 100,000 KPI points cost ~10 s of CPU in acknowledgements alone. 100 keeps a LAN broker busy all the same.
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(100_000)
    return client


def connect_failure_message(role: str, opts: MqttOptions, exc: BaseException | None) -> str:
    """What a failed TCP/TLS connect means and how to fix it (logged once per outage, not per retry)."""
    why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else (str(exc) if exc else "unknown error")
    hint = "check mqtt.host and mqtt.port in the config, that the broker runs and that a firewall lets us through"
    if isinstance(exc, ssl.SSLError):
        hint = "check mqtt.tls (ca_file, client certificate) and that the port speaks TLS"
    elif isinstance(exc, socket.gaierror):
        hint = "the host name does not resolve: check mqtt.host and the kit's DNS"
    return (f"{role}: cannot connect to MQTT broker {opts.host}:{opts.port}: {why}. Fix: {hint}. "
            f"Retrying every {opts.reconnect_max_s:.0f} s at most; the next line about it says when it connects")


def connect_properties(opts: MqttOptions) -> Any:
    """MQTT 5 CONNECT properties: a session that outlives disconnects (None for 3.1.1)."""
    if opts.protocol != "5":
        return None
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = int(opts.session_expiry_s)
    props.ReceiveMaximum = 1000
    return props


def set_nodelay(client: mqtt.Client) -> None:
    """Turn Nagle's algorithm off on the client's socket (call from on_connect).

    paho leaves it on; small packets (PUBACKs, feed publishes) then wait for the peer's delayed ACK,
    which adds ~40 ms stalls to every exchange (docs/performance.md).
    """
    sock = client.socket()
    if isinstance(sock, socket.socket):  # also ssl.SSLSocket
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
