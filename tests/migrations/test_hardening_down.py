"""Migration 0005 down: the schema exactly as 0004 left it (bodies, attributes,
comments, grants), and the skene_billing role without rights in it."""

from __future__ import annotations

import psycopg
import pytest

from skene_pg import migrations
from skene_pg.devdb import DevCluster
from tests.migrations.test_migrations import schema_dump


@pytest.fixture
def at_0004(pg_cluster: DevCluster) -> str:
    """A database migrated up to 0004 only."""
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS skene_at_0004 WITH (FORCE)")
        conn.execute("CREATE DATABASE skene_at_0004")
    url = pg_cluster.url("skene_at_0004")
    migrations.upgrade(url, "0004")
    return url


def test_0005_down_restores_0004(pg_cluster: DevCluster, db_url: str, at_0004: str) -> None:
    assert migrations.current_revision(db_url) == "0005"
    migrations.downgrade(db_url, "0004")
    assert schema_dump(pg_cluster, db_url) == schema_dump(pg_cluster, at_0004)

    with psycopg.connect(db_url) as conn:
        assert conn.execute(
            "SELECT has_schema_privilege('skene_billing', 'skene', 'USAGE')"
        ).fetchone() == (False,)
    migrations.upgrade(db_url)  # and up again
    assert migrations.current_revision(db_url) == migrations.head_revision()
