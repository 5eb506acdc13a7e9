"""`citygw tail`: a running gateway's readings and KPI points, live, through its status server (`/live`).

Server side (`LiveStream`): each `/live` client is followed from the journal, in its own status-server thread
with its own read-only connection, so the ingest thread's only work is one `notify()` per commit (none while
no client listens) and a slow client never slows ingest. The journal is the client's queue: a client more than
`max_behind` entries behind the journal's head skips to that bound; the skipped entries are counted
(`citygw_live_dropped_total`) and the client gets a line saying how many (`{"dropped": N}`). Entries trimmed
before a slow client read them are counted the same way. The kernel's send buffer per client is small and
fixed, so the bound is ours, not the socket's autotuning.

Why the status server rather than the MQTT raw feed: it runs on every kit (no broker, no `feed.raw` needed),
it already has the token a technician uses for the status page, and it shows every journaled reading (the raw
feed reports by exception, with a deadband). From another machine, `citygw watch --raw` reads the feed.

Client side (`tail`): one HTTP GET, newline-delimited JSON back, one printed line per entry.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.fieldcmds import JournalReader
from gateway.journal import KIND_KPI, KIND_READING

__all__ = ["LiveFilter", "LiveStream", "TailError", "format_entry", "status_url", "tail"]

log = logging.getLogger("citygw.live")

SEND_BUFFER = 32 * 1024  # bytes of kernel send buffer per client (setting it also stops autotuning to MBs)
BATCH = 200  # journal rows read per round


@dataclass(frozen=True, slots=True)
class LiveFilter:
    """What one client asked for: `/live?device=ID&quantity=Q&kpis=0&last=N`."""

    device: str | None = None
    quantity: str | None = None
    kpis: bool = True
    last: int = 0

    @classmethod
    def parse(cls, query: str) -> LiveFilter:
        """From a URL query string (unknown parameters are ignored)."""
        q = {k: v[-1] for k, v in parse_qs(query).items()}
        last = q.get("last", "0")
        return cls(q.get("device") or None, q.get("quantity") or None, q.get("kpis", "1") != "0",
                   min(int(last), 1000) if last.isdigit() else 0)

    def query(self) -> str:
        """The URL query string of this filter."""
        params = {"device": self.device, "quantity": self.quantity, "kpis": None if self.kpis else "0",
                  "last": str(self.last) if self.last else None}
        return urlencode({k: v for k, v in params.items() if v is not None})

    def wants(self, row: tuple[Any, ...]) -> bool:
        """Whether a journal row passes the filter."""
        return ((self.device is None or row[3] == self.device) and (self.quantity is None or row[4] == self.quantity)
                and (self.kpis or row[1] == KIND_READING))


def entry_json(row: tuple[Any, ...]) -> bytes:
    """One journal row as one NDJSON line."""
    seq, kind, ts, device_id, quantity, unit, value, tags, quality, extra = row
    item: dict[str, Any] = {"seq": seq, "type": "kpi" if kind == KIND_KPI else "reading", "ts": ts,
                            "device": device_id, "quantity": quantity, "value": value, "unit": unit}
    if tags and tags != "{}":
        item["tags"] = orjson.loads(tags)
    if kind == KIND_KPI:
        x = orjson.loads(extra) if extra else {}
        item["window"], item["valid"] = x.get("window"), x.get("valid", True)
    elif quality != "good":
        item["quality"] = quality
    return orjson.dumps(item) + b"\n"


class LiveStream:
    """Follows the journal for each `/live` client of the status server."""

    def __init__(self, journal_path: Path, registry: CollectorRegistry, max_behind: int = 1000,
                 max_clients: int = 4, heartbeat_s: float = 15.0) -> None:
        self.journal_path = journal_path
        self.max_behind = max_behind
        self.max_clients = max_clients
        self.heartbeat_s = heartbeat_s
        self.dropped = Counter("citygw_live_dropped", "Journal entries a `citygw tail` client was too far behind "
                               "to receive (skipped for it; still in the journal)", registry=registry)
        self.clients_gauge = Gauge("citygw_live_clients", "Clients following /live (citygw tail)",
                                   registry=registry)
        self._changed = threading.Condition()
        self._generation = 0
        self._clients = 0
        self._closed = False

    def notify(self) -> None:
        """The journal has new entries (called after every commit; nearly free while nobody follows)."""
        if self._clients:
            with self._changed:
                self._generation += 1
                self._changed.notify_all()

    def close(self) -> None:
        """End every client's stream (the gateway stops)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def admit(self) -> bool:
        """Count a new client in, unless there are `max_clients` already or the stream is closed."""
        with self._changed:
            if self._closed or self._clients >= self.max_clients:
                return False
            self._clients += 1
        self.clients_gauge.inc()
        return True

    def serve(self, wanted: LiveFilter, write: Callable[[bytes], Any],
              gone: Callable[[], bool] = lambda: False) -> None:
        """Stream to an admitted client until it goes away (`gone()`, or an OSError from `write`) or the stream
        closes."""
        try:
            reader = JournalReader(self.journal_path)
            try:
                self._follow(reader, wanted, write, gone)
            finally:
                reader.close()
        finally:
            with self._changed:
                self._clients -= 1
            self.clients_gauge.dec()

    def _follow(self, reader: JournalReader, wanted: LiveFilter, write: Callable[[bytes], Any],
                gone: Callable[[], bool]) -> None:
        pos = reader.last_seq()
        write(orjson.dumps({"following": pos, "max_behind": self.max_behind}) + b"\n")
        if wanted.last:
            # Only the last 10,000 entries are searched: the journal has no index on device or quantity.
            recent = reader.span(max(0, pos - 10_000), pos, 10_000, newest_first=True)
            rows = [r for r in recent if wanted.wants(r)][:wanted.last]
            write(b"".join(entry_json(r) for r in reversed(rows)))
        generation, more = -1, False
        last_write = time.monotonic()
        while True:
            with self._changed:
                if not more and generation == self._generation:
                    self._changed.wait(max(0.1, self.heartbeat_s - (time.monotonic() - last_write)))
                if self._closed:
                    return
                generation = self._generation
            if gone():
                return  # a client that hung up is neither counted nor sent to
            head = reader.last_seq()
            if head - pos > self.max_behind:
                self._drop(head - self.max_behind - pos, write)
                pos = head - self.max_behind
            rows = reader.span(pos, head, BATCH)
            first = rows[0][0] if rows else head + 1
            if first > pos + 1:
                self._drop(first - pos - 1, write)  # trimmed (or dropped at the disk cap) before we read them
            lines = b"".join(entry_json(r) for r in rows if wanted.wants(r))
            if lines:
                write(lines)
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= self.heartbeat_s:
                write(b"{}\n")  # a heartbeat: finds a client that went away while nothing new matched
                last_write = time.monotonic()
            pos = rows[-1][0] if rows else head
            more = pos < head  # a full batch: go round again without waiting

    def _drop(self, n: int, write: Callable[[bytes], Any]) -> None:
        self.dropped.inc(n)
        write(orjson.dumps({"dropped": n}) + b"\n")


