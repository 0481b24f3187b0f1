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


def connect(url: str, *, autocommit: bool = False, **kwargs: object) -> psycopg.Connection:
    """A psycopg connection; `url` is a postgresql:// URL or a libpq key=value string."""
    return psycopg.connect(url, autocommit=autocommit, application_name=APPLICATION_NAME, **kwargs)  # type: ignore[arg-type]
