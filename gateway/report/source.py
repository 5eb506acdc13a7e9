"""Where `citygw report` reads KPI series: InfluxDB (InfluxQL /query), VictoriaMetrics (/api/v1/export) or the
local store's JSON lines. Every reader returns the same `KpiRow`s, so the figures never know the backend."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import urllib3

__all__ = ["REPORT_WINDOWS", "InfluxQLSource", "KpiRow", "LocalStoreSource", "Source", "SourceError",
           "VictoriaMetricsSource"]

S = 1_000_000_000
# The report is built from hourly and daily windows only: a year of 1-minute points would not fit a Pi.
REPORT_WINDOWS = ("1h", "1d")
_CORE_TAGS = frozenset(("device_id", "name", "window", "unit", "valid", "gateway", "db"))


class SourceError(Exception):
    """The KPI series could not be read; the message says from where and what to check."""


@dataclass(frozen=True, slots=True)
class KpiRow:
    """One KPI point as stored: series identity, window start (UTC ns), headline value, validity."""

    gateway: str
    device_id: str
    name: str
    window: str
    start_ns: int
    value: float
    unit: str
    valid: bool
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def site(self) -> str:
        """The device's site tag, or its id when it has none."""
        return self.tags.get("site") or self.device_id


class Source(Protocol):
    """A place KPI rows are read from."""

    description: str

    def rows(self, start_ns: int, end_ns: int) -> list[KpiRow]:
        """Every 1h and 1d KPI point whose window starts in [start_ns, end_ns)."""
        ...


def _row(tags: dict[str, str], start_ns: int, value: Any, default_gateway: str) -> KpiRow | None:
    if value is None or tags.get("window") not in REPORT_WINDOWS:
        return None
    extra = {k: v for k, v in tags.items() if k not in _CORE_TAGS and v != ""}
    return KpiRow(tags.get("gateway") or default_gateway, tags.get("device_id", ""), tags.get("name", ""),
                  tags["window"], int(start_ns), float(value), tags.get("unit", ""),
                  str(tags.get("valid", "true")).lower() != "false", extra)


def _get(http: urllib3.PoolManager, url: str, what: str, headers: dict[str, str] | None = None) -> bytes:
    try:
        response = http.request("GET", url, headers=headers, timeout=urllib3.Timeout(connect=5, read=120),
                                retries=urllib3.Retry(total=2, backoff_factor=0.5))
    except urllib3.exceptions.HTTPError as exc:
        raise SourceError(f"cannot reach {what} at {url.split('?')[0]}: {exc} (is the server running? check "
                          "[report] url)") from None
    if response.status != 200:
        body = response.data.decode(errors="replace")[:300]
        raise SourceError(f"{what} answered HTTP {response.status} at {url.split('?')[0]}: {body}")
    return bytes(response.data)


class InfluxQLSource:
    """InfluxDB 1.x (and 2.x's v1 compatibility API): `SELECT value FROM kpi … GROUP BY *` over /query."""

    def __init__(self, url: str, database: str, gateway: str, username: str = "", password: str = "") -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.gateway = gateway
        self.description = f"InfluxDB {self.url} database {database} (InfluxQL)"
        self._headers = urllib3.make_headers(basic_auth=f"{username}:{password}") if username else {}
        self._http = urllib3.PoolManager()

    def rows(self, start_ns: int, end_ns: int) -> list[KpiRow]:
        """Every 1h/1d KPI point starting in the range, a week per query (bounded replies)."""
        out: list[KpiRow] = []
        for t0, t1 in _chunks(start_ns, end_ns, 7 * 86400 * S):
            sql = (f"SELECT \"value\" FROM \"kpi\" WHERE time >= {t0} AND time < {t1} AND "
                   f"(\"window\" = '1h' OR \"window\" = '1d') GROUP BY *")
            query = urllib.parse.urlencode({"db": self.database, "q": sql, "epoch": "ns"})
            reply = json.loads(_get(self._http, f"{self.url}/query?{query}", "InfluxDB", self._headers))
            for result in reply.get("results", []):
                if "error" in result:
                    raise SourceError(f"InfluxDB {self.url} database {self.database}: {result['error']}")
                for series in result.get("series", []):
                    tags = series.get("tags") or {}
                    for ts, value in series.get("values", []):
                        row = _row(tags, ts, value, self.gateway)
                        if row is not None:
                            out.append(row)
        return out


