"""A tiny Django project for tests/integrations: the real middleware stack (sessions,
CSRF, auth, then skene's gate), ATOMIC_REQUESTS on, DRF. The database comes from
SKENE_TEST_DATABASE (a libpq string) in subprocesses; in-process tests point it at
each test's own database (conftest.py)."""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ.get("SKENE_TEST_DATABASE", "dbname=unset"))

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "tests.integrations.django_site.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "rest_framework",
    "skene_pg.django",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "skene_pg.django.GateMiddleware",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", ""),
        "USER": _db.get("user", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
        "ATOMIC_REQUESTS": True,
    }
}
SKENE = {
    "REFUND_ON_ERROR": True,
    "USER_FIELDS": {"email": "email", "name": "get_full_name", "timezone": "last_name"},
    "GATES_TTL": 0,  # tests change the catalogue between requests
}
REST_FRAMEWORK = {"UNAUTHENTICATED_USER": None}
LOGGING_CONFIG = None
