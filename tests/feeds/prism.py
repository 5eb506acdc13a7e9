"""Stoplight Prism (`prism mock --errors`) validating NGSI-LD requests against the vendored ETSI OpenAPI.

Prism answers a request that breaks the spec with a 4xx and logs each violation, and one that keeps it with the
spec's own example response, so a sink pointed at it is checked request by request by a third-party validator.

Prism is given the upsert operation of `ngsi-ld-api-3.1.0.yaml` (ETSI GS CIM 009 V1.7.1) unchanged in content,
with five mechanical corrections, each needed for Prism to check the body at all or to accept a body the
standard allows (tests/feeds/test_ngsi_ld_prism.py proves that broken requests are still refused):

1. The operation's `$ref`s are inlined: Prism 5 silently skips body validation when a schema is reached by more
   than one reference (stoplightio/prism#2574; every NGSI-LD attribute refers to `Property`). Recursion is cut
   where a schema would contain itself, so the sub-attributes of an attribute (e.g. `windowValid`) are not
   checked by Prism; the JSON-LD and Smart Data Models checks of test_ngsi_ld.py still see them.
2. The ld+json media type is spelled `application/ld+json` (the file has `application/json+ld`), and it is the
   operation's only body: Prism validates an ld+json request against the first JSON-like media type, which would
   be the plain-JSON body without `@context`. So every request must be ld+json and carry `@context`.
3. `Entity` declares `@context` (as `LdContext`): otherwise the mandatory `@context` of an ld+json body falls
   under `Entity.additionalProperties`, which only admits attributes, and no ld+json entity could pass.
4. `Relationship` says `type: object`: without it any JSON array (multi-attribute instances with `datasetId`,
   clause 4.5.5) matches both "array of Property" and `Relationship`, and `oneOf` refuses it.
5. `Property.value` is `anyOf` rather than `oneOf` [DateTimeValue, AnyValue]: AnyValue is `{}`, so a DateTime
   written the way clause C.6 mandates (`{"@type": "DateTime", "@value": …}`) matches both and `oneOf` refuses it.
"""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.servers import HOST, Server

__all__ = ["ETSI_OPENAPI", "PRISM", "Prism", "derived_spec"]

ROOT = Path(__file__).resolve().parents[2]
PRISM = ROOT / ".tools/node/node_modules/.bin/prism"
ETSI_OPENAPI = ROOT.parent / "shared/reference/city-models/ngsi-ld/ngsi-ld-api-3.1.0.yaml"
BASE = "/ngsi-ld/v1"
OPERATIONS = ("/entityOperations/upsert",)


def _inline(spec: dict[str, Any], node: Any, stack: tuple[str, ...]) -> Any:
    """`node` with every `$ref` replaced by its target; a schema already open on the stack becomes `{}`."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name in stack:
                return {}
            target: Any = spec
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
            return _inline(spec, target, (*stack, name))
        return {k: _inline(spec, v, stack) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(spec, v, stack) for v in node]
    return node


def derived_spec(source: Path = ETSI_OPENAPI) -> dict[str, Any]:
    """The OpenAPI document Prism serves: the ETSI upsert operation, with the corrections in the module doc."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ten times faster on this 200 kB file
    spec = yaml.load(source.read_text(encoding="utf-8"), Loader=loader)  # a safe loader, C or Python
    schemas = spec["components"]["schemas"]
    schemas["Entity"] = copy.deepcopy(schemas["Entity"])
    schemas["Entity"].setdefault("properties", {})["@context"] = {"$ref": "#/components/schemas/LdContext"}
    schemas["Relationship"].setdefault("type", "object")
    value = schemas["Property"]["properties"]["value"]
    if "oneOf" in value:
        value["anyOf"] = value.pop("oneOf")
    paths: dict[str, Any] = {}
    for path in OPERATIONS:
        operation = _inline(spec, spec["paths"][path], ())
        for method in operation.values():
            content = method.get("requestBody", {}).get("content", {})
            if "application/json+ld" in content:
                # Only the ld+json body (the one the sink sends): Prism would otherwise validate an ld+json
                # request against the first JSON-like media type, the plain JSON one without @context.
                body = content.pop("application/json+ld")
                content.clear()
                content["application/ld+json"] = body
        paths[BASE + path] = operation
    return {"openapi": "3.0.3", "info": spec["info"], "paths": paths}


class Prism(Server):
    """`prism mock --errors` on the derived NGSI-LD spec; `url` is the broker base URL a sink is given."""

    name = "prism"
    binary = str(PRISM)
    package = "nodejs npm; then bash scripts/dev.sh test installs @stoplight/prism-cli 5.14.2 into .tools/node"

    def __init__(self, workdir: str | Path | None = None, *, startup_timeout: float = 90.0) -> None:
        super().__init__(workdir, startup_timeout=startup_timeout)
        self.spec_path = self.workdir / "ngsi-ld-upsert.json"

    @property
    def url(self) -> str:
        """The base URL (the sink appends /ngsi-ld/v1/...)."""
        return f"http://{self.host}:{self.port}"

    def _prepare(self) -> None:
        if not self.spec_path.exists():
            self.spec_path.write_text(json.dumps(derived_spec()), encoding="utf-8")

    def _command(self, executable: str) -> list[str]:
        return [executable, "mock", "--errors", "-h", HOST, "-p", str(self.port), str(self.spec_path)]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # Prism answers 404 for an unknown path: it is up
        except OSError:
            return False

    def violations(self) -> list[str]:
        """The request violations Prism logged so far (one line each)."""
        return [line for line in self.log_tail(100_000).splitlines() if "Violation:" in line]
