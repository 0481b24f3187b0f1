"""The migration chain: fresh == up/down/up, idempotent, and the app's own alembic
version table is never touched."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from skene_pg import migrations, schema_files
from skene_pg.devdb import DevCluster


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
    fresh = schema_files.dump_schema(empty_db)

    migrations.downgrade(db_url, "base")
    assert migrations.current_revision(db_url) is None
    migrations.upgrade(db_url)
    again = schema_files.dump_schema(db_url)

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


def test_migrate_twice_is_a_no_op(db_url: str) -> None:
    before = schema_files.dump_schema(db_url)
    migrations.upgrade(db_url)
    assert migrations.current_revision(db_url) == migrations.head_revision()
    assert schema_files.dump_schema(db_url) == before


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


def skene_schema_exists(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'skene'").fetchone()
        return row == (1,)


def test_offline_sql_without_transaction_leaves_it_to_the_caller(
    pg_cluster: DevCluster, empty_db: str
) -> None:
    """For tools that wrap each migration in their own transaction (Django's RunSQL):
    no BEGIN/COMMIT of its own, so the caller's ROLLBACK undoes all of it."""
    script = migrations.upgrade_sql(transaction=False)
    statements = {line.strip().upper() for line in script.splitlines()}
    assert not statements & {"BEGIN;", "COMMIT;", "ROLLBACK;"}
    assert {"BEGIN;", "COMMIT;"} <= {line.strip() for line in migrations.upgrade_sql().splitlines()}
    assert "BEGIN;" not in migrations.upgrade_sql("0001", transaction=False).splitlines()

    with psycopg.connect(empty_db) as conn:  # psycopg opens the transaction, as Django does
        conn.execute(script)
        installed = conn.execute(
            "SELECT to_regprocedure('skene.check_and_increment(text,text,bigint,text)')"
        ).fetchone()
        assert installed is not None and installed[0] is not None
        assert not skene_schema_exists(empty_db)  # nothing visible outside: not committed
        conn.rollback()
    assert not skene_schema_exists(empty_db)

    with psycopg.connect(empty_db) as conn:
        conn.execute(script)
        conn.commit()
    assert migrations.current_revision(empty_db) == migrations.head_revision()
    assert schema_files.dump_schema(empty_db) == schema_files.dump_schema(fresh_db(pg_cluster))


def fresh_db(cluster: DevCluster) -> str:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS skene_fresh WITH (FORCE)")
        conn.execute("CREATE DATABASE skene_fresh")
    url = cluster.url("skene_fresh")
    migrations.upgrade(url)
    return url
