"""Sources tests: the app's own tables (created here as the app's migrations would),
skene.toml applied to them, and the app writing rows as usual."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from skene_pg.config import Change, apply_config, load_config

Apply = Callable[..., list[Change]]

PLANS = """\
default_plan = "free"

[plans.free]
[plans.pro]
paid = true
stripe_prices = ["price_pro_monthly"]
"""


@pytest.fixture
def apply_toml(conn: psycopg.Connection, tmp_path: Path) -> Apply:
    """Write skene.toml and apply it, as `skene-pg apply` does."""

    def _apply(text: str, *, prune: bool = False, connection: Any = None) -> list[Change]:
        path = tmp_path / "skene.toml"
        path.write_text(text)
        return apply_config(connection or conn, load_config(path), prune=prune)

    return _apply


@pytest.fixture
def app_role(
    conn: psycopg.Connection, connect: Callable[..., psycopg.Connection]
) -> Iterator[Callable[[list[str]], psycopg.Connection]]:
    """A connection as the app's own login role: it may write the tables named and
    nothing of skene's. The role is cluster-wide, so it is dropped afterwards."""
    made: list[str] = []

    def _login(tables: list[str]) -> psycopg.Connection:
        name = f"app_{uuid.uuid4().hex[:8]}"
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        made.append(name)
        for table in tables:
            conn.execute(
                sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
                    sql.SQL(table), sql.Identifier(name)
                )
            )
        conn.execute(
            sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(
                sql.Identifier(name)
            )
        )
        return connect(user=name)

    yield _login
    for name in made:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def scalar(conn: psycopg.Connection, query: str, params: tuple[Any, ...] | None = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def decision(conn: psycopg.Connection, customer: str, feature: str) -> dict[str, Any]:
    cursor = conn.execute("SELECT * FROM skene.check(%s, %s)", (customer, feature))
    row = cursor.fetchone()
    assert row is not None and cursor.description is not None
    return dict(zip([c.name for c in cursor.description], row, strict=True))


DJANGO_PROJECT = Path(__file__).resolve().parent / "django_project"


@pytest.fixture(scope="session")
def djstripe_template(pg_cluster: Any, pg_server: Any) -> Iterator[str]:
    """A database with skene migrated and a Django project's real migrations run
    (django.contrib.auth and dj-stripe from PyPI), once a session: tests clone it."""
    name = "skene_djstripe_tmpl"
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(pg_server.template_dbname)
            )
        )
    env = {
        **os.environ,
        "SKENE_TEST_DATABASE_URL": pg_cluster.url(name),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONPATH": str(DJANGO_PROJECT),
    }
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
        cwd=DJANGO_PROJECT,
        env=env,
        check=True,
        timeout=900,
    )
    yield name
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def django_db(pg_cluster: Any, djstripe_template: str) -> Iterator[str]:
    """URL of a fresh clone of the Django + dj-stripe database, for this test."""
    name = f"skene_dj_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(djstripe_template)
            )
        )
    yield pg_cluster.url(name)
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
