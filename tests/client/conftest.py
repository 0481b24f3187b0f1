"""The client against the small SQL catalogue of tests/sql, with skene's clock fixed
for every pooled connection (libpq `options`: the pool opens them, not the test)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from skene_pg import Skene, db
from tests.sql.conftest import CATALOGUE

START = "2026-03-10 12:00:00+00"


@pytest.fixture
def catalogue(conn: psycopg.Connection) -> None:
    conn.execute(CATALOGUE)
    conn.execute("SELECT pg_catalog.set_config('skene.now', %s, false)", (START,))  # same clock


def clock_options(at: str = START) -> str:
    """libpq `options` that set skene's clock in every session opened with them."""
    return f"-c skene.now={at.replace(' ', 'T')}"


def clock_pool(url: str, at: str = START) -> ConnectionPool:
    """A pool of the caller's own (as an app would pass one), skene's clock at `at`."""
    return ConnectionPool(
        url,
        kwargs=db.connect_kwargs(autocommit=True, options=clock_options(at)),
        min_size=1,
        max_size=4,
        open=False,
    )


@pytest.fixture
def skene(db_url: str, catalogue: None) -> Iterator[Skene]:
    pool = clock_pool(db_url)
    client = Skene(pool)
    yield client
    pool.close()
