"""`manage.py migrate` installs and upgrades the skene schema through skene_pg.django's
migration, and agrees with `skene-pg migrate` whichever of the two ran first."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from skene_pg import db, migrations
from skene_pg.devdb import DevCluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def empty_db(pg_cluster: DevCluster) -> Iterator[str]:
    name = f"skene_empty_{uuid.uuid4().hex[:12]}"
    with db.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_cluster.url(name)
    finally:
        with db.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def manage(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """django-admin with the test project's settings, in a process of its own."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.integrations.django_site.settings",
        "SKENE_TEST_DATABASE": url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", *args], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done


def django_migration_names() -> list[str]:
    """skene_pg.django's migrations, one per skene revision that needed one."""
    folder = ROOT / "skene_pg" / "django" / "migrations"
    return sorted(p.stem for p in folder.glob("[0-9][0-9][0-9][0-9]_*.py"))


def django_recorded(url: str) -> list[str]:
    with db.connect(url) as conn:
        rows = conn.execute(
            "SELECT name FROM django_migrations WHERE app = 'skene_pg' ORDER BY id"
        ).fetchall()
    return [r[0] for r in rows]


def test_migrate_on_a_fresh_database_installs_the_schema(empty_db: str) -> None:
    manage(empty_db, "migrate", "--verbosity", "0")
    status = migrations.status(empty_db)
    assert status.up_to_date, status
    assert django_recorded(empty_db) == django_migration_names()
    # skene-pg migrate then finds nothing to do
    migrations.upgrade(empty_db)
    assert migrations.status(empty_db).up_to_date
    with db.connect(empty_db) as conn:  # the schema works: functions, grants, catalogue
        assert conn.execute("SELECT count(*) FROM skene.gates()").fetchone() == (0,)


def test_migrate_after_skene_pg_migrate_changes_nothing(empty_db: str) -> None:
    migrations.upgrade(empty_db)
    with db.connect(empty_db, autocommit=True) as conn:
        conn.execute("INSERT INTO skene.plans (plan, is_default) VALUES ('free', true)")
    manage(empty_db, "migrate", "--verbosity", "0")
    assert migrations.status(empty_db).up_to_date
    assert django_recorded(empty_db) == django_migration_names()
    with db.connect(empty_db) as conn:  # data kept, nothing re-run
        assert conn.execute("SELECT plan FROM skene.plans").fetchall() == [("free",)]


def test_migrate_upgrades_an_older_schema(empty_db: str) -> None:
    older = migrations.revisions()[-2]
    migrations.upgrade(empty_db, older)
    manage(empty_db, "migrate", "--verbosity", "0")
    assert migrations.status(empty_db).up_to_date


def test_the_newest_django_migration_names_the_head_revision() -> None:
    """A new skene revision needs a Django migration (operations = [UpgradeSkene()])
    so that `manage.py migrate` upgrades databases that ran the older ones."""
    folder = ROOT / "skene_pg" / "django" / "migrations"
    newest = sorted(p.stem for p in folder.glob("[0-9][0-9][0-9][0-9]_*.py"))[-1]
    module = importlib.import_module(f"skene_pg.django.migrations.{newest}")
    assert module.Migration.skene_revision == migrations.head_revision(), (
        f"skene revision {migrations.head_revision()} has no Django migration: add one after "
        f"{newest} in skene_pg/django/migrations/ (see skene_pg/django/schema.py)"
    )


def test_sqlmigrate_shows_the_upgrade(empty_db: str) -> None:
    shown = manage(empty_db, "sqlmigrate", "skene_pg", "0001").stdout
    assert "CREATE SCHEMA IF NOT EXISTS skene" in shown
    assert "skene.check_and_increment" in shown
