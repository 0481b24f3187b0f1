"""Database connections: the only place that opens them.

Every connection is safe behind a transaction pooler (PgBouncer in transaction mode,
and the poolers of managed databases): nothing here relies on the session outliving
a transaction. A pooler hands each transaction to whichever server process is free,
so psycopg's automatic server-side prepared statements (a query is prepared after 5
runs) land on a server process this connection may never see again: its next run
fails where the statement is missing (26000), its next prepare fails where another
client's statement has the name (42P05), or it runs that other client's statement.
So nothing is prepared on the server unless the caller asks for it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
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


def connect_kwargs(
    *,
    autocommit: bool = False,
    prepare_threshold: int | None = None,
    application_name: str = APPLICATION_NAME,
    **kwargs: object,
) -> dict[str, object]:
    """The settings of every project connection, for `connect` and for pools (a pool
    opens its connections itself and takes these as its `kwargs`): no server-side
    prepared statements unless asked for, and skene-pg's application_name."""
    return {
        "autocommit": autocommit,
        "prepare_threshold": prepare_threshold,
        "application_name": application_name,
        **kwargs,
    }


def connect(
    url: str,
    *,
    autocommit: bool = False,
    prepare_threshold: int | None = None,
    **kwargs: object,
) -> psycopg.Connection:
    """A psycopg connection; `url` is a postgresql:// URL or a libpq key=value string.

    `prepare_threshold`: None (the default) never prepares statements on the server,
    which is what a transaction pooler needs; a number opts in (psycopg prepares a
    query after that many runs), for a direct connection that runs one query a lot.
    `application_name` (default "skene-pg") travels in the startup packet, where a
    pooler keeps it per client, rather than being SET on a session it may share.
    """
    return psycopg.connect(
        url,
        **connect_kwargs(autocommit=autocommit, prepare_threshold=prepare_threshold, **kwargs),  # type: ignore[arg-type]
    )


def through_pooler(conn: psycopg.Connection) -> bool:
    """Is this connection to a pooler rather than to a server process of its own?

    At the start of a connection PostgreSQL sends the process id of the server
    process that serves it (with the cancel key). A pooler cannot: the client may be
    served by any of its server connections, so it makes up its own (PgBouncer:
    random). Asking the server which process ran a query tells them apart in one
    round trip, whatever the ports or host names in between, and unlike comparing
    two transactions' process ids it does not depend on the pooler's current load.
    A pooler in session mode is reported too: LISTEN would work there, but nothing
    on the wire says which mode it runs in.
    """
    row = conn.execute("SELECT pg_catalog.pg_backend_pid()").fetchone()
    return row is not None and row[0] != conn.info.backend_pid


def connect_to(conn: psycopg.Connection, dbname: str, **kwargs: object) -> psycopg.Connection:
    """Another database of the same server, as the same role (pg_cron keeps its jobs in
    a database of its own). Autocommit: each pg_cron call stands alone."""
    params: dict[str, Any] = conninfo_to_dict(conn.info.dsn)
    params["dbname"] = dbname
    if conn.info.password:  # the dsn leaves it out
        params["password"] = conn.info.password
    params.setdefault("connect_timeout", 10)
    return connect(make_conninfo(**params), autocommit=True, **kwargs)  # type: ignore[arg-type]


# Pools for the request path (skene_pg.client). Autocommit: each gate call is its own
# transaction on its own connection, so it commits whatever the caller's transaction
# does. open=False: nothing touches the network until the first call opens the pool.
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
POOL_TIMEOUT = 5.0  # seconds a caller waits for a connection before it gets an error


def _pool_options(
    *,
    min_size: int,
    max_size: int,
    timeout: float,
    name: str,
    max_waiting: int,
    connect_timeout: int | None,
    application_name: str,
) -> dict[str, Any]:
    """What a sync and an async pool are both made with: autocommit, pooler-safe
    connections, closed until opened."""
    return {
        "kwargs": connect_kwargs(
            autocommit=True,
            application_name=application_name,
            connect_timeout=connect_timeout or max(1, int(timeout)),
        ),
        "min_size": min_size,
        "max_size": max_size,
        "timeout": timeout,
        "max_waiting": max_waiting,
        "open": False,
        "name": name,
    }


def pool(
    url: str,
    *,
    min_size: int = POOL_MIN_SIZE,
    max_size: int = POOL_MAX_SIZE,
    timeout: float = POOL_TIMEOUT,
    name: str = "skene",
    max_waiting: int = 0,
    connect_timeout: int | None = None,
    application_name: str = APPLICATION_NAME,
) -> ConnectionPool:
    """A closed psycopg_pool.ConnectionPool for `url`; open it before use.
    `max_waiting`: callers that may queue for a connection (0: no bound);
    `connect_timeout`: seconds to open a connection (default: `timeout`, at least 1)."""
    return ConnectionPool(
        url,
        **_pool_options(
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            name=name,
            max_waiting=max_waiting,
            connect_timeout=connect_timeout,
            application_name=application_name,
        ),
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
        **_pool_options(
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            name=name,
            max_waiting=0,
            connect_timeout=None,
            application_name=APPLICATION_NAME,
        ),
    )
