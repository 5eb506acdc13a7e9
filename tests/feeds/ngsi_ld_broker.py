"""A small real HTTP server standing in for an NGSI-LD broker's upsert endpoint in sink tests.

It records every request (headers and parsed body), forwards it to an upstream validating server (Prism) when
one is given and answers with the upstream's status, refuses chosen entity ids with a 207 multi-status the way
a broker does, and can be stopped and started again on the same port (an outage).
"""

from __future__ import annotations

import http.server
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.servers import HOST, free_port

__all__ = ["Captured", "CapturingBroker"]


@dataclass
class Captured:
    """One request the broker received."""

    path: str
    headers: dict[str, str]
    entities: list[dict[str, Any]]
    status: int


@dataclass
class CapturingBroker:
    """`url` is the base URL a sink is given; `requests` what arrived, in order."""

    upstream: str = ""  # base URL of a validating server the requests are forwarded to
    refuse: set[str] = field(default_factory=set)  # entity ids answered with a per-entity error (207)
    refuse_as: str = "BadRequestData"  # the ProblemDetails type of those errors
    port: int = field(default_factory=free_port)
    tls: tuple[str, str] | None = None  # (certificate, key) PEM files: serve HTTPS
    requests: list[Captured] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The base URL."""
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    def start(self) -> CapturingBroker:
        """Listen (again) on the same port."""
        broker = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, answer = broker._answer(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer((HOST, self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ngsi-ld-test-broker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused until start())."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def entities(self) -> list[dict[str, Any]]:
        """Every entity of every accepted request, in order."""
        with self._lock:
            return [e for r in self.requests if r.status in (200, 201, 204) for e in r.entities]

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        entities = orjson.loads(body) if body else []
        refused = [e["id"] for e in entities if isinstance(e, dict) and e.get("id") in self.refuse]
        if refused:
            errors = [{"entityId": i, "error": {"type": f"https://uri.etsi.org/ngsi-ld/errors/{self.refuse_as}",
                                                "title": "refused by the test broker", "status": 400}}
                      for i in refused]
            ok = [e["id"] for e in entities if e["id"] not in refused]
            status, answer = 207, orjson.dumps({"success": ok, "errors": errors})
        elif self.upstream:
            request = urllib.request.Request(self.upstream + path, data=body, method="POST", headers={
                k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")})
            try:
                with urllib.request.urlopen(request, timeout=60) as resp:
                    status, answer = resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                status, answer = exc.code, exc.read()
        else:
            status, answer = 201, orjson.dumps([e.get("id") for e in entities if isinstance(e, dict)])
        with self._lock:
            self.requests.append(Captured(path, headers, entities, status))
        return status, answer
