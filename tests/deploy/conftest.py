"""PgBouncer in transaction mode in front of the test cluster (one per session), and
each test's database through it. Without pgbouncer installed the tests skip, saying
how to install it; as root (CI) a missing pgbouncer fails instead, because
scripts/ensure-system-deps.sh installs it there."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from skene_pg.devdb import DevCluster
from tests.deploy.pgbouncer import PgBouncer, find_pgbouncer

MISSING = (
    "pgbouncer is not installed "
    "(Debian: apt-get install pgbouncer, or scripts/ensure-system-deps.sh as root)"
)


@pytest.fixture(scope="session")
def pgbouncer(pg_cluster: DevCluster) -> Iterator[PgBouncer]:
    binary = find_pgbouncer()
    if binary is None:
        if os.geteuid() == 0:
            pytest.fail(f"{MISSING}: as root the suite installs it, so it must be there")
        pytest.skip(MISSING)
    directory = Path(tempfile.mkdtemp(prefix="skene-pg-pgbouncer-"))
    directory.chmod(0o755)
    bouncer = PgBouncer(binary, pg_cluster, directory)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pooled_url(db_url: str, pgbouncer: PgBouncer) -> Iterator[str]:
    """This test's database through PgBouncer. Afterwards PgBouncer lets go of it, so
    the database can be dropped."""
    yield pgbouncer.pooled(db_url)
    pgbouncer.disconnect(conninfo_to_dict(db_url)["dbname"])  # type: ignore[arg-type]


@pytest.fixture
def connect_pooled(pooled_url: str) -> Iterator[Callable[..., psycopg.Connection]]:
    """Open connections through PgBouncer (autocommit), as an application would;
    keyword arguments go to psycopg.connect. All closed afterwards."""
    opened: list[psycopg.Connection] = []

    def _connect(**kwargs: object) -> psycopg.Connection:
        conn = psycopg.connect(pooled_url, autocommit=True, **kwargs)  # type: ignore[arg-type]
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


# Managed PostgreSQL without a superuser (tests/deploy/managed_pg.py): its fixtures.
from tests.deploy.managed_pg import cron_cluster, deployment  # noqa: E402, F401
