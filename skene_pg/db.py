"""Database connections: the only place that opens them."""

from __future__ import annotations

import psycopg

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
    *, autocommit: bool = False, application_name: str = APPLICATION_NAME, **kwargs: object
) -> dict[str, object]:
    """The settings of every project connection, for `connect` and for pools (a pool
    opens its connections itself and takes these as its `kwargs`)."""
    return {"autocommit": autocommit, "application_name": application_name, **kwargs}


def connect(url: str, *, autocommit: bool = False, **kwargs: object) -> psycopg.Connection:
    """A psycopg connection; `url` is a postgresql:// URL or a libpq key=value string."""
    return psycopg.connect(url, **connect_kwargs(autocommit=autocommit, **kwargs))  # type: ignore[arg-type]
