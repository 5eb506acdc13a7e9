"""The fleet as a web page (`citygw fleet --listen ADDR`): server-rendered HTML, no script, no CDN.

The page reloads itself every few seconds (a meta refresh): a technician's phone on a city network may have no
internet, and the fleet view must work without it. `/fleet.json` serves the same document as `--json`.
"""

from __future__ import annotations

import html
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from gateway.fleet_book import FleetBook, KitRow, ago, backlog_text, devices_text, kpi_time

__all__ = ["FleetPageServer", "parse_listen", "render_page"]

REFRESH_S = 2

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0.8em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .3em}
p.summary{margin:.2em 0 .8em}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{text-align:left;padding:.35em .4em;border-bottom:1px solid #ddd;vertical-align:top}
th{background:#eee}
.offline{background:#fde2e1}
.unhealthy{background:#fff4d6}
.state-online{color:#17692b;font-weight:600}
.state-offline{color:#b3261e;font-weight:600}
ul.reasons{margin:0;padding-left:1.1em}
.muted{color:#777}
td{overflow-wrap:anywhere}
@media (max-width:700px){
 thead{display:none}
 tr{display:block;border-bottom:2px solid #ccc;padding:.3em 0}
 td{display:block;border:none;padding:.1em .4em}
 td::before{content:attr(data-label) ": ";font-weight:600;color:#555}
 td.gateway::before{content:""}
}
"""


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (or [IPv6]:PORT) → (host, port); ValueError saying what is wrong."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"--listen {text!r}: give HOST:PORT, e.g. 127.0.0.1:8088 (port 0 picks a free one)")
    return host, int(port_text)


def _row_html(r: KitRow, now: float) -> str:
    cls = "offline" if r.state == "offline" else "unhealthy" if r.healthy is False else ""
    since = f' <span class="muted">{ago(now - r.state_since)}</span>' if r.state_since else ""
    if r.healthy is None:
        health = '<span class="muted">-</span>'
    elif r.healthy:
        health = "ok"
    else:
        health = '<ul class="reasons">' + "".join(f"<li>{html.escape(x)}</li>" for x in r.reasons) + "</ul>"
    kpi_age = f' <span class="muted">({ago(now - r.last_kpi_at)} ago)</span>' if r.last_kpi_at else ""
    cells = [
        f'<td class="gateway">{html.escape(r.gateway)}<br><span class="muted">{html.escape(r.prefix)}'
        f'{" · citygw " + html.escape(r.version) if r.version else ""}</span></td>',
        f'<td class="state" data-label="state"><span class="state-{html.escape(r.state)}">'
        f'{html.escape(r.state)}</span>{since}</td>',
        f'<td class="health" data-label="health">{health}</td>',
        f'<td class="devices" data-label="devices">{html.escape(devices_text(r))}</td>',
        f'<td class="backlog" data-label="backlog">{html.escape(backlog_text(r))}</td>',
        f'<td class="kpi" data-label="last KPI">{html.escape(kpi_time(r))}{kpi_age}</td>',
    ]
    return f'<tr class="{cls}" data-gateway="{html.escape(r.gateway, quote=True)}" ' \
           f'data-state="{html.escape(r.state)}">{"".join(cells)}</tr>'


def render_page(book: FleetBook, broker: str, now: float | None = None) -> str:
    """The whole page for the book's current rows."""
    at = time.time() if now is None else now
    rows = book.rows()
    online = sum(r.state == "online" for r in rows)
    unhealthy = sum(r.healthy is False for r in rows)
    body = "".join(_row_html(r, at) for r in rows) or '<tr><td colspan="6">no kit has published yet</td></tr>'
    connection = "" if book.connected else ' <strong class="state-offline">not connected to the broker</strong>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_S}">
<title>citygw fleet ({online}/{len(rows)} online)</title>
<style>{_STYLE}</style></head>
<body>
<h1>citygw fleet</h1>
<p class="summary" id="summary">{len(rows)} kit(s): {online} online, {len(rows) - online} not online,
{unhealthy} unhealthy · broker {html.escape(broker)}{connection}</p>
<table id="fleet"><thead><tr><th>gateway</th><th>state</th><th>health</th><th>devices</th><th>backlog</th>
<th>last KPI window end (UTC)</th></tr></thead>
<tbody>{body}</tbody></table>
<p class="muted">Updated {time.strftime("%H:%M:%S", time.gmtime(at))} UTC; reloads every {REFRESH_S} s.
Offline: the kit's last will, sent by the broker once its keepalive &times; 1.5 passed without a word.</p>
</body></html>
"""


class FleetPageServer:
    """A small threaded HTTP server for `/` (the page) and `/fleet.json`, stopped with the command."""

    def __init__(self, listen: str, book: FleetBook, broker: str) -> None:
        host, port = parse_listen(listen)
        self.book = book
        self.broker = broker
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._send(200, render_page(server.book, server.broker).encode(), "text/html; charset=utf-8")
                elif path == "/fleet.json":
                    self._send(200, orjson.dumps(server.book.document()), "application/json")
                else:
                    self._send(404, b"not found: try / or /fleet.json\n", "text/plain; charset=utf-8")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the terminal shows the fleet table."""

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="citygw-fleet-page", daemon=True)

    @property
    def url(self) -> str:
        """Where the page is served."""
        host, port = self._httpd.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        host_text = f"[{name}]" if ":" in name else name
        return f"http://{host_text}:{port}/"

    def start(self) -> FleetPageServer:
        """Serve in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
