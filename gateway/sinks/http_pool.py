"""The HTTP connection every HTTP sink writes through: urllib3, kept alive, TLS with a CA file, the env's proxy.

urllib3 rather than urllib.request: it keeps the connection open between writes (urllib opens one per
request: a name lookup, a TCP connect and, over TLS, a handshake each time) and notices a connection the server
closed before reusing it. Its retries are off: retry, backoff and splitting live once, in the core's Delivery.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import urllib3

__all__ = ["http_pool"]


def http_pool(url: str, ca_file: Path | None = None, verify_tls: bool = True) -> urllib3.PoolManager:
    """One kept-alive connection to the server of `url`, through the proxy `http(s)_proxy` names for it unless
    `no_proxy` exempts it (as curl and urllib do)."""
    tls: dict[str, Any] = {}
    if ca_file is not None:
        tls["ca_certs"] = str(ca_file)
    if not verify_tls:
        tls["cert_reqs"] = "CERT_NONE"
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy, num_pools=1, maxsize=1, retries=False, **tls)
    return urllib3.PoolManager(num_pools=1, maxsize=1, retries=False, **tls)
