"""Bearer-token authentication for the test server (django-ninja's HttpBearer), token from STA_BEARER_TOKEN."""

from __future__ import annotations

import hmac
import os

from django.http import HttpRequest
from ninja.security import HttpBearer


class BearerToken(HttpBearer):
    """Accept only the token the test configured."""

    def authenticate(self, request: HttpRequest, token: str) -> str | None:
        """The token itself when it matches, else None (django-ninja answers 401)."""
        expected = os.environ.get("STA_BEARER_TOKEN", "")
        return token if expected and hmac.compare_digest(token, expected) else None


bearer = BearerToken()  # settings name this instance (django-ogc-sensorthings calls what the path names)
