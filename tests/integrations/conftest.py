"""Shared by the framework tests: the skene.toml they run on, and Django set up on a
database of its own per test (cloned from a template that `manage.py migrate` built,
skene schema included)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from skene_pg import db
from skene_pg.config import apply_config, load_config
from skene_pg.devdb import DevCluster

SKENE_TOML = """\
default_plan = "free"
upgrade_url = "https://app.example.com/billing"

[plans.free]
[plans.pro]
paid = true

[features.api_calls]
name = "API calls"
period = "month"
limits = { free = 100, pro = "unlimited" }
match = [{ method = "POST", path = "/api/**" }]

[features.exports]
name = "Exports"
period = "month"
limits = { free = 20, pro = 1000 }

[features.reports]
period = "month"
limits = { free = 3, pro = "unlimited" }

[features.beta]
period = "month"
limits = { free = 0, pro = 10 }
match = [{ method = "*", path = "/beta/**" }]

[[loops]]
name = "free_tier_limit"
type = "freemium"
feature = "api_calls"
message = "You've used all 100 free API calls this month. Upgrade to continue."
upgrade_prompt = { channel = "email", template = "upgrade_prompt" }

[[loops]]
name = "exports_limit"
type = "freemium"
feature = "exports"
message = "Free plans include 20 exports a month."
upgrade_prompt = { channel = "email", template = "upgrade_prompt" }

[[loops]]
name = "reports_limit"
type = "freemium"
feature = "reports"
message = "Free plans include 3 reports a month."
upgrade_prompt = { channel = "email", template = "upgrade_prompt" }
"""

APP_TABLE = "CREATE TABLE public.app_audit (id serial PRIMARY KEY, what text NOT NULL)"


def apply_toml(url: str, directory: Path, text: str = SKENE_TOML) -> None:
    path = directory / "skene.toml"
    path.write_text(text)
    with db.connect(url, autocommit=True) as conn:
        apply_config(conn, load_config(path))


def prompts(conn: psycopg.Connection, customer: str) -> list[tuple[str, str]]:
    """Upgrade prompts queued for a customer: (loop, feature)."""
    return conn.execute(
        "SELECT loop_name, payload ->> 'feature' FROM skene.jobs "
        "WHERE customer_id = %s AND kind = 'email' ORDER BY id",
        (customer,),
    ).fetchall()


def used(conn: psycopg.Connection, customer: str, feature: str) -> int:
    row = conn.execute("SELECT used FROM skene.check(%s, %s)", (customer, feature)).fetchone()
    assert row is not None
    return int(row[0])


# -- Django ---------------------------------------------------------------------------


def _django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integrations.django_site.settings")
    import django

    django.setup()


@pytest.fixture(scope="session")
def django_template(pg_cluster: DevCluster) -> Iterator[str]:
    """A database `manage.py migrate` built from nothing (Django's tables, and the
    skene schema through skene_pg.django's migration), plus the app's own table."""
    _django()
    from django.core.management import call_command
    from django.db import connections

    name = f"skene_django_tmpl_{uuid.uuid4().hex[:8]}"
    with db.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = pg_cluster.url(name)
    _point_django_at(url)
    call_command("migrate", verbosity=0)
    with connections["default"].cursor() as cursor:
        cursor.execute(APP_TABLE)
    connections.close_all()
    try:
        yield name
    finally:
        with db.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _point_django_at(url: str) -> None:
    from django.conf import settings
    from django.db import connections

    from skene_pg.django import conf

    connections.close_all()
    params = conninfo_to_dict(url)
    # connections[...] holds this very dict: the next connection uses the new name
    settings.DATABASES["default"].update(
        NAME=params["dbname"],
        USER=params.get("user", ""),
        HOST=params.get("host", ""),
        PORT=params.get("port", ""),
    )
    conf.reset()


@pytest.fixture
def django_db(django_template: str, pg_cluster: DevCluster, tmp_path: Path) -> Iterator[str]:
    """This test's own database, cloned from the template, skene.toml applied; Django
    and skene_pg.django point at it. Yields its URL."""
    from django.db import connections

    from skene_pg.django import conf

    name = f"skene_django_{uuid.uuid4().hex[:12]}"
    with db.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(django_template)
            )
        )
    url = pg_cluster.url(name)
    apply_toml(url, tmp_path)
    _point_django_at(url)
    try:
        yield url
    finally:
        connections.close_all()
        conf.reset()
        with db.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def dbconn(django_db: str) -> Iterator[psycopg.Connection]:
    """A plain autocommit connection to the test's database, to look at what happened."""
    with db.connect(django_db, autocommit=True) as conn:
        yield conn


@pytest.fixture
def make_user(django_db: str) -> Callable[..., object]:
    from django.contrib.auth import get_user_model

    def _make(username: str = "ada", **fields: object) -> object:
        return get_user_model().objects.create_user(username=username, **fields)

    return _make


def libpq_url(url: str, **changes: str) -> str:
    return make_conninfo(url, **changes)
