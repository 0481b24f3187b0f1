"""What every `skene-pg` command shares: the database option, exit codes, and turning
failures into one clear line (never a traceback)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
import psycopg
from psycopg import errors

from skene_pg import db, devdb
from skene_pg.migrations import SchemaMismatch

# Exit codes, the same with and without --json (listed in `skene-pg --help`).
OK = 0
FAILED = 1  # a skene error (bad input, refused change), bad config, a database error
USAGE = 2  # click's own: a wrong option or argument
NO = 3  # the answer is no: `check` blocked, `dev-db status` not running, `doctor` found a blocker
UNREACHABLE = 4  # connecting to the database failed
TRY_AGAIN = 5  # deadlock, serialization failure or timeout: nothing was changed, run it again

EXIT_CODES_HELP = f"""\b
Exit codes (the same with --json):
  {OK}  done (check: allowed)
  {FAILED}  failed: a skene error with its hint, bad config, a database error
  {USAGE}  wrong options or arguments
  {NO}  no: check blocked, dev-db not running, doctor found a blocker
  {UNREACHABLE}  cannot reach the database
  {TRY_AGAIN}  deadlock, serialization failure or timeout: nothing changed, run it again"""

database_url_option = click.option(
    "--database-url",
    envvar="SKENE_DATABASE_URL",
    show_envvar=True,
    metavar="URL",
    help="PostgreSQL URL or libpq string.",
)


class CommandError(click.ClickException):
    """A failure shown as `Error: <message>` with one of the exit codes above."""

    def __init__(self, message: str, exit_code: int = FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click reads it per instance


def database_error(exc: psycopg.Error) -> CommandError:
    """Say what a psycopg error is: only a failed connection is 'cannot reach'."""
    if isinstance(exc, errors.DeadlockDetected | errors.SerializationFailure):
        what = "deadlock" if isinstance(exc, errors.DeadlockDetected) else "serialization failure"
        return CommandError(
            f"the database aborted the transaction ({what}): nothing was changed; "
            "run the command again",
            TRY_AGAIN,
        )
    if isinstance(exc, errors.QueryCanceled | errors.LockNotAvailable):
        return CommandError(
            f"timed out: {_primary(exc)}; nothing was changed (raise statement_timeout "
            "or lock_timeout, or run it again when the database is less busy)",
            TRY_AGAIN,
        )
    if _is_connection_failure(exc):
        return CommandError(f"cannot reach the database: {str(exc).strip()}", UNREACHABLE)
    message = _primary(exc)
    if exc.diag.message_detail:
        message += f"\ndetail: {exc.diag.message_detail}"
    if exc.diag.message_hint:
        message += f"\nhint: {exc.diag.message_hint}"
    return CommandError(message, FAILED)


def _is_connection_failure(exc: psycopg.Error) -> bool:
    """No SQLSTATE (the client could not connect, or lost the connection), or one of
    the connection, authentication, unknown-database and shutdown classes."""
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state[:2] in ("08", "28") or state in ("3D000", "57P01", "57P02", "57P03")


def _primary(exc: psycopg.Error) -> str:
    return exc.diag.message_primary or str(exc).strip()


def fails_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Known failures become one clear line and their exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (db.MissingDatabaseURL, devdb.DevDBError, SchemaMismatch) as exc:
            raise CommandError(str(exc)) from exc
        except psycopg.Error as exc:
            raise database_error(exc) from exc

    return wrapper
