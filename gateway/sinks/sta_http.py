"""The HTTP side of the SensorThings sink: one `requests` session to the service root, with failures classified.

requests (on urllib3) gives a keep-alive connection pool, TLS with a CA file, and basic auth, which is all a
SensorThings client needs; FROST's own Python client (frost-sta-client, used by the tests to read back) is
built for interactive use, not for the batch-and-classify loop of a sink.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import requests

from gateway.sinks.base import Action, SinkError
from gateway.sinks.influx import classify_status

__all__ = ["StaHttp", "entity_path", "id_literal", "odata_string"]

_SELF_LINK = re.compile(r"\((?P<id>[^()]*)\)\s*$")


def id_literal(iot_id: Any) -> str:
    """An @iot.id as it goes into a resource path: numbers bare, strings quoted ('uuid')."""
    if isinstance(iot_id, int) and not isinstance(iot_id, bool):
        return str(iot_id)
    return "'" + str(iot_id).replace("'", "''") + "'"


def entity_path(entity_set: str, iot_id: Any) -> str:
    """`Datastreams('…')` / `Datastreams(5)`."""
    return f"{entity_set}({id_literal(iot_id)})"


def odata_string(text: str) -> str:
    """A string literal for $filter (single quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def _id_from_location(location: str) -> Any:
    """The id at the end of a self link such as `…/Things('abc')` or `…/Things(12)`."""
    m = _SELF_LINK.search(location)
    if m is None:
        raise SinkError(Action.RETRY, f"the server answered 201 without a usable Location header ({location!r})")
    raw = m.group("id")
    if raw.startswith("'") and raw.endswith("'"):
        return raw[1:-1].replace("''", "'")
    try:
        return int(raw)
    except ValueError:
        return raw


class StaHttp:
    """GET and POST against one SensorThings service root (e.g. http://host/FROST-Server/v1.1)."""

    def __init__(self, url: str, username: str = "", password: str = "", token: str = "",
                 ca_file: Path | None = None, verify_tls: bool = True, timeout_s: float = 10.0) -> None:
        self.root = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.headers["Content-Type"] = "application/json"
        if username:
            self.session.auth = (username, password)
        elif token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.verify = str(ca_file) if ca_file else verify_tls

    def _request(self, method: str, path: str, body: Any = None) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else f"{self.root}/{path}"
        data = orjson.dumps(body) if body is not None else None
        try:
            resp = self.session.request(method, url, data=data, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise SinkError(Action.RETRY, f"cannot reach the SensorThings server {self.root}: {exc}") from None
        if resp.status_code >= 400:
            err = classify_status(resp.status_code, resp.text, resp.headers.get("Retry-After"))
            err.reason = f"{method} {url.split('?')[0]}: {err.reason}"
            err.args = (err.reason,)
            raise err
        return resp

    def get(self, path: str, **query: str) -> dict[str, Any]:
        """GET a resource with OData query options ($filter=… as filter_=…); the decoded JSON object."""
        if query:
            path += "?" + "&".join(f"${k.rstrip('_')}={quote(v, safe='/,()')}" for k, v in query.items())
        data = self._request("GET", path).json()
        if not isinstance(data, dict):
            raise SinkError(Action.RETRY, f"GET {path}: expected a JSON object from the server")
        return data

    def get_all(self, path: str, **query: str) -> Iterator[dict[str, Any]]:
        """Every entity of a collection, following @iot.nextLink."""
        page = self.get(path, **query)
        while True:
            yield from page.get("value", [])
            link = page.get("@iot.nextLink")
            if not link:
                return
            page = self.get(str(link))

    def create(self, entity_set: str, body: dict[str, Any]) -> Any:
        """POST one entity; its @iot.id (from the Location header, or the answered entity)."""
        resp = self._request("POST", entity_set, body)
        location = resp.headers.get("Location")
        if location:
            return _id_from_location(location)
        try:
            return resp.json()["@iot.id"]
        except (ValueError, KeyError, TypeError):
            raise SinkError(Action.RETRY, f"POST {entity_set}: no Location header and no @iot.id") from None

    def post_json(self, path: str, body: Any) -> Any:
        """POST and return the decoded answer (CreateObservations answers a list of self links)."""
        return self._request("POST", path, body).json()

    def conformance(self) -> list[str]:
        """The service root's serverSettings.conformance (empty for a v1.0 server, which has none)."""
        settings = self.get("").get("serverSettings") or {}
        return [str(c) for c in settings.get("conformance", [])]

    def close(self) -> None:
        """Close the connection pool."""
        self.session.close()
