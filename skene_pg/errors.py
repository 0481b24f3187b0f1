"""The errors the Python client raises: one family, each carrying the database's
SQLSTATE, message and hint, so callers branch on a class instead of parsing text."""

from __future__ import annotations

import psycopg


class SkeneError(Exception):
    """A skene call failed. `sqlstate` is None when no server answered."""

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        hint: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.hint = hint
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class InvalidArgument(SkeneError):
    """SQLSTATE 22023: an unknown feature, an empty customer id, amount <= 0, ..."""


class NotConfigured(SkeneError):
    """SQLSTATE 55000: no config applied yet (`skene-pg apply`)."""


class SchemaMissing(SkeneError):
    """The skene schema or one of its functions is missing: run `skene-pg migrate`."""


class PermissionDenied(SkeneError):
    """SQLSTATE 42501: the role may not call this function (grant it skene_app)."""


class TryAgain(SkeneError):
    """Deadlock, serialization failure or timeout: nothing was changed; retry."""


class DatabaseUnavailable(SkeneError):
    """No connection: the server is down or unreachable, or the pool timed out."""


class DatabaseError(SkeneError):
    """Any other database error."""


# Lost or refused connections, failed logins, an unknown database, a shutdown.
_UNAVAILABLE_STATES = ("3D000", "57P01", "57P02", "57P03")
_BY_STATE: dict[str, type[SkeneError]] = {
    "22023": InvalidArgument,
    "55000": NotConfigured,
    "3F000": SchemaMissing,  # invalid_schema_name
    "42883": SchemaMissing,  # undefined_function
    "42501": PermissionDenied,
    "40001": TryAgain,
    "40P01": TryAgain,
    "57014": TryAgain,  # query_canceled (statement_timeout)
    "55P03": TryAgain,  # lock_not_available (lock_timeout)
}


def from_psycopg(exc: Exception) -> SkeneError:
    """The SkeneError for a psycopg (or psycopg_pool) exception."""
    if not isinstance(exc, psycopg.Error):  # psycopg_pool.PoolTimeout, TooManyRequests
        return DatabaseUnavailable(f"skene: no database connection: {exc}")
    state = exc.sqlstate
    message = exc.diag.message_primary or str(exc).strip()
    fields = {"sqlstate": state, "hint": exc.diag.message_hint, "detail": exc.diag.message_detail}
    if state is None or state[:2] in ("08", "28") or state in _UNAVAILABLE_STATES:
        if state is None and not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return DatabaseError(message, **fields)
        return DatabaseUnavailable(f"skene: database unavailable: {message}", **fields)
    return _BY_STATE.get(state, DatabaseError)(message, **fields)