class VictoriaMetricsSource:
    """VictoriaMetrics: the `kpi_value` series (written through its InfluxDB API) from /api/v1/export."""

    def __init__(self, url: str, gateway: str) -> None:
        self.url = url.rstrip("/")
        self.gateway = gateway
        self.description = f"VictoriaMetrics {self.url} (kpi_value series, /api/v1/export)"
        self._http = urllib3.PoolManager()

    def rows(self, start_ns: int, end_ns: int) -> list[KpiRow]:
        """Every 1h/1d KPI point starting in the range (VictoriaMetrics keeps milliseconds)."""
        params = urllib.parse.urlencode({
            "match[]": '{__name__="kpi_value",window=~"1h|1d"}',
            "start": f"{start_ns / S:.3f}", "end": f"{(end_ns - 1) / S:.3f}"})
        payload = _get(self._http, f"{self.url}/api/v1/export?{params}", "VictoriaMetrics")
        out: list[KpiRow] = []
        for line in payload.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            tags = {k: v for k, v in item["metric"].items() if k != "__name__"}
            for ts_ms, value in zip(item["timestamps"], item["values"], strict=True):
                ts = int(ts_ms) * 1_000_000
                if start_ns <= ts < end_ns:
                    row = _row(tags, ts, value, self.gateway)
                    if row is not None:
                        out.append(row)
        return _dedup(out)


class LocalStoreSource:
    """The local store's `kpi-YYYY-MM-DD.jsonl` files (UTC days)."""

    def __init__(self, directory: Path, gateway: str) -> None:
        self.directory = directory
        self.gateway = gateway
        self.description = f"local store {directory}"

    def rows(self, start_ns: int, end_ns: int) -> list[KpiRow]:
        """Every 1h/1d KPI point starting in the range; a line repeated after a crash counts once."""
        if not self.directory.is_dir():
            raise SourceError(f"local store {self.directory} does not exist (check [local_store] path or "
                              "[gateway] data_dir)")
        out: list[KpiRow] = []
        for path in self._files(start_ns, end_ns):
            with open(path, "rb") as fh:
                for line in fh:
                    doc = json.loads(line)
                    ts = int(doc["start"])
                    if not start_ns <= ts < end_ns:
                        continue
                    tags = {**(doc.get("tags") or {}), "device_id": doc["device_id"], "name": doc["name"],
                            "window": str(doc.get("window")), "unit": doc.get("unit", ""),
                            "valid": "true" if doc.get("valid", True) else "false"}
                    row = _row(tags, ts, doc.get("value"), self.gateway)
                    if row is not None:
                        out.append(row)
        return _dedup(out)

    def _files(self, start_ns: int, end_ns: int) -> Iterator[Path]:
        day = datetime.fromtimestamp(start_ns / S, UTC).date()
        last = datetime.fromtimestamp(end_ns / S, UTC).date()
        while day <= last:
            path = self.directory / f"kpi-{day.isoformat()}.jsonl"
            if path.exists():
                yield path
            day += timedelta(days=1)


def _chunks(start: int, end: int, step: int) -> Iterable[tuple[int, int]]:
    t = start
    while t < end:
        yield t, min(t + step, end)
        t += step


def _dedup(rows: list[KpiRow]) -> list[KpiRow]:
    """Keep the last copy of each series point (a store that does not overwrite may hold a resent one)."""
    last: dict[tuple[Any, ...], KpiRow] = {}
    for r in rows:
        last[(r.gateway, r.device_id, r.name, r.window, r.start_ns, tuple(sorted(r.tags.items())))] = r
    return list(last.values())
