import os
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

BASE_DIR = Path(__file__).resolve().parent.parent
_db = conninfo_to_dict(os.environ["DATABASE_URL"])

SECRET_KEY = os.environ.get("SECRET_KEY", "example-only")
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "freemium.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "skene_pg.django",  # migrate installs the skene schema; skene_apply, skene_listen
]
MIDDLEWARE = [
    "django.middleware.csrf.CsrfViewMiddleware",
    "skene_pg.django.GateMiddleware",  # after CSRF (and auth, when you use it)
]
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
    "CUSTOMER": "freemium.views.customer_of",
    "CONFIG": str(BASE_DIR / "skene.toml"),
}
STRIPE_PAYMENT_LINK = os.environ.get("STRIPE_PAYMENT_LINK", "https://buy.stripe.com/test_example")
