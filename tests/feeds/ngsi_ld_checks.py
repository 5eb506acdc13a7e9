"""Offline third-party checks of NGSI-LD entities: Smart Data Models JSON Schemas (jsonschema + referencing) and
JSON-LD expansion (pyld) against the vendored contexts, with no network (../shared/reference/city-models)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
from pyld import jsonld
from referencing import Registry, Resource

from gateway.sinks.ngsi_ld_mapping import CITYGW_CONTEXT, CORE_CONTEXT, ENTITY_CONTEXTS, SDM_CONTEXT

__all__ = ["CITY_MODELS", "CORE_VOCAB", "expand", "key_values", "official_iri", "schema_errors", "vocab_fallbacks"]

CITY_MODELS = Path(__file__).resolve().parents[3] / "shared/reference/city-models"
SDM = CITY_MODELS / "smart-data-models"
CORE_VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
_SCHEMA_URLS = {
    "https://smart-data-models.github.io/data-models/common-schema.json": SDM / "common-schema.json",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/Environment-schema.json":
        SDM / "Environment-schema.json",
}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _context_files() -> dict[str, Path]:
    files = {CORE_CONTEXT: CITY_MODELS / "ngsi-ld/ngsi-ld-core-context-v1.8.jsonld"}
    for repos in ENTITY_CONTEXTS.values():
        for repo in repos:
            files[SDM_CONTEXT.format(repo)] = SDM / f"contexts/dataModel.{repo}.context.jsonld"
    return files


@cache
def _registry() -> Registry:  # type: ignore[type-arg]
    resources = [(url, Resource.from_contents(json.loads(path.read_text()))) for url, path in _SCHEMA_URLS.items()]
    return Registry().with_resources(resources)


def _format_checker() -> jsonschema.FormatChecker:
    # jsonschema checks `date-time` and `uri` only with optional packages; these two are RFC 3339 / RFC 3986 shaped.
    checker = jsonschema.FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def _date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if not _RFC3339.match(value):
            return False
        datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        return True

    @checker.checks("uri")
    def _uri(value: object) -> bool:
        return not isinstance(value, str) or (bool(urlsplit(value).scheme) and " " not in value)

    return checker


def _plain(attr: Mapping[str, Any]) -> Any:
    if attr.get("type") == "Relationship":
        return attr["object"]
    value = attr.get("value")
    if isinstance(value, dict) and value.get("@type") == "DateTime":
        return value["@value"]
    return value


def key_values(entity: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The key-values (simplified) forms of a normalized entity: one per instance of multi-attributes."""
    multi = {k: v for k, v in entity.items() if isinstance(v, list) and k != "@context"}
    variants = max((len(v) for v in multi.values()), default=1)
    for i in range(variants):
        doc: dict[str, Any] = {"id": entity["id"], "type": entity["type"]}
        for key, attr in entity.items():
            if key in ("id", "type", "@context"):
                continue
            doc[key] = _plain(attr[min(i, len(attr) - 1)] if isinstance(attr, list) else attr)
        yield doc


def schema_errors(entity: Mapping[str, Any]) -> list[str]:
    """Every violation of the entity type's official schema.json, over all key-values forms of the entity."""
    schema = json.loads((SDM / entity["type"] / "schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, registry=_registry(), format_checker=_format_checker())
    return [f"{entity['id']} {'/'.join(map(str, e.absolute_path))}: {e.message}"
            for doc in key_values(entity) for e in validator.iter_errors(doc)]


def _load(url: str, options: Any = None) -> dict[str, Any]:
    path = _context_files().get(url)
    if path is None:
        raise jsonld.JsonLdError(f"no vendored copy of {url} (tests never fetch)", "loading document failed")
    return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url,
            "document": json.loads(path.read_text(encoding="utf-8"))}


def expand(entity: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The entity expanded by pyld (JSON-LD 1.1) with the vendored contexts."""
    expanded: list[dict[str, Any]] = jsonld.expand(dict(entity), {"documentLoader": _load})
    return expanded


def vocab_fallbacks(entity: Mapping[str, Any]) -> list[str]:
    """Terms of the entity (attributes and sub-attributes) that only the core @vocab expands."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.startswith(CORE_VOCAB):
                    found.append(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(expand(entity))
    return found


def official_iri(entity_type: str, term: str) -> str | None:
    """What the entity type's own @context(s) (later ones winning), or citygw's, map `term` to."""
    if term in CITYGW_CONTEXT:
        return CITYGW_CONTEXT[term]
    iri = None
    for repo in ENTITY_CONTEXTS[entity_type]:
        ctx = json.loads((SDM / f"contexts/dataModel.{repo}.context.jsonld").read_text())["@context"]
        value = ctx.get(term)
        if isinstance(value, dict):
            value = value.get("@id")
        iri = value or iri
    return iri
