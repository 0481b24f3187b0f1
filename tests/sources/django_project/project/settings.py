"""A minimal Django project with dj-stripe, as an app using skene-pg would have: the
tests run its real migrations against the test database (SKENE_TEST_DATABASE_URL)."""

import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ.get("SKENE_TEST_DATABASE_URL", "dbname=app"))

SECRET_KEY = "test-only"
DEBUG = False
USE_TZ = True
ROOT_URLCONF = "project.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "djstripe",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", "app"),
        "USER": _db.get("user", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STRIPE_LIVE_SECRET_KEY = "sk_live_test"
STRIPE_TEST_SECRET_KEY = "sk_test_test"
STRIPE_LIVE_MODE = False
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_SECRET = "whsec_test"
