"""A real OGC SensorThings API v1.1 server for tests: django-ogc-sensorthings 1.2 on Django + SQLite.

The Django project is tests/feeds/sta_server/ (the package's apps, its DataArray extension, and the package's
ORM adapter with interval phenomenon times kept whole: see sta_server/adapter.py). It is served by Django's
own WSGI server (`manage.py runserver --noreload`: wsgiref with one thread per request) on a free loopback
port, with its SQLite database in the server's working directory, so `kill()`/`restart()` give a real
outage with the data kept.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import orjson

from tests.servers import Server, ServerError

__all__ = ["SensorThingsServer"]

PROJECT = Path(__file__).parent / "sta_server"


class SensorThingsServer(Server):
    """django-ogc-sensorthings on 127.0.0.1:`port`; the service root is `url` (…/sta/v1.1)."""

    name = "sensorthings"
    binary = sys.executable
    package: ClassVar[str] = "python3 (pip install -e '.[test]' brings django-ogc-sensorthings)"

    def __init__(self, workdir: str | Path | None = None, *, bearer_token: str = "",
                 startup_timeout: float = 60.0) -> None:
        super().__init__(workdir, startup_timeout=startup_timeout)
        self.bearer_token = bearer_token
        self.db_path = self.workdir / "sta.sqlite3"

    @property
    def url(self) -> str:
        """The service root, as a client configures it."""
        return f"http://{self.host}:{self.port}/sta/v1.1"

    def _env(self) -> list[str]:
        env = [f"STA_DB={self.db_path}", f"STA_SERVICE_URL=http://{self.host}:{self.port}/sta"]
        if self.bearer_token:
            env.append(f"STA_BEARER_TOKEN={self.bearer_token}")
        return env

    def _prepare(self) -> None:
        if self.db_path.exists():
            return
        done = subprocess.run(["/usr/bin/env", *self._env(), self.binary, str(PROJECT / "manage.py"), "migrate",
                               "--no-input"], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ServerError(f"migrating the SensorThings database failed:\n{done.stdout}\n{done.stderr}")

    def _command(self, executable: str) -> list[str]:
        return ["/usr/bin/env", *self._env(), executable, str(PROJECT / "manage.py"), "runserver", "--noreload",
                f"{self.host}:{self.port}"]

    def _ready(self) -> bool:
        try:
            self.get("")
        except (OSError, urllib.error.URLError):
            return False
        return True

    def get(self, path: str) -> Any:
        """GET a path below the service root (or an absolute URL); the decoded JSON."""
        url = path if path.startswith("http") else f"{self.url}/{path}"
        request = urllib.request.Request(url)
        if self.bearer_token:
            request.add_header("Authorization", f"Bearer {self.bearer_token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())

    def count(self, entity_set: str) -> int:
        """How many entities of a set the server holds (following every page)."""
        total, page = 0, self.get(f"{entity_set}?$select=id&$top=100")
        while True:
            total += len(page["value"])
            if not page.get("@iot.nextLink"):
                return total
            page = self.get(page["@iot.nextLink"])
