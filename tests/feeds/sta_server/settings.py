"""A minimal Django project serving django-ogc-sensorthings 1.2 (SensorThings API v1.1) for the sink's tests.

Configured from the environment by tests/feeds/sensorthings_server.py: STA_DB (the SQLite file), STA_SERVICE_URL
(the root the server advertises in its self links) and, optionally, STA_BEARER_TOKEN (then every request must
carry it, as a deployed server would demand).
"""

from __future__ import annotations

import os
from uuid import UUID

BASE_DIR = os.path.dirname(os.path.abspath(__file__))
SECRET_KEY = "citygw-tests-only"  # a throwaway server on loopback
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "urls"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "sensorthings.versions.v1_1",
    "sensorthings.versions.v1_1.backends.django",
    "sensorthings.versions.v1_1.extensions.dataarray",
]
MIDDLEWARE: list[str] = []
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("STA_DB", os.path.join(BASE_DIR, "sta.sqlite3")),
        # The server is threaded: writers wait for each other instead of failing with "database is locked".
        "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SENSORTHINGS_V1_1_SERVICE_URL = os.environ.get("STA_SERVICE_URL", "http://127.0.0.1:8000/sta")
SENSORTHINGS_V1_1_BACKEND_ADAPTER = "adapter.IntervalAdapter"  # the package's, intervals kept (adapter.py)
SENSORTHINGS_V1_1_ID_TYPE = UUID
SENSORTHINGS_V1_1_ID_DELIMITER = "'"
if os.environ.get("STA_BEARER_TOKEN"):
    SENSORTHINGS_V1_1_DEFAULT_AUTH_HANDLER = ["sta_auth.bearer"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "WARNING"}},
}
