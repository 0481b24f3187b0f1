"""status() and require_current(): where a database stands against this code's chain,
and a clear error when skene-pg can't work with it."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from skene_pg import migrations
from skene_pg.devdb import DevCluster
from skene_pg.migrations import (
    MigrationStatus,
    SchemaMismatch,
    SchemaNewerThanCode,
    SchemaNotInstalled,
    SchemaOutOfDate,
)

HEAD = migrations.head_revision()
CHAIN = migrations.revisions()


@pytest.fixture
def empty_db(pg_cluster: DevCluster) -> str:
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS skene_status_empty WITH (FORCE)")
        conn.execute("CREATE DATABASE skene_status_empty")
    return pg_cluster.url("skene_status_empty")


def test_at_head(db_url: str) -> None:
    found = migrations.status(db_url)
    assert found == MigrationStatus(current=HEAD, head=HEAD, pending=[])
    assert found.installed and found.up_to_date and not found.newer_than_code
    assert migrations.require_current(db_url) == found
    assert migrations.require_current(db_url, minimum=CHAIN[0]) == found


def test_an_older_schema_needs_a_migrate(db_url: str) -> None:
    migrations.downgrade(db_url, "0002")
    found = migrations.status(db_url)
    assert found == MigrationStatus(current="0002", head=HEAD, pending=CHAIN[2:])
    assert found.pending[:2] == ["0003", "0004"]
    assert not found.up_to_date
    with pytest.raises(SchemaOutOfDate) as raised:
        migrations.require_current(db_url)
    assert str(raised.value) == (
        f"the skene schema is at 0002 but this skene-pg needs {HEAD}: run `skene-pg migrate`"
    )
    assert raised.value.status == found
    # a component that needs only 0002 runs; one that needs 0003 doesn't
    assert migrations.require_current(db_url, minimum="0002").current == "0002"
    with pytest.raises(SchemaOutOfDate, match="at 0002 but this skene-pg needs 0003"):
        migrations.require_current(db_url, minimum="0003")
    migrations.upgrade(db_url)
    assert migrations.require_current(db_url).up_to_date


def test_no_schema_at_all(empty_db: str) -> None:
    found = migrations.status(empty_db)
    assert found == MigrationStatus(current=None, head=HEAD, pending=CHAIN)
    assert not found.installed
    with pytest.raises(SchemaNotInstalled) as raised:
        migrations.require_current(empty_db)
    assert str(raised.value) == (
        f"the skene schema is not installed in this database (this skene-pg needs {HEAD}): "
        "run `skene-pg migrate`"
    )


def test_downgraded_to_base_is_not_installed(db_url: str) -> None:
    migrations.downgrade(db_url, "base")  # the empty version table stays
    assert migrations.status(db_url).current is None
    with pytest.raises(SchemaNotInstalled):
        migrations.require_current(db_url, minimum="0001")


def test_a_database_migrated_by_a_newer_skene_pg(db_url: str, conn: psycopg.Connection) -> None:
    conn.execute("UPDATE skene.alembic_version SET version_num = '0099'")
    found = migrations.status(db_url)
    assert found == MigrationStatus(current="0099", head=HEAD, pending=[], known=False)
    assert found.newer_than_code
    with pytest.raises(SchemaNewerThanCode) as raised:
        migrations.require_current(db_url)
    assert str(raised.value) == (
        f"the skene schema is at 0099, which this skene-pg does not know (its newest revision "
        f"is {HEAD}): the database was migrated by a newer skene-pg; upgrade skene-pg"
    )
    assert isinstance(raised.value, SchemaMismatch)
    # old code still running while a deploy rolls out may choose to carry on
    assert migrations.require_current(db_url, allow_newer=True) == found


def test_an_unknown_minimum_is_a_programming_error(db_url: str) -> None:
    with pytest.raises(ValueError, match="unknown revision '0099'"):
        migrations.require_current(db_url, minimum="0099")


def test_an_open_connection_is_left_as_it_was(connect: Callable[..., psycopg.Connection]) -> None:
    idle = connect(autocommit=False)
    assert migrations.require_current(idle).current == HEAD
    assert idle.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    busy = connect(autocommit=False)
    busy.execute("INSERT INTO skene.plans (plan) VALUES ('status_probe')")
    assert migrations.status(busy).current == HEAD
    assert busy.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert busy.execute(
        "SELECT count(*) FROM skene.plans WHERE plan = 'status_probe'"
    ).fetchone() == (1,)
    busy.rollback()


def test_a_role_that_cannot_read_the_version(connect: Callable[..., psycopg.Connection]) -> None:
    app = connect()
    app.execute("SET ROLE skene_app")
    with pytest.raises(SchemaMismatch, match=r"role skene_app may not read skene\.alembic_version"):
        migrations.require_current(app)
    worker = connect()
    worker.execute("SET ROLE skene_worker")
    assert migrations.require_current(worker).current == HEAD
