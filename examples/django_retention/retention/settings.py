import os
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

BASE_DIR = Path(__file__).resolve().parent.parent
_db = conninfo_to_dict(os.environ["DATABASE_URL"])

SECRET_KEY = os.environ.get("SECRET_KEY", "example-only")
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "retention.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "skene_pg.django",  # migrate installs the skene schema; users are identified on save
    "projects",
]
MIDDLEWARE: list[str] = []
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", ""),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
    }
}
SKENE = {
    "CONFIG": str(BASE_DIR / "skene.toml"),
    "USER_FIELDS": {"email": "email", "name": "first_name"},
}
