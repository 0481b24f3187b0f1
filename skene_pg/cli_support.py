"""Pieces every `skene-pg` command shares, in their own module so commands that live
beside the code they drive (apply, demo, ...) can use them without importing cli.py
(which imports those commands: a cycle)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from skene_pg import db, devdb

database_url_option = click.option(
    "--database-url",
    envvar="SKENE_DATABASE_URL",
    metavar="URL",
    help="PostgreSQL URL or libpq string [env: SKENE_DATABASE_URL].",
)


def fails_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Known failures become one clear line and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import psycopg

        try:
            return fn(*args, **kwargs)
        except (db.MissingDatabaseURL, devdb.DevDBError) as exc:
            raise click.ClickException(str(exc)) from exc
        except psycopg.OperationalError as exc:
            raise click.ClickException(f"cannot reach the database: {exc}".strip()) from exc
        except psycopg.Error as exc:
            diag = exc.diag
            message = diag.message_primary or str(exc)
            if diag.message_hint:
                message += f"\nhint: {diag.message_hint}"
            raise click.ClickException(message) from exc

    return wrapper
