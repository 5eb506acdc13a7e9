"""NGSI-LD sink: KPI windows as Smart Data Models entities, by batch upsert to an NGSI-LD broker.

`POST {url}/ngsi-ld/v1/entityOperations/upsert?options=update` with `application/ld+json` bodies (each entity
carries its @context), through urllib3 (gateway/sinks/http_pool.py: a kept-alive connection, TLS with a CA file,
the environment's proxy; its own retries off: retry, backoff, splitting and dead letters live once, in the
core's `Delivery`). A 207 multi-status naming refused entities splits the batch, so the core isolates and
dead-letters the refused window alone. The mapping is gateway/sinks/ngsi_ld_mapping.py; docs/feeds.md "NGSI-LD"
explains it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import urllib3

from gateway.journal import KIND_KPI, Entry
from gateway.sinks.base import Action, SinkError
from gateway.sinks.http_pool import http_pool
from gateway.sinks.influx import classify_status
from gateway.sinks.ngsi_ld_mapping import EntityMapper, request_rounds

if TYPE_CHECKING:
    from gateway.settings import NgsiLdSection, Settings

__all__ = ["UPSERT_PATH", "NgsiLdSink", "build_ngsi_ld_sinks", "ngsi_ld_sink_name"]

log = logging.getLogger("citygw.ngsi_ld")

UPSERT_PATH = "/ngsi-ld/v1/entityOperations/upsert?options=update"
# Per-entity errors of a 207 that a later attempt can cure: the broker's own trouble, not the entity's.
_TRANSIENT_ERRORS = ("LdContextNotAvailable", "InternalError", "TooManyRequests")


class NgsiLdSink:
    """Upserts the entities of each batch, one window per entity per request, oldest first."""

    only_kind: int | None = KIND_KPI

    def __init__(self, name: str, url: str, mapper: EntityMapper, tenant: str = "", token: str = "",
                 ca_file: Path | None = None, verify_tls: bool = True, batch_size: int = 100,
                 flush_interval_s: float = 1.0, timeout_s: float = 10.0) -> None:
        self.name = name
        self.mapper = mapper
        self.batch_size = batch_size  # read by the composition root for this sink's Delivery
        self.flush_interval_s = flush_interval_s
        self._url = url.rstrip("/") + UPSERT_PATH
        self._headers = {"Content-Type": "application/ld+json", "Accept": "application/json"}
        if tenant:
            self._headers["NGSILD-Tenant"] = tenant
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = urllib3.Timeout(total=timeout_s)
        self._http = http_pool(self._url, ca_file, verify_tls)
        self._unplaced: set[str] = set()
        self.requests = 0  # upsert requests that succeeded
        self.entities_sent = 0

    def body(self, entry: Entry) -> str:
        """The entity this entry becomes (kept in the dead-letter table when the broker refuses it)."""
        entities = self.mapper.entities([entry])
        return orjson.dumps(entities[0][0]).decode() if entities else ""

    def write(self, entries: Sequence[Entry]) -> None:
        """Upsert the batch's entities; raise a classified SinkError on failure."""
        skipped = self.mapper.skipped_values
        entities = self.mapper.entities(entries)
        if self.mapper.skipped_values > skipped:
            log.warning("sink %s: left out %d attribute value(s) that were not finite numbers (%d so far); the "
                        "KPI points stay in the journal and InfluxDB", self.name,
                        self.mapper.skipped_values - skipped, self.mapper.skipped_values)
        for entity, _seqs in entities:
            if "location" not in entity:
                self._warn_unplaced(entity)
        for batch in request_rounds(entities, self.batch_size):
            self._upsert(batch)

    def _warn_unplaced(self, entity: dict[str, Any]) -> None:
        device = str(entity["refDevice"]["object"])
        if device not in self._unplaced:
            self._unplaced.add(device)
            log.warning("sink %s: %s has no position, so %s goes out without `location` (the Smart Data Models "
                        "require one): set lat/lon on the device, [locations], or gateway.lat/lon", self.name,
                        device, entity["type"])

    def _upsert(self, batch: list[dict[str, Any]]) -> None:
        try:
            resp = self._http.request("POST", self._url, body=orjson.dumps(batch), headers=self._headers,
                                      timeout=self._timeout, retries=False)
        except urllib3.exceptions.HTTPError as exc:
            raise SinkError(Action.RETRY, f"cannot reach the NGSI-LD broker at {self._url.split('?')[0]}: "
                                          f"{exc}") from None
        status = resp.status
        text = resp.data.decode("utf-8", "replace")
        if status in (200, 201, 204):
            self.requests += 1
            self.entities_sent += len(batch)
            return
        if status == 207:
            raise _multi_status(text, len(batch))
        raise classify_status(status, text, resp.headers.get("Retry-After"))

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.clear()


def _multi_status(text: str, sent: int) -> SinkError:
    """A 207: some entities were refused. Split so the core isolates them (or retry the broker's own trouble)."""
    try:
        result = orjson.loads(text)
        errors = result.get("errors") or []
    except (orjson.JSONDecodeError, AttributeError):
        return SinkError(Action.RETRY, f"HTTP 207 with an unreadable body: {text[:200]!r}")
    if not errors:
        return SinkError(Action.RETRY, "HTTP 207 without errors: the broker did not confirm every entity")
    described = []
    transient = True
    for err in errors[:5]:
        problem = err.get("error") or {}
        kind = str(problem.get("type", "")).rsplit("/", 1)[-1]
        transient = transient and (kind in _TRANSIENT_ERRORS or int(problem.get("status") or 0) >= 500)
        text = " ".join(str(t) for t in (kind, problem.get("title"), problem.get("detail")) if t)
        described.append(f"{err.get('entityId')}: {text}")
    reason = f"the broker refused {len(errors)} of {sent} entities (HTTP 207): " + "; ".join(described)
    return SinkError(Action.RETRY if transient else Action.SPLIT, reason)


def ngsi_ld_sink_name(cfg: NgsiLdSection) -> str:
    """A stable cursor name for an NGSI-LD sink."""
    return cfg.name or f"ngsi-ld:{cfg.url.rstrip('/')}" + (f"/{cfg.tenant}" if cfg.tenant else "")


def build_ngsi_ld_sinks(settings: Settings) -> list[NgsiLdSink]:
    """One sink per [[ngsi_ld]] entry."""
    from gateway.settings import read_secret

    sinks = []
    for cfg in settings.ngsi_ld:
        def locate(device_id: str) -> tuple[float, float] | None:
            where = settings.device_location(device_id)
            return where.point if where is not None else None

        mapper = EntityMapper(settings.gateway.id, locate, cfg.entity_prefix, cfg.context, cfg.kpis, cfg.windows)
        sinks.append(NgsiLdSink(
            ngsi_ld_sink_name(cfg), cfg.url, mapper, tenant=cfg.tenant,
            token=read_secret(cfg.token_env, cfg.token_file, "ngsi_ld.token"), ca_file=cfg.ca_file,
            verify_tls=cfg.verify_tls, batch_size=cfg.batch_size, flush_interval_s=cfg.flush_interval,
            timeout_s=cfg.timeout))
    return sinks
