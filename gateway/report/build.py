"""Build a report from a config: choose the source, compute the figures, write the files."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import orjson

from gateway.report.figures import Period, ReportData, ReportInputs, compute
from gateway.report.render import to_csv, to_html, to_json
from gateway.report.source import (
    InfluxQLSource,
    LocalStoreSource,
    Source,
    VictoriaMetricsSource,
)
from gateway.settings import ConfigError, ConfigProblem, Settings, read_secret

__all__ = ["ReportFiles", "build_report", "source_for", "write_report"]


def source_for(settings: Settings) -> Source:
    """Where this config's KPI series are read: the [report] table, else its first InfluxDB, else the store."""
    r = settings.report
    gateway = settings.gateway.id
    first = settings.influx[0] if settings.influx else None
    if r.source is None and first is not None and first.api == "v2":
        # The write API does not say what reads back: InfluxDB 2.x answers InfluxQL (v1 compatibility, with a
        # DBRP mapping), VictoriaMetrics its own export API.
        raise ConfigError([ConfigProblem("", 0, "report.source", 'the first [[influx]] uses api = "v2": set '
                                         '[report] source = "victoriametrics" (VictoriaMetrics) or source = '
                                         '"influxql" with database = "<DBRP name>" (InfluxDB 2.x)')])
    kind = r.source or ("influxql" if first is not None else "local_store")
    if kind == "local_store":
        return LocalStoreSource(settings.local_store.path or settings.gateway.data_dir / "store", gateway)
    url = r.url or (first.url if first is not None else "")
    if not url:
        raise ConfigError([ConfigProblem("", 0, "report.url", f"[report] source = {kind!r} needs a url")])
    if kind == "victoriametrics":
        return VictoriaMetricsSource(url, gateway)
    database = r.database or (first.database if first is not None else "")
    if not database:
        raise ConfigError([ConfigProblem("", 0, "report.database", "InfluxQL needs a database: set [report] "
                                         "database or [[influx]] database")])
    username = r.username or (first.username if first is not None and not r.url else "")
    password = (read_secret(r.password_env, r.password_file, "report.password") if r.username else
                read_secret(first.password_env, first.password_file, "influx.password")
                if first is not None and username else "")
    return InfluxQLSource(url, database, gateway, username, password)


def build_report(settings: Settings, start: date, end: date, source: Source | None = None) -> ReportData:
    """Read the period's KPI series and compute every figure."""
    r = settings.report
    period = Period(start, end, r.timezone or settings.gateway.timezone)
    inputs = ReportInputs(population=r.population or settings.kpis.population, inhabitants=dict(r.inhabitants),
                          street_km_total=r.street_km_total, street_km=dict(r.street_km),
                          data_capture=r.data_capture)
    src = source or source_for(settings)
    return compute(src.rows(period.start_ns, period.end_ns), period, inputs)


@dataclass(frozen=True)
class ReportFiles:
    """The files one report run wrote."""

    paths: dict[str, Path]


def write_report(data: ReportData, out_dir: Path, formats: tuple[str, ...], source: str, title: str,
                 generated: datetime) -> ReportFiles:
    """Write the chosen formats as u4ssc-<from>-<to>.<ext> into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"u4ssc-{data.period.start}-{data.period.end}"
    paths: dict[str, Path] = {}
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        if fmt == "html":
            path.write_text(to_html(data, generated, source, title), encoding="utf-8")
        elif fmt == "json":
            path.write_bytes(orjson.dumps(to_json(data, generated, source), option=orjson.OPT_INDENT_2))
        else:
            path.write_text(to_csv(data), encoding="utf-8")
        paths[fmt] = path
    return ReportFiles(paths)
