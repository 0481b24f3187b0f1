"""What every check of `skene-pg doctor` shares: the `Finding` it returns (`ok`,
`warning` or `blocker`, with the fix), and two small helpers for reading one row and
the first line of an error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, LiteralString

import psycopg

Status = Literal["ok", "warning", "blocker"]


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: tuple[str, ...] = ()
    database: str | None = None  # where the fix runs, when not this database


def one_row(conn: psycopg.Connection, query: LiteralString) -> tuple[Any, ...]:
    row = conn.execute(query).fetchone()
    assert row is not None
    return tuple(row)
