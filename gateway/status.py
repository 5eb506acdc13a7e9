"""The status page a technician opens on the kit (`/`), its JSON (`/status.json`), `/metrics` and `/healthz`."""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["StatusServer"]

log = logging.getLogger("citygw.status")


def _render(status: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(d['id'])}</td><td>{html.escape(d['kind'])}</td>"
        f"<td class={'ok' if d['available'] else 'bad'}>{'available' if d['available'] else 'unavailable'}</td>"
        f"<td>{d['readings']}</td><td>{d['rejected']}</td></tr>"
        for d in status["devices"]
    )
    sinks = "".join(
        f"<tr><td>{html.escape(s['name'])}</td><td>{s['delivered']}</td><td>{s['lag']}</td>"
        f"<td>{html.escape(s['last_error'] or '')}</td></tr>"
        for s in status["sinks"]
    )
    kpis = "".join(
        f"<tr><td>{html.escape(k['device_id'])}</td><td>{html.escape(k['name'])}</td><td>{k['window']}</td>"
        f"<td>{k['value']:.2f} {html.escape(k['unit'])}</td><td>{'' if k['valid'] else 'incomplete'}</td></tr>"
        for k in status["latest_kpis"]
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>citygw {html.escape(status['gateway'])}</title>
<meta http-equiv="refresh" content="5"><style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px}}
.ok{{color:green}}.bad{{color:#b00}}</style></head><body>
<h1>citygw · {html.escape(status['gateway'])}</h1>
<p>uptime {status['uptime_s']:.0f} s · MQTT {'connected' if status['mqtt_connected'] else 'not connected'}
· journal {status['journal_bytes'] / 1e6:.1f} MB · clock {html.escape(status['clock'])}</p>
<h2>Devices</h2><table><tr><th>device</th><th>kind</th><th>state</th><th>readings</th><th>rejected</th></tr>{rows}</table>
<h2>Sinks</h2><table><tr><th>sink</th><th>delivered</th><th>backlog</th><th>last error</th></tr>{sinks}</table>
<h2>Latest KPIs</h2><table><tr><th>device</th><th>KPI</th><th>window</th><th>value</th><th></th></tr>{kpis}</table>
</body></html>"""


class StatusServer:
    """A small threaded HTTP server on the configured address (loopback by default)."""

    def __init__(self, listen: str, status: Callable[[], dict[str, Any]], registry: CollectorRegistry) -> None:
        host, _, port = listen.rpartition(":")
        get_status = status

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, ctype = generate_latest(registry), CONTENT_TYPE_LATEST
                elif self.path == "/status.json":
                    body, ctype = orjson.dumps(get_status()), "application/json"
                elif self.path == "/healthz":
                    body, ctype = b"ok\n", "text/plain"
                elif self.path in ("/", "/index.html"):
                    body, ctype = _render(get_status()).encode(), "text/html; charset=utf-8"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("status: %s", format % args)

        self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self.server.daemon_threads = True
        bound_host, bound_port = self.server.server_address[:2]
        self.address = f"{bound_host!s}:{bound_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="citygw-status", daemon=True)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