# -- the client: citygw tail ----------------------------------------------------------------------------------


class TailError(Exception):
    """`citygw tail` cannot follow the gateway; the message says why and what to do."""


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_entry(item: dict[str, Any]) -> str:
    """One printed line for a reading or KPI point of the stream."""
    tags = " ".join(f"{k}={v}" for k, v in (item.get("tags") or {}).items())
    head = f"{_iso(item['ts'])}  {item['device']:<16}"
    if item["type"] == "kpi":
        flag = "" if item.get("valid", True) else " (incomplete window)"
        return f"{head} KPI {item['quantity']} [{item.get('window', '?')}] = {item['value']:g} {item['unit']}{flag}"
    quality = f" ({item['quality']})" if item.get("quality") else ""
    return f"{head} {item['quantity']} = {item['value']:g} {item['unit']}{quality}{'  ' + tags if tags else ''}"


def status_url(listen: str) -> str:
    """The URL at which this machine reaches a status server that listens on `listen` (HOST:PORT)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


class _Stream:
    """One `/live` response read from a plain socket: resumable timeouts, and closing it ends a blocked read."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise TailError(f"{url}: the status server speaks plain http://HOST:PORT")
        self.url = url
        try:
            self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=30)
        except OSError as exc:
            raise TailError(f"no gateway answers at {url}: {exc.strerror or exc} (is it running? systemctl status"
                            " citygw; does gateway.status_listen say this address? else pass --url)") from None
        self.buf = bytearray()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            self.sock.sendall(f"GET {target} HTTP/1.0\r\nHost: {parts.netloc}\r\n{auth}\r\n".encode())
            while b"\r\n\r\n" not in self.buf and self._fill():
                pass
        except OSError as exc:
            self.close()
            raise TailError(f"{url}: {exc}") from None
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf[:] = rest
        status = head.split(b" ", 2)
        code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
        if code != 200:
            while len(self.buf) < 65536 and self._fill():
                pass
            self.close()
            raise TailError(self._refusal(code, bytes(self.buf).decode(errors="replace").strip(), bool(token)))

    def _refusal(self, code: int, text: str, token_sent: bool) -> str:
        if code == 401:
            return (f"{self.url}: the status server refused the token ({'wrong' if token_sent else 'none sent'}):"
                    " tail sends the secret of gateway.status_token_env / status_token_file of the config (run as a"
                    " user who can read it, e.g. sudo -u citygw)")
        if code == 404:
            return f"{self.url}: 404, this status server has no live stream (a citygw older than this one?)"
        return f"{self.url}: HTTP {code or '(no answer)'}: {text}"

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def line(self, timeout: float | None) -> bytes | None:
        """The next line; None when the stream ended; TimeoutError after `timeout` seconds without one."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            if not self._fill():
                return None
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf[:] = rest
        return line

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


def tail(base_url: str, token: str, wanted: LiveFilter, duration: float | None = None, count: int | None = None,
         out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the gateway's entries as it journals them, until `duration`, `count` entries, Ctrl-C or its stop."""
    out, err = out or sys.stdout, err or sys.stderr
    query = wanted.query()
    stream = _Stream(f"{base_url.rstrip('/')}/live" + (f"?{query}" if query else ""), token)
    deadline = time.monotonic() + duration if duration else None
    shown = 0
    try:
        while count is None or shown < count:
            # The gateway sends a heartbeat every 15 s: a minute without a line is a gateway gone silent.
            wait = 60.0 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            try:
                line = stream.line(min(wait, 60.0))
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                print(f"{stream.url}: nothing, not even a heartbeat, for a minute: giving up", file=err)
                return 1
            if line is None:
                print("the gateway ended the stream (it stopped?)", file=err)
                return 1
            item = orjson.loads(line)
            if "ts" in item:
                print(format_entry(item), file=out, flush=True)
                shown += 1
            elif "dropped" in item:
                print(f"… dropped {item['dropped']} entries: this tail fell too far behind the gateway (they are in"
                      " the journal: citygw export)", file=err, flush=True)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"{stream.url}: {exc}", file=err)
        return 1
    finally:
        stream.close()
    return 0
