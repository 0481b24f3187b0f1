"""The migration chain: fresh == up/down/up, idempotent, and the app's own alembic
version table is never touched."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from skene_pg import migrations
from skene_pg.devdb import DevCluster


def schema_dump(cluster: DevCluster, url: str) -> str:
    dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    result = subprocess.run(
        [
            str(cluster.bindir / "pg_dump"),
            "--schema-only",
            "--schema=skene",
            "--no-owner",
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            str(dbname),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    # Leave out what differs between any two dumps: the version header and the
    # random \restrict token of recent pg_dump releases.
    return "\n".join(
        line
        for line in result.stdout.splitlines()
        if not line.startswith(("-- Dumped", "\\restrict", "\\unrestrict"))
    )


@pytest.fixture
def empty_db(pg_cluster: DevCluster) -> str:
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS skene_empty WITH (FORCE)")
        conn.execute("CREATE DATABASE skene_empty")
    return pg_cluster.url("skene_empty")


def test_fresh_install_equals_up_down_up(
    pg_cluster: DevCluster, db_url: str, empty_db: str
) -> None:
    migrations.upgrade(empty_db)
    fresh = schema_dump(pg_cluster, empty_db)

    migrations.downgrade(db_url, "base")
    assert migrations.current_revision(db_url) is None
    migrations.upgrade(db_url)
    again = schema_dump(pg_cluster, db_url)

    assert "CREATE FUNCTION skene.check_and_increment" in fresh
    assert fresh == again


def test_downgrade_base_leaves_only_the_empty_schema(db_url: str, conn: psycopg.Connection) -> None:
    migrations.downgrade(db_url, "base")
    left = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'skene' AND c.relkind IN ('r', 'v', 'S') ORDER BY 1"
    ).fetchall()
    functions = conn.execute(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'skene'"
    ).fetchone()
    assert left == [("alembic_version",)]
    assert functions == (0,)


def test_migrate_twice_is_a_no_op(pg_cluster: DevCluster, db_url: str) -> None:
    before = schema_dump(pg_cluster, db_url)
    migrations.upgrade(db_url)
    assert migrations.current_revision(db_url) == migrations.head_revision()
    assert schema_dump(pg_cluster, db_url) == before


def test_app_alembic_version_table_is_untouched(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO public.alembic_version VALUES ('app_rev_42')")
    migrations.upgrade(empty_db)
    migrations.downgrade(empty_db, "base")
    migrations.upgrade(empty_db)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT version_num FROM public.alembic_version").fetchall() == [
            ("app_rev_42",)
        ]
        assert conn.execute("SELECT version_num FROM skene.alembic_version").fetchall() == [
            (migrations.head_revision(),)
        ]


def test_offline_sql_is_complete_and_runs_in_psql(pg_cluster: DevCluster, empty_db: str) -> None:
    script = migrations.upgrade_sql()
    assert script.startswith("BEGIN;")
    assert "CREATE FUNCTION skene.check_and_increment" in script
    assert "INSERT INTO skene.alembic_version" in script
    result = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", empty_db],
        input=script,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert migrations.current_revision(empty_db) == migrations.head_revision()
