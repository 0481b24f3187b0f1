"""Database connections: the only place that opens them, and that sets up pools.

Every connection is PgBouncer-safe by default: psycopg never prepares statements on
the server (`prepare_threshold=None`), so a pooler in transaction mode can hand the
connection's next transaction to another server session without breaking it."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

APPLICATION_NAME = "skene-pg"


class MissingDatabaseURL(RuntimeError):
    """No database was named."""


def require_url(url: str | None) -> str:
    if not url:
        raise MissingDatabaseURL(
            "no database given: pass --database-url or set SKENE_DATABASE_URL "
            "(for a local one: `skene-pg dev-db start`, then "
            "`export SKENE_DATABASE_URL=$(skene-pg dev-db url)`)"
        )
    return url


def connection_kwargs(**overrides: Any) -> dict[str, Any]:
    """What every skene-pg connection is opened with; `overrides` win."""
    return {"application_name": APPLICATION_NAME, "prepare_threshold": None, **overrides}


def connect(url: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection:
    """A psycopg connection; `url` is a postgresql:// URL or a libpq key=value string."""
    return psycopg.connect(url, **connection_kwargs(autocommit=autocommit, **kwargs))


# Pools for the request path (skene_pg.client). Autocommit: each gate call is its own
# transaction on its own connection, so it commits whatever the caller's transaction
# does. open=False: nothing touches the network until the first call opens the pool.
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
POOL_TIMEOUT = 5.0  # seconds a caller waits for a connection before it gets an error


def pool(
    url: str,
    *,
    min_size: int = POOL_MIN_SIZE,
    max_size: int = POOL_MAX_SIZE,
    timeout: float = POOL_TIMEOUT,
    name: str = "skene",
) -> ConnectionPool:
    """A closed psycopg_pool.ConnectionPool for `url`; open it before use."""
    return ConnectionPool(
        url,
        kwargs=connection_kwargs(autocommit=True, connect_timeout=max(1, int(timeout))),
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=False,
        name=name,
    )


def async_pool(
    url: str,
    *,
    min_size: int = POOL_MIN_SIZE,
    max_size: int = POOL_MAX_SIZE,
    timeout: float = POOL_TIMEOUT,
    name: str = "skene-async",
) -> AsyncConnectionPool:
    """A closed psycopg_pool.AsyncConnectionPool for `url`; open it (awaited) before use."""
    return AsyncConnectionPool(
        url,
        kwargs=connection_kwargs(autocommit=True, connect_timeout=max(1, int(timeout))),
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=False,
        name=name,
    )
