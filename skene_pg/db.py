"""Database connections: the only place that opens them."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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


def connect(url: str, *, autocommit: bool = False, **kwargs: object) -> psycopg.Connection:
    """A psycopg connection; `url` is a postgresql:// URL or a libpq key=value string."""
    return psycopg.connect(url, autocommit=autocommit, application_name=APPLICATION_NAME, **kwargs)  # type: ignore[arg-type]


def connect_to(conn: psycopg.Connection, dbname: str, **kwargs: object) -> psycopg.Connection:
    """Another database of the same server, as the same role (pg_cron keeps its jobs in
    a database of its own). Autocommit: each pg_cron call stands alone."""
    params: dict[str, Any] = conninfo_to_dict(conn.info.dsn)
    params["dbname"] = dbname
    if conn.info.password:  # the dsn leaves it out
        params["password"] = conn.info.password
    params.setdefault("connect_timeout", 10)
    return connect(make_conninfo(**params), autocommit=True, **kwargs)
