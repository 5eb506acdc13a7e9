"""The status server: the page a technician opens on the kit (`/`), `/status.json`, `/metrics` and `/healthz`.

`/healthz` answers 200 `ok` or 503 with a JSON list of reasons. `/live` streams journaled readings and KPI
points as newline-delimited JSON for `citygw tail` (gateway/live_stream.py). With a token configured every
path needs it, as `Authorization: Bearer <token>` or HTTP basic auth with the token as password (any user
name), so a phone's browser can ask for it; a 401 says which. Without a token the server may only listen on
loopback (settings).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import select
import socket
import sqlite3
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.status_page import render_page

if TYPE_CHECKING:
    from gateway.live_stream import LiveStream

__all__ = ["StatusServer", "authorized"]

log = logging.getLogger("citygw.status")


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the token (Bearer, or basic auth's password)."""
    if not token:
        return True
    if not header:
        return False
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return hmac.compare_digest(credentials.encode(), token.encode())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(decoded.partition(":")[2].encode(), token.encode())
    return False


class StatusServer:
    """A small threaded HTTP server on the configured address (loopback by default)."""

    def __init__(self, listen: str, status: Callable[[], dict[str, Any]], registry: CollectorRegistry,
                 page: Callable[[], str] | None = None, health: Callable[[], list[str]] | None = None,
                 token: str = "", live: LiveStream | None = None) -> None:
        host, _, port = listen.rpartition(":")
        get_status = status
        get_page = page or (lambda: render_page(status(), {}))
        get_health = health or (lambda: [])

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not authorized(self.headers.get("Authorization"), token):
                    body = (b"401: this status page needs the token of gateway.status_token_env/status_token_file"
                            b" (Authorization: Bearer TOKEN, or basic auth with the token as password)\n")
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="citygw", charset="UTF-8"')
                    self._send_body(body, "text/plain; charset=utf-8")
                    return
                status_code = 200
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype = generate_latest(registry), CONTENT_TYPE_LATEST
                elif path == "/status.json":
                    body, ctype = orjson.dumps(get_status()), "application/json"
                elif path == "/healthz":
                    reasons = get_health()
                    if reasons:
                        status_code = 503
                        body, ctype = orjson.dumps({"healthy": False, "reasons": reasons}), "application/json"
                    else:
                        body, ctype = b"ok\n", "text/plain"
                elif path == "/live" and live is not None:
                    self._stream(live)
                    return
                elif path in ("/", "/index.html"):
                    body, ctype = get_page().encode(), "text/html; charset=utf-8"
                else:
                    self.send_error(404)
                    return
                self.send_response(status_code)
                self.send_header("Cache-Control", "no-store")
                self._send_body(body, ctype)

            def _stream(self, live: LiveStream) -> None:
                from gateway.live_stream import SEND_BUFFER, LiveFilter

                try:
                    wanted = LiveFilter.parse(self.path.partition("?")[2])
                except ValueError as exc:
                    self.send_response(400)
                    self._send_body(f"400: {exc}\n".encode(), "text/plain; charset=utf-8")
                    return
                if not live.admit():
                    self.send_response(503)
                    self._send_body(f"503: {live.max_clients} live clients already (or stopping)\n".encode(),
                                    "text/plain; charset=utf-8")
                    return
                # A small, fixed kernel buffer (the journal is the client's queue) and a client that stops
                # reading for a minute is let go.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
                self.connection.settimeout(60)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                try:
                    live.serve(wanted, self.wfile.write, self._hung_up)
                except (OSError, ValueError):
                    pass  # the client went away (or was too slow for a minute)
                except sqlite3.Error as exc:
                    log.warning("live stream ended: cannot read the journal: %s", exc)

            def _hung_up(self) -> bool:
                """Whether the client closed its end (readable at end of file)."""
                try:
                    readable, _, _ = select.select([self.connection], [], [], 0)
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
                except (OSError, ValueError):
                    return True

            def _send_body(self, body: bytes, ctype: str) -> None:
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("status: %s", format % args)

        self.server = ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)), Handler)
        self.server.daemon_threads = True
        bound_host, bound_port = self.server.server_address[:2]
        self.address = f"{bound_host!s}:{bound_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="citygw-status", daemon=True)
        self._live = live

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (and end the live streams)."""
        if self._live is not None:
            self._live.close()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
