"""Shared fixtures: one real PostgreSQL cluster per test session, a template database
migrated once, and a fresh clone of it for every test (pytest-postgresql's janitor
does the CREATE DATABASE ... TEMPLATE)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from skene_pg import migrations
from skene_pg.devdb import SUPERUSER, DevCluster

TEST_DBNAME = "skene_test"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[DevCluster]:
    """A real cluster in a fresh folder under /tmp (reachable by the unprivileged
    user the server runs as when the suite runs as root), fsync off for speed."""
    directory = Path(tempfile.mkdtemp(prefix="skene-pg-test-"))
    directory.chmod(0o755)
    cluster = DevCluster(directory / "cluster", fast=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(pg_cluster: DevCluster) -> Iterator[NoopExecutor]:
    """The cluster as pytest-postgresql sees it, with `skene_test_tmpl` migrated."""
    server = NoopExecutor(
        host="127.0.0.1", port=pg_cluster.port, user=SUPERUSER, options="", dbname=TEST_DBNAME
    )
    template = DatabaseJanitor(
        user=SUPERUSER,
        host="127.0.0.1",
        port=pg_cluster.port,
        dbname=server.template_dbname,
        as_template=True,
    )
    template.init()
    migrations.upgrade(pg_cluster.url(server.template_dbname))
    try:
        yield server
    finally:
        template.drop()


postgresql = factories.postgresql("pg_server")


@pytest.fixture
def db_url(postgresql: psycopg.Connection, pg_cluster: DevCluster) -> Iterator[str]:
    """URL of this test's own migrated database. pg_cron jobs live in another database
    and would outlive it (the next test's database has the same name), so the jobs an
    apply scheduled for it are removed afterwards."""
    info = postgresql.info
    yield make_conninfo(host=info.host, port=info.port, user=info.user, dbname=info.dbname)
    if pg_cluster.has_pg_cron:
        with psycopg.connect(pg_cluster.url(pg_cluster.cron_database), autocommit=True) as cron:
            if cron.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone():
                cron.execute(
                    "SELECT cron.unschedule(jobid) FROM cron.job WHERE database = %s",
                    (info.dbname,),
                )


@pytest.fixture
def connect(db_url: str) -> Iterator[Callable[..., psycopg.Connection]]:
    """Open extra connections to this test's database; all closed afterwards."""
    opened: list[psycopg.Connection] = []

    def _connect(autocommit: bool = True, **kwargs: object) -> psycopg.Connection:
        conn = psycopg.connect(db_url, autocommit=autocommit, **kwargs)  # type: ignore[arg-type]
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


@pytest.fixture
def conn(connect: Callable[..., psycopg.Connection]) -> psycopg.Connection:
    """An autocommit connection to this test's database."""
    return connect()
